"""TensorRT export up to the TensorRT calls: profiles, sidecar, compat refusal, the TensorRT-absent error, and
build_engine against a TensorRT stand-in. The real engine build is `gpu`-marked (skipped without an NVIDIA GPU)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trt_fakes import fake_tensorrt

from cyclegan_deploy import engine_sidecar
from cyclegan_deploy.artifacts import sidecar_path
from cyclegan_deploy.engine_sidecar import EngineSidecar, Profile, check_engine_compat, write_sidecar
from cyclegan_deploy.engine_sidecar import read_engine_sidecar as read_sidecar
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError, ExportError
from cyclegan_deploy.export.tensorrt import (
    BuildOptions,
    build_engine,
    check_profile_memory,
    derive_profile,
    how_to_build,
    trtexec_command,
)
from cyclegan_deploy.frames import model_size
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.video.options import DEFAULT_BATCH

ROOT = Path(__file__).resolve().parents[2]


def _has_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import tensorrt

    return hasattr(tensorrt, "Builder")  # tensorrt-stubs alone leaves an empty namespace package


def test_default_profile_from_training_size():
    p = derive_profile(ModelMeta(train_size=256))
    assert p == Profile("input", (1, 3, 64, 64), (4, 3, 1080, 1920), (4, 3, 1920, 1920))
    unet = derive_profile(ModelMeta(arch="unet_256", multiple=256, train_size=256))
    assert unet.min == (1, 3, 256, 256) and unet.opt == (4, 3, 1280, 2048) and unet.max == (4, 3, 2048, 2048)
    big = derive_profile(ModelMeta(train_size=2560))  # never below the training size
    assert big.min == (1, 3, 640, 640) and big.max == (4, 3, 2560, 2560)


VIDEO_FRAMES = [(720, 1280), (1280, 720), (1080, 1920), (1920, 1080)]  # (H, W): 720p/1080p, both ways up


@pytest.mark.parametrize("meta", [ModelMeta(train_size=256), ModelMeta(arch="unet_256", multiple=256, train_size=256),
                                  ModelMeta(arch="unet_128", multiple=128, train_size=128)], ids=lambda m: m.arch)
def test_default_profile_covers_720p_and_1080p_both_ways_at_the_video_batch(meta):
    """Issue #12: a 1280-wide 720p clip failed on its first batch with a default engine (max was 4x1024x1024)."""
    p = derive_profile(meta)
    for h, w in VIDEO_FRAMES:
        shape = (DEFAULT_BATCH, 3, *model_size(h, w, meta))  # what `cgdeploy video` sends: padded, default batch
        assert p.covers(shape), (meta.arch, shape, p)
        assert p.covers((1, 3, *model_size(h, w, meta)))
    assert p.describe(meta.multiple).endswith("video: 720p, 1080p (both orientations); not 1440p, 4K")
    assert p.describe(meta.multiple).startswith(f"batch 1-{DEFAULT_BATCH}, ")


def test_profile_description_names_what_is_missing():
    old_default = Profile("input", (1, 3, 64, 64), (1, 3, 256, 256), (4, 3, 1024, 1024))
    assert old_default.describe(4) == ("batch 1-4, 64x64 to 1024x1024 (HxW), opt 1x256x256; video: none of 720p, "
                                       "1080p, 1440p, 4K")
    assert not old_default.covers((4, 3, 720, 1280)) and not old_default.covers((5, 3, 64, 64))
    landscape = Profile("input", (1, 3, 64, 64), (2, 3, 720, 1280), (2, 3, 1080, 1920))
    assert landscape.describe(4).endswith("video: 720p landscape only, 1080p landscape only; not 1440p, 4K")
    assert not landscape.covers((1, 3, 1280, 720)) and not landscape.covers((1, 3, 720)) and landscape.covers(
        [1, 3, 720, 1280])


def test_default_shapes_give_way_to_given_ones():
    meta = ModelMeta(train_size=256)
    p = derive_profile(meta, max_shape="2x512x512")  # the default opt (4x1080x1920) would exceed it
    assert p.min == (1, 3, 64, 64) and p.opt == (2, 3, 512, 512) and p.max == (2, 3, 512, 512)
    p = derive_profile(meta, opt_shape="2160x3840")  # 4K opt: the default max grows to take it
    assert p.opt == (4, 3, 2160, 3840) and p.max == (4, 3, 2160, 3840)
    p = derive_profile(meta, max_shape="32x32")  # below the default min
    assert p.min == (1, 3, 32, 32) and p.opt == (4, 3, 32, 32)


def test_profile_from_options_respects_multiples():
    meta = ModelMeta(train_size=256)
    p = derive_profile(meta, "256x256", "2x720x1280", "8x1080x1920")
    assert p.min == (1, 3, 256, 256) and p.opt == (2, 3, 720, 1280) and p.max == (8, 3, 1080, 1920)
    with pytest.raises(ConfigError, match=r"--max-shape 1081x1920: .* multiples of 4 .* use 1084x1920"):
        derive_profile(meta, max_shape="1081x1920")
    with pytest.raises(ConfigError, match="multiples of 128"):
        derive_profile(ModelMeta(arch="unet_128", multiple=128, train_size=128), opt_shape="200x200")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        derive_profile(meta, min_shape="512x512", opt_shape="256x256")  # given shapes that contradict
    with pytest.raises(ConfigError, match="HxW or NxHxW"):
        derive_profile(meta, opt_shape="256")
    with pytest.raises(ConfigError, match="HxW or NxHxW"):
        derive_profile(meta, opt_shape="axb")


def test_default_profile_memory_check_suggests_a_batch_that_fits():
    meta = ModelMeta(train_size=256)  # ngf 64: ~2 GB of fp32 activations per 1920x1920 frame
    profile = derive_profile(meta)
    check_profile_memory(meta, profile, 4.0, 80 * 2**30)  # an 80 GB GPU takes the default
    with pytest.raises(ConfigError, match=r"--max-shape 4x1920x1920: .* more than the 8\.0 GiB of this GPU; lower "
                                          r"--max-shape \(e\.g\. 2x1920x1920, then `cgdeploy video --batch 2`"):
        check_profile_memory(meta, profile, 4.0, 8 * 2**30)


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
    assert back.meta.precision == "fp16" and Profile.from_dict(back.profile).opt == (4, 3, 1080, 1920)
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
    assert "--maxShapes=input:4x3x1920x1920" in cmd and "--optShapes=input:4x3x1080x1920" in cmd
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


@pytest.mark.gpu
def test_real_uint8_engine_gives_the_host_paths_pixels(tiny_resnet, tiny_onnx, tmp_path):
    """On a GPU machine with TensorRT: a --engine-io uint8 FP32 engine against the host path (ONNX Runtime CPU
    on the float graph, frames.to_model/to_uint8 around it): within one level (GPU kernels, FMA)."""
    if not _has_tensorrt():
        pytest.skip("TensorRT is not installed")
    from cyclegan_deploy.backends import load_backend
    from cyclegan_deploy.export.validate import ort_session
    from cyclegan_deploy.frames import to_model, to_uint8

    _, meta = tiny_resnet
    plan = tmp_path / "g_AtoB.plan"
    build_engine(tiny_onnx, plan, derive_profile(meta), BuildOptions(workspace_gb=1, io="uint8"))
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 80, 3), dtype=np.uint8)
    session = ort_session(tiny_onnx)
    host = to_uint8(session.run(None, {session.get_inputs()[0].name: to_model(frames)})[0]).transpose(0, 2, 3, 1)
    with load_backend(plan, backend="tensorrt", device="cuda") as backend:
        assert backend.uint8_io
        out, finite = backend.run_uint8(frames)
    assert finite and np.abs(out.astype(int) - host.astype(int)).max() <= 1


# ---- build_engine against a TensorRT stand-in (TensorRT cannot be installed here) -----------------------------

@pytest.fixture
def stand_in(monkeypatch):
    """Install a TensorRT stand-in built with the given options; returns its call log."""
    monkeypatch.setattr(engine_sidecar, "gpu_info", lambda device=0: ("NVIDIA H100 80GB HBM3", "9.0"))

    def install(**kwargs: Any) -> list[tuple[Any, ...]]:
        calls: list[tuple[Any, ...]] = []
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, **kwargs))
        return calls

    return install


def test_build_records_and_prints_what_the_profile_covers(tiny_onnx, tmp_path, stand_in, capsys):
    calls = stand_in()
    plan = tmp_path / "g_AtoB.plan"
    profile = derive_profile(ModelMeta(train_size=64))  # the tiny model's card: min 16x16, the video default max
    sidecar = build_engine(tiny_onnx, plan, profile, BuildOptions(workspace_gb=1))
    assert plan.read_bytes() == b"engine-bytes"  # written without deserializing it (the stand-in has no Runtime)
    assert ("set_shape", "input", [1, 3, 16, 16], [4, 3, 1080, 1920], [4, 3, 1920, 1920]) in calls
    covers = "batch 1-4, 16x16 to 1920x1920 (HxW), opt 4x1080x1920; video: 720p, 1080p (both orientations)"
    assert sidecar.extra["covers"].startswith(covers) and read_sidecar(plan).extra["covers"] == sidecar.extra["covers"]
    assert Profile.from_dict(read_sidecar(plan).profile) == profile
    assert f"[TensorRT] building g_AtoB.plan from g_AtoB.onnx (fp32), profile: {covers}" in capsys.readouterr().out


@pytest.mark.parametrize(("fault", "message"), [
    ({"profile_index": -1}, r"TensorRT refused the profile min \(1, 3, 16, 16\) .* as invalid.*--max-shape"),
    ({"set_shape_error": "min > opt"}, r"TensorRT refused the profile min .* \(min > opt\); adjust --min-shape"),
    ({"outputs": 2}, r"TensorRT parsed 1 input\(s\) and 2 output\(s\); a generator graph has one input named "
                     r"'input' and one output"),
])
def test_build_refuses_a_bad_profile_or_graph_before_building(tiny_onnx, tmp_path, stand_in, fault, message):
    """add_optimization_profile returns -1 (it does not raise), set_shape raises ValueError, the network's I/O
    count comes from the parsed network: each stops the export before the build, with nothing written."""
    calls = stand_in(**fault)
    plan = tmp_path / "g_AtoB.plan"
    with pytest.raises(ExportError, match=message):
        build_engine(tiny_onnx, plan, derive_profile(ModelMeta(train_size=64)), BuildOptions(workspace_gb=1))
    assert ("build",) not in calls and not plan.exists() and not sidecar_path(plan).exists()


def _cuda_runtime_stand_in() -> types.ModuleType:
    cudart = types.ModuleType("cuda.bindings.runtime")
    cudart.cudaError_t = types.SimpleNamespace(cudaSuccess=0)  # type: ignore[attr-defined]
    props = types.SimpleNamespace(name=b"NVIDIA H100 80GB HBM3\x00", major=9, minor=0)
    cudart.cudaGetDeviceProperties = lambda device: (0, props)  # type: ignore[attr-defined]
    return cudart


def test_gpu_info_uses_cuda_bindings_runtime_only(monkeypatch):
    """cuda.cudart (the pre-12.6 module) is gone in cuda-bindings 13 and the backend never used it: the sidecar's
    GPU name must come from cuda.bindings.runtime, as the backend's check reads it."""
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", _cuda_runtime_stand_in())
    assert engine_sidecar.gpu_info() == ("NVIDIA H100 80GB HBM3", "9.0")
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)  # not installed
    monkeypatch.setitem(sys.modules, "cuda.cudart", _cuda_runtime_stand_in())  # an old cuda-python's module
    with pytest.raises(BackendUnavailableError, match="cuda-python is not installed .*pip install cuda-python"):
        engine_sidecar.gpu_info()


def _gpu_benchmark() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_profile_is_per_dimension():
    """benchmarks/gpu.py took min/max by area and opt from the middle of the unsorted list: 720x1280,1280x720
    gave min 720x1280 > opt 1280x720 in H and the engine build failed."""
    shapes = _gpu_benchmark().profile_shapes
    meta = ModelMeta(train_size=256)
    assert shapes([(720, 1280), (1280, 720)], 4, 4) == ("1x720x720", "1x720x1280", "4x1280x1280")
    p = derive_profile(meta, *shapes([(720, 1280), (1280, 720)], 4, 4))
    assert p.covers((4, 3, 720, 1280)) and p.covers((4, 3, 1280, 720)) and p.covers((1, 3, 1280, 720))
    assert shapes([(1080, 1920), (256, 256), (720, 1280)], 4, 4) == ("1x256x256", "1x720x1280", "4x1080x1920")
    assert shapes([(47, 63)], 4, 1) == ("1x48x64", "1x48x64", "1x48x64")  # padded to the multiple
    derive_profile(meta, *shapes([(1080, 1920), (1920, 1080), (256, 256)], 4, 4))  # no min <= opt <= max error


def test_uint8_io_engine_is_built_from_the_wrapped_graph(tiny_onnx, tmp_path, stand_in):
    """--engine-io uint8: TensorRT parses the uint8-I/O wrapper of the graph (made in memory, export/uint8_io.py),
    the profile goes to TensorRT as NHWC frames, and the sidecar records the I/O; trtexec can only build the
    float32-I/O engine, and its printed command says so."""
    import onnx

    calls = stand_in(outputs=2, input_name="frames")
    plan = tmp_path / "g_AtoB.plan"
    profile = derive_profile(ModelMeta(train_size=64))
    sidecar = build_engine(tiny_onnx, plan, profile, BuildOptions(workspace_gb=1, io="uint8"))
    (parsed,) = [c for c in calls if c[0] == "parse_bytes"]
    assert parsed[1] == str(tiny_onnx) and not [c for c in calls if c[0] == "parse"]
    graph = onnx.load_from_string(parsed[2]).graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.input] == [("frames", onnx.TensorProto.UINT8)]
    assert [o.name for o in graph.output] == ["frames_out", "nonfinite"]
    assert ("set_shape", "frames", [1, 16, 16, 3], [4, 1080, 1920, 3], [4, 1920, 1920, 3]) in calls
    assert sidecar.extra["io"] == "uint8" and read_sidecar(plan).extra["io"] == "uint8"
    assert Profile.from_dict(sidecar.profile) == profile  # recorded in the model's NCHW terms
    how = how_to_build(tiny_onnx, plan, profile, BuildOptions(io="uint8"))
    assert how.startswith("`cgdeploy export CHECKPOINT -o DIR --engine --engine-io uint8`") and "trtexec cannot" in how
    assert "`trtexec --onnx=" in how_to_build(tiny_onnx, plan, profile, BuildOptions())
    from cyclegan_deploy.engine_sidecar import check_engine_compat

    with pytest.raises(EngineMismatchError, match=r"Rebuild here: `cgdeploy export CHECKPOINT -o DIR --engine "
                                                  r"--engine-io uint8`"):
        check_engine_compat(read_sidecar(plan), "10.13.3.9", "NVIDIA L4", "8.9")
    with pytest.raises(ConfigError, match="--engine-io 'u8': choose one of float32, uint8"):
        BuildOptions(io="u8")


def test_a_float_graph_parsed_where_uint8_io_was_asked_is_refused(tiny_onnx, tmp_path, stand_in):
    calls = stand_in()  # the network comes back with the float graph's single input/output
    plan = tmp_path / "g_AtoB.plan"
    with pytest.raises(ExportError, match=r"one input named 'frames' and two outputs \(uint8 I/O\)"):
        build_engine(tiny_onnx, plan, derive_profile(ModelMeta(train_size=64)), BuildOptions(io="uint8"))
    assert ("build",) not in calls and not plan.exists()
