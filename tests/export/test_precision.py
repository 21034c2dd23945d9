"""FP16 graph: node precisions, type checks, parity; the FP16 safety report."""

from __future__ import annotations

import copy
import json

import onnx
import pytest
import torch

from cyclegan_deploy.errors import ExportError
from cyclegan_deploy.export.precision import (
    FLOAT,
    FLOAT16,
    check_fp16_graph,
    fp16_safety_report,
    tensor_types,
    to_fp16,
)
from cyclegan_deploy.export.validate import FP16_MIN_PSNR, validate_onnx
from cyclegan_deploy.metadata import ModelMeta


def _node_types(path):
    proto = onnx.load(str(path))
    types = tensor_types(proto)
    return proto, [(n.op_type, [types.get(i) for i in n.input if i], [types.get(o) for o in n.output])
                   for n in proto.graph.node]


def test_fp16_graph_precisions(tiny_fp16):
    proto, nodes = _node_types(tiny_fp16)
    assert [i.type.tensor_type.elem_type for i in proto.graph.input] == [FLOAT]
    assert [o.type.tensor_type.elem_type for o in proto.graph.output] == [FLOAT]
    norms = [n for n in nodes if n[0] == "InstanceNormalization"]
    convs = [n for n in nodes if n[0] in ("Conv", "ConvTranspose")]
    assert len(norms) == 9 and len(convs) == 10
    assert all(ins == [FLOAT] * 3 and outs == [FLOAT] for _, ins, outs in norms)  # x, scale, bias all FP32
    assert all(set(ins) == {FLOAT16} and outs == [FLOAT16] for _, ins, outs in convs)
    # one Cast in and one out per norm, plus the graph input and output
    assert sum(n[0] == "Cast" for n in nodes) == 2 * 9 + 2
    card = ModelMeta.from_props({p.key: p.value for p in proto.metadata_props})
    assert card.precision == "fp16" and card.extra["fp16_norm"] == "fp32"


def test_fp16_norm_variant(tiny_onnx, tmp_path):
    path = to_fp16(tiny_onnx, tmp_path / "g_AtoB.fp16.onnx", norm_precision="fp16")
    _, nodes = _node_types(path)
    assert all(set(ins) == {FLOAT16} for op, ins, _ in nodes if op == "InstanceNormalization")
    assert sum(op == "Cast" for op, _, _ in nodes) == 2
    with pytest.raises(ExportError, match="expected fp32"):
        check_fp16_graph(path, "fp32")


def test_to_fp16_refuses_an_fp16_input(tiny_fp16, tmp_path):
    with pytest.raises(ExportError, match="already fp16"):
        to_fp16(tiny_fp16, tmp_path / "x.onnx")


def test_fp16_graph_parity(tiny_resnet, tiny_fp16):
    model, meta = tiny_resnet
    report = validate_onnx(model, meta, tiny_fp16, echo=False)
    assert report.precision == "fp16" and report.tolerance == {"min_psnr_db": FP16_MIN_PSNR}
    # ORT CPU runs the FP16 convs in FP32: this is weight rounding (~70+ dB), not FP16 arithmetic
    assert report.passed and report.min_psnr_db > 60 and report.max_uint8_diff <= 2
    assert report.max_abs > 1e-5  # and it is not the FP32 graph by mistake
    assert "weight rounding" in report.note
    assert tiny_fp16.with_name("g_AtoB.fp16.parity.json").is_file()


def test_safety_report_safe_model(tiny_resnet, tmp_path):
    model, meta = tiny_resnet
    out = tmp_path / "g_AtoB.fp16.safety.json"
    report = fp16_safety_report(model, meta, out_path=out, echo=False)
    assert len(report.norms) == 9 and all(s.max_abs < 256 for s in report.norms)
    by = {v.norm_precision: v for v in report.variants}
    assert by["fp32"].verdict == "safe" and by["fp32"].psnr_db > 50
    assert report.verdict.startswith("FP16 verdict (norm fp32): safe")
    assert json.loads(out.read_text())["variants"][0]["norm_precision"] == "fp32"


def test_safety_report_detects_wash_out(tiny_resnet):
    """A first conv whose outputs reach ~1e3 (as trained models' can): FP16 statistics overflow, FP32 ones hold."""
    model, meta = tiny_resnet
    loud = copy.deepcopy(model)
    with torch.no_grad():
        loud.model[1].weight.mul_(1000.0)
        loud.model[1].bias.mul_(1000.0)
    report = fp16_safety_report(loud, meta, echo=False)
    by = {v.norm_precision: v for v in report.variants}
    assert report.norms[0].max_dev ** 2 > 65504
    assert by["fp16"].verdict == "will wash out" and by["fp16"].psnr_db < 30
    assert by["fp32"].verdict == "safe" and by["fp32"].psnr_db > 40
    assert "with norm fp16: will wash out" in report.verdict
