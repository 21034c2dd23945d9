"""Export-stage fixtures: built once per session (an ONNX dynamo export costs several seconds on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory):
    """(model, meta, onnx path): pix2pix-style unet_128 (batch norm + dropout, ngf 8) with non-trivial
    running stats, exported in eval mode."""
    torch = pytest.importorskip("torch")
    from cyclegan_deploy.export.onnx import export_onnx
    from cyclegan_deploy.train.models import GeneratorConfig, build_generator

    torch.manual_seed(1)
    cfg = GeneratorConfig(arch="unet_128", ngf=8, norm="batch", dropout=True)
    model = build_generator(cfg)  # PyTorch's default init: outputs far from 0, so parity means something
    model.train()
    with torch.no_grad():  # move the running stats away from (0, 1) so eval mode is visible in the numbers
        for _ in range(2):
            model(torch.rand(2, 3, 128, 128) * 2 - 1)
    model.eval()
    meta = cfg.to_meta(model="pix2pix", train_size=128, source="tiny_unet")
    path = export_onnx(model, meta, tmp_path_factory.mktemp("unet") / "g_AtoB.onnx")
    return model, meta, path


@pytest.fixture(scope="session")
def tiny_fp16(tiny_onnx: Path, tmp_path_factory) -> Path:
    from cyclegan_deploy.export.precision import to_fp16

    return to_fp16(tiny_onnx, tmp_path_factory.mktemp("fp16") / "g_AtoB.fp16.onnx")
