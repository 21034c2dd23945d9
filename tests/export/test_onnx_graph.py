"""Structure of the exported graph: native InstanceNormalization, reflect Pad, dynamic N/H/W, the card."""

from __future__ import annotations

import onnx
import pytest

from cyclegan_deploy.errors import ExportError
from cyclegan_deploy.export.onnx import check_graph
from cyclegan_deploy.metadata import ModelMeta


def test_resnet_graph_op_counts(tiny_onnx):
    report = check_graph(tiny_onnx)
    # resnet_2blocks: stem + 2 down + 2x2 in blocks + 2 up = 9 InstanceNorm2d -> 9 native nodes
    assert report.op_counts == {"Add": 2, "Conv": 8, "ConvTranspose": 2, "InstanceNormalization": 9,
                                "Pad": 6, "Relu": 7, "Tanh": 1}
    assert "BatchNormalization" not in report.op_counts
    assert report.pad_modes == ["reflect"] * 6
    assert report.opset == 20
    assert report.problems == []


def test_dynamic_dims_and_io_names(tiny_onnx):
    proto = onnx.load(str(tiny_onnx))
    (inp,) = proto.graph.input
    (out,) = proto.graph.output
    assert inp.name == "input" and out.name == "output"
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 3, "height", "width"]
    assert out_dims[0] == "batch" and out_dims[1] == 3
    assert all(isinstance(d, str) and d for d in out_dims[2:])  # symbolic (rounded up to the multiple of 4)
    assert not proto.graph.initializer or all(i.data_location == 0 for i in proto.graph.initializer)


def test_no_running_stats_and_card(tiny_onnx, tiny_resnet):
    proto = onnx.load(str(tiny_onnx))
    names = [i.name for i in proto.graph.initializer]
    assert not [n for n in names if "running" in n or "num_batches" in n]
    props = {p.key: p.value for p in proto.metadata_props}
    card = ModelMeta.from_props(props)
    assert card is not None
    assert (card.arch, card.ngf, card.n_blocks, card.norm, card.multiple) == ("resnet_2blocks", 8, 2, "instance", 4)
    assert card.opset == 20 and card.exporter.startswith("torch ") and "dynamo" in card.exporter
    assert card.mode == "eval" and card.precision == "fp32"
    assert props["multiple"] == "4" and props["opset"] == "20"


def test_unet_batchnorm_exports_in_eval_mode(tiny_unet):
    _, _, path = tiny_unet
    report = check_graph(path)
    # eval-mode batch norm is folded into the convolutions; dropout is gone
    assert report.op_counts == {"Concat": 6, "Conv": 7, "ConvTranspose": 7, "LeakyRelu": 6, "Relu": 7, "Tanh": 1}
    assert report.inputs == {"input": ["batch", 3, "height", "width"]}
    assert report.card is not None and report.card["mode"] == "eval" and report.card["multiple"] == 128


def test_check_graph_rejects_decomposed_instance_norm(tiny_onnx, tmp_path):
    proto = onnx.load(str(tiny_onnx))
    node = next(n for n in proto.graph.node if n.op_type == "InstanceNormalization")
    # a stand-in for a decomposition: the node is no longer a native InstanceNormalization
    node.op_type, node.input[:] = "Identity", node.input[:1]
    del node.attribute[:]
    bad = tmp_path / "bad.onnx"
    onnx.save_model(proto, str(bad))
    with pytest.raises(ExportError, match="8 InstanceNormalization nodes, expected one per InstanceNorm2d"):
        check_graph(bad)
    assert "expected one per" in check_graph(bad, raise_on_error=False).problems[0]


def test_check_graph_rejects_constant_pad_and_fixed_dims(tiny_onnx, tmp_path):
    proto = onnx.load(str(tiny_onnx))
    pad = next(n for n in proto.graph.node if n.op_type == "Pad")
    next(a for a in pad.attribute if a.name == "mode").s = b"constant"
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 64
    bad = tmp_path / "bad.onnx"
    onnx.save_model(proto, str(bad))
    problems = check_graph(bad, raise_on_error=False).problems
    assert any("Pad(mode=reflect)" in p for p in problems)
    assert any("must be dynamic" in p for p in problems)


@pytest.mark.parametrize(("arch", "blocks"), [("resnet_9blocks", 9), ("resnet_6blocks", 6), ("unet_256", 0),
                                              ("unet_128", 0)])
def test_expected_instance_norms_from_card_match_the_models(arch, blocks):
    """check_graph without the torch model counts InstanceNorm2d from the card; it must match the real layers."""
    from cyclegan_deploy.export.onnx import expected_instance_norm_count
    from cyclegan_deploy.train.models import GeneratorConfig, build_generator
    from cyclegan_deploy.train.registry import family_of_card

    cfg = GeneratorConfig(arch=arch, ngf=2, norm="instance")
    card = cfg.to_meta()
    assert family_of_card(card).instance_norms(card) == expected_instance_norm_count(build_generator(cfg))
