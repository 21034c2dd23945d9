"""Shared fixtures: tiny seeded generators (ngf 8, 2 blocks) and their ONNX export, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def _has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_nvidia_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (and TensorRT/onnxruntime-gpu where named); none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_resnet():
    """(model, meta): seeded ResNet generator, ngf 8, 2 blocks, instance norm, eval mode."""
    pytest.importorskip("torch")
    from cyclegan_deploy.train.models import GeneratorConfig, seeded_generator

    cfg = GeneratorConfig(arch="resnet_2blocks", ngf=8, n_blocks=2)
    model = seeded_generator(cfg, seed=0)
    return model, cfg.to_meta(source="tiny_resnet", train_size=64)


@pytest.fixture(scope="session")
def tiny_generator_file(tiny_resnet, tmp_path_factory) -> Path:
    """The tiny generator saved as one of our generator files (loadable by load_generator)."""
    from cyclegan_deploy.train.checkpoints import save_generator

    model, meta = tiny_resnet
    path = tmp_path_factory.mktemp("gen") / "latest_net_G_A.pth"
    save_generator(model, meta, path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_resnet, tmp_path_factory) -> Path:
    """The tiny generator exported once to FP32 ONNX (dynamic N/H/W, model card in metadata_props)."""
    from cyclegan_deploy.export.onnx import export_onnx

    model, meta = tiny_resnet
    path = tmp_path_factory.mktemp("onnx") / "g_AtoB.onnx"
    export_onnx(model, meta, path)
    return path
