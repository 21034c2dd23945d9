"""Parity of the exported graphs against PyTorch, and the gate failing on a corrupted graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from cyclegan_deploy.artifacts import parity_path
from cyclegan_deploy.errors import ParityError
from cyclegan_deploy.export.validate import FP32_MAX_ABS, default_sizes, ort_session, sample_images, validate_onnx
from cyclegan_deploy.frames import to_model
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.quality import psnr


def _torch(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_default_sizes_include_a_non_square_multiple():
    assert default_sizes(ModelMeta(train_size=64)) == [(64, 64), (48, 80)]
    assert default_sizes(ModelMeta(train_size=256)) == [(256, 256), (192, 320)]
    assert default_sizes(ModelMeta(arch="unet_128", multiple=128, train_size=128)) == [(128, 128), (128, 256)]


def test_psnr_on_the_model_range():
    a = np.zeros((1, 3, 4, 4), np.float32)
    assert psnr(a, a + 0.02) == pytest.approx(10 * np.log10(4 / 0.02**2))


def test_ort_parity_report_two_sizes_batch_2(tiny_resnet, tiny_onnx):
    model, meta = tiny_resnet
    report = validate_onnx(model, meta, tiny_onnx, echo=False)
    assert [c.shape for c in report.cases] == [[2, 3, 64, 64], [2, 3, 48, 80]]
    # measured ~1.5e-6 on the dev machine; the gate is FP32_MAX_ABS (1e-4)
    assert report.passed and report.max_abs < FP32_MAX_ABS
    assert report.min_psnr_db > 100 and report.max_uint8_diff <= 1
    saved = json.loads(parity_path(tiny_onnx).read_text())
    assert parity_path(tiny_onnx).name == "g_AtoB.parity.json"
    assert saved["passed"] is True and saved["max_abs"] == pytest.approx(report.max_abs)
    assert saved["tolerance"] == {"max_abs": FP32_MAX_ABS}


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 40, 72), (3, 3, 37, 53)])
def test_ort_matches_torch_at_other_sizes(tiny_resnet, tiny_onnx, shape):
    """Dynamic N/H/W really work: sizes the export never saw, batch 3, a non-multiple size (rounded up to 4)."""
    model, _ = tiny_resnet
    x = to_model(sample_images(shape[0], shape[2], shape[3], seed=7))
    ref = _torch(model, x)
    out = ort_session(tiny_onnx).run(None, {"input": x})[0]
    assert out.shape == ref.shape == (shape[0], 3, -(-shape[2] // 4) * 4, -(-shape[3] // 4) * 4)
    assert np.abs(out - ref).max() < 1e-5
    assert np.abs(ref).mean() > 0.05  # the model's output is not trivially ~0


def test_unet_parity_eval_mode(tiny_unet):
    model, meta, path = tiny_unet
    report = validate_onnx(model, meta, path, echo=False)
    assert [c.shape for c in report.cases] == [[2, 3, 128, 128], [2, 3, 128, 256]]
    assert report.passed and report.max_abs < 1e-5
    # eval mode matters: train-mode batch norm (batch statistics) gives clearly different outputs
    x = to_model(sample_images(2, 128, 128, seed=0))
    model.train()
    try:
        train_out = _torch(model, x)
    finally:
        model.eval()
    assert np.abs(train_out - ort_session(path).run(None, {"input": x})[0]).max() > 1e-2


def test_gate_fails_on_a_corrupted_graph(tiny_resnet, tiny_onnx, tmp_path):
    model, meta = tiny_resnet
    proto = onnx.load(str(tiny_onnx))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.05  # one weight of the first conv, a small change
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "g_AtoB.onnx"
    onnx.save_model(proto, str(bad))
    with pytest.raises(ParityError, match=r"parity gate failed \(max abs .* > 0\.0001\)"):
        validate_onnx(model, meta, bad, echo=False)
    saved = json.loads((tmp_path / "g_AtoB.parity.json").read_text())
    assert saved["passed"] is False and saved["max_abs"] > FP32_MAX_ABS
