"""TensorRT export up to the TensorRT calls: profiles, sidecar, compat refusal, the TensorRT-absent error.
The real engine build is `gpu`-marked (skipped without an NVIDIA GPU)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict

import pytest

from cyclegan_deploy.artifacts import sidecar_path
from cyclegan_deploy.engine_sidecar import EngineSidecar, Profile, check_engine_compat, write_sidecar
from cyclegan_deploy.engine_sidecar import read_engine_sidecar as read_sidecar
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError
from cyclegan_deploy.export.tensorrt import BuildOptions, build_engine, derive_profile, trtexec_command
from cyclegan_deploy.metadata import ModelMeta


def _has_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import tensorrt

    return hasattr(tensorrt, "Builder")  # tensorrt-stubs alone leaves an empty namespace package


def test_default_profile_from_training_size():
    p = derive_profile(ModelMeta(train_size=256))
    assert p == Profile("input", (1, 3, 64, 64), (1, 3, 256, 256), (4, 3, 1024, 1024))
    unet = derive_profile(ModelMeta(arch="unet_256", multiple=256, train_size=256))
    assert unet.min == (1, 3, 256, 256) and unet.opt == (1, 3, 256, 256) and unet.max == (4, 3, 1024, 1024)


def test_profile_from_options_respects_multiples():
    meta = ModelMeta(train_size=256)
    p = derive_profile(meta, "256x256", "2x720x1280", "8x1080x1920")
    assert p.min == (1, 3, 256, 256) and p.opt == (2, 3, 720, 1280) and p.max == (8, 3, 1080, 1920)
    with pytest.raises(ConfigError, match=r"--max-shape 1081x1920: .* multiples of 4 .* use 1084x1920"):
        derive_profile(meta, max_shape="1081x1920")
    with pytest.raises(ConfigError, match="multiples of 128"):
        derive_profile(ModelMeta(arch="unet_128", multiple=128, train_size=128), opt_shape="200x200")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        derive_profile(meta, min_shape="512x512")  # above the default opt 256
    with pytest.raises(ConfigError, match="HxW or NxHxW"):
        derive_profile(meta, opt_shape="256")
    with pytest.raises(ConfigError, match="HxW or NxHxW"):
        derive_profile(meta, opt_shape="axb")


def _sidecar() -> EngineSidecar:
    meta = ModelMeta(precision="fp16", source="latest_net_G_A.pth")
    return EngineSidecar(tensorrt_version="10.13.3.9", gpu_name="NVIDIA L4", compute_capability="8.9",
                         profile=derive_profile(meta).as_dict(), precision="fp16", source_onnx="g_AtoB.fp16.onnx",
                         source_onnx_sha256="ab" * 32, model_card=asdict(meta))


def test_sidecar_roundtrip(tmp_path):
    plan = tmp_path / "g_AtoB.plan"
    write_sidecar(sidecar_path(plan), _sidecar())
    assert sidecar_path(plan).name == "g_AtoB.plan.json"
    back = read_sidecar(plan)  # the .plan path finds its sidecar
    assert back == _sidecar()
    assert back.meta.precision == "fp16" and Profile.from_dict(back.profile).opt == (1, 3, 256, 256)
    assert json.loads(sidecar_path(plan).read_text())["format"] == "cgdeploy-tensorrt-engine"


def test_sidecar_missing_or_foreign(tmp_path):
    with pytest.raises(EngineMismatchError, match="missing or unreadable engine sidecar.*--engine"):
        read_sidecar(tmp_path / "g_AtoB.plan")
    (tmp_path / "x.plan.json").write_text('{"format": "other"}')
    with pytest.raises(EngineMismatchError, match="format 'other'"):
        read_sidecar(tmp_path / "x.plan")


def test_engine_compat_accepts_same_version_and_gpu():
    check_engine_compat(_sidecar(), "10.13.3.9", "NVIDIA L4", "8.9")
    check_engine_compat(_sidecar(), "10.13.3", "NVIDIA L4", "8.9")  # build number does not matter


@pytest.mark.parametrize(("version", "gpu", "cc", "what"), [
    ("10.14.1.48", "NVIDIA L4", "8.9", r"TensorRT 10\.13\.3\.9 \(this machine: 10\.14\.1\.48\)"),
    ("10.13.3.9", "NVIDIA A100-SXM4-80GB", "8.0", r"compute capability 8\.9 \(this GPU: 8\.0\)"),
    ("10.13.3.9", "NVIDIA GeForce RTX 4090", "8.9", r"GPU 'NVIDIA L4' \(this GPU: 'NVIDIA GeForce RTX 4090'\)"),
])
def test_engine_compat_refuses_mismatch(version, gpu, cc, what):
    with pytest.raises(EngineMismatchError, match=what) as info:
        check_engine_compat(_sidecar(), version, gpu, cc, engine="out/g_AtoB.plan")
    message = str(info.value)
    assert "Rebuild here: `cgdeploy export CHECKPOINT -o DIR --engine`" in message
    assert "trtexec --onnx=g_AtoB.fp16.onnx --stronglyTyped" in message


def test_trtexec_command(tmp_path):
    profile = derive_profile(ModelMeta(train_size=256))
    cmd = trtexec_command(tmp_path / "g.onnx", tmp_path / "g.plan", profile, BuildOptions(workspace_gb=2, opt_level=5))
    assert "--stronglyTyped" in cmd and "--minShapes=input:1x3x64x64" in cmd
    assert "--maxShapes=input:4x3x1024x1024" in cmd
    assert "--memPoolSize=workspace:2048M" in cmd and "--builderOptimizationLevel=5" in cmd and "--noTF32" in cmd


def test_build_options_validated():
    with pytest.raises(ConfigError, match="0..5"):
        BuildOptions(opt_level=7)
    with pytest.raises(ConfigError, match="> 0"):
        BuildOptions(workspace_gb=0)


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")
def test_build_without_tensorrt_says_how(tiny_onnx, tmp_path):
    plan = tmp_path / "g_AtoB.plan"
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed") as info:
        build_engine(tiny_onnx, plan, derive_profile(ModelMeta(train_size=64)))
    assert "the ONNX artifacts were written" in str(info.value) and "trtexec --onnx=" in str(info.value)
    assert not plan.exists() and not sidecar_path(plan).exists()


@pytest.mark.gpu
def test_real_engine_build(tiny_resnet, tiny_fp16, tmp_path):
    """On a GPU machine with TensorRT: strongly typed FP16 engine, sidecar, timing cache, and parity."""
    if not _has_tensorrt():
        pytest.skip("TensorRT is not installed")
    import tensorrt as trt

    from cyclegan_deploy.engine_sidecar import gpu_info
    from cyclegan_deploy.export.validate import validate_candidate

    model, meta = tiny_resnet
    profile = derive_profile(meta)
    cache = tmp_path / "timing.cache"
    plan = tmp_path / "g_AtoB.plan"
    sidecar = build_engine(tiny_fp16, plan, profile, BuildOptions(workspace_gb=1, timing_cache=cache))
    assert plan.stat().st_size > 0 and cache.stat().st_size > 0
    assert sidecar.precision == "fp16" and sidecar.tensorrt_version == trt.__version__
    assert (sidecar.gpu_name, sidecar.compute_capability) == gpu_info()
    assert read_sidecar(plan) == sidecar
    build_engine(tiny_fp16, tmp_path / "again.plan", profile, BuildOptions(workspace_gb=1, timing_cache=cache))
    from cyclegan_deploy.backends import load_backend

    backend = load_backend(plan, backend="tensorrt", device="cuda")
    try:
        report = validate_candidate(model, meta, backend, artifact=plan, candidate="tensorrt", precision="fp16",
                                    sizes=[(64, 64), (48, 80)], echo=False)
    finally:
        backend.close()
    assert report.passed
