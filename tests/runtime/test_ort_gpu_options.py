"""What the onnxruntime backend asks of ONNX Runtime for GPU sessions, recorded by a stand-in onnxruntime module:
no CPU provider and `session.disable_cpu_ep_fallback` (nothing silently on the CPU), the Python API's own CPU
retry off, TF32 off on the CUDA EP, and an explicit TensorRT profile covering 720p/1080p both ways at the video
batch with builder level, workspace and caches. Also the removed trt_fp16 option and the real onnxruntime's
answer when a GPU provider cannot take the graph. No GPU needed.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cyclegan_deploy.backends import onnxruntime as ort_backend
from cyclegan_deploy.backends.onnxruntime import OrtBackend
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.metadata import ModelMeta

GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


class FakeSessionOptions:
    def __init__(self) -> None:
        self.config: dict[str, str] = {}

    def add_session_config_entry(self, key: str, value: str) -> None:
        self.config[key] = value


class FakeSession:
    """Records how it was made; starts the providers it was given unless `drop` names ones to leave out; raises
    `fail` for sessions without the CPU provider (GPU sessions)."""

    made: list[FakeSession] = []
    drop: tuple[str, ...] = ()
    fail: str | None = None

    def __init__(self, path: str, sess_options: Any = None, providers: Any = None, **kwargs: Any) -> None:
        if FakeSession.fail and "CPUExecutionProvider" not in providers:
            raise RuntimeError(FakeSession.fail)
        self.path, self.options, self.providers, self.kwargs = path, sess_options, list(providers), kwargs
        self.fallback_disabled = False
        FakeSession.made.append(self)

    def get_providers(self) -> list[str]:
        names = [p[0] if isinstance(p, tuple) else p for p in self.providers]
        return [n for n in names if n not in FakeSession.drop] or ["CPUExecutionProvider"]

    def provider_options(self, name: str) -> dict[str, Any]:
        return next(p[1] for p in self.providers if isinstance(p, tuple) and p[0] == name)

    def disable_fallback(self) -> None:
        self.fallback_disabled = True

    def get_inputs(self) -> list[Any]:
        return [SimpleNamespace(name="x", type="tensor(float)")]

    def get_outputs(self) -> list[Any]:
        return [SimpleNamespace(name="y", type="tensor(float)")]


@pytest.fixture
def fake_ort(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fake = types.ModuleType("onnxruntime")
    fake.__version__ = "1.30.0"  # type: ignore[attr-defined]
    fake.get_available_providers = lambda: list(GPU_PROVIDERS)  # type: ignore[attr-defined]
    fake.SessionOptions = FakeSessionOptions  # type: ignore[attr-defined]
    fake.InferenceSession = FakeSession  # type: ignore[attr-defined]
    fake.GraphOptimizationLevel = SimpleNamespace(ORT_ENABLE_ALL=99)  # type: ignore[attr-defined]
    fake.ExecutionMode = SimpleNamespace(ORT_SEQUENTIAL=0)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(FakeSession, "made", [])
    monkeypatch.setattr(FakeSession, "drop", ())
    monkeypatch.setattr(FakeSession, "fail", None)
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    return fake


def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **card: Any) -> Path:
    """A model file whose card (read_card stubbed: no onnx/torch needed) is ModelMeta(**card)."""
    path = tmp_path / "g_AtoB.onnx"
    path.write_bytes(b"stand-in")
    meta = ModelMeta(**{"arch": "resnet_9blocks", "multiple": 4, "input_name": "x", **card})
    monkeypatch.setattr(ort_backend, "read_card", lambda p: meta)
    return path


def test_tensorrt_session_profile_builder_options_and_no_cpu(fake_ort, tmp_path, monkeypatch) -> None:
    path = model(tmp_path, monkeypatch)
    backend = OrtBackend(path, device="tensorrt")
    (session,) = FakeSession.made
    names = [p[0] if isinstance(p, tuple) else p for p in session.providers]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]  # no CPU EP: ORT refuses it with the flag
    assert session.options.config["session.disable_cpu_ep_fallback"] == "1"
    assert session.kwargs == {"enable_fallback": 0} and session.fallback_disabled
    trt = session.provider_options("TensorrtExecutionProvider")
    # min: the smallest frame a ResNet takes (2x its multiple); opt/max: 1080p landscape / both 1080p orientations
    assert trt["trt_profile_min_shapes"] == "x:1x3x8x8"
    assert trt["trt_profile_opt_shapes"] == "x:4x3x1080x1920"
    assert trt["trt_profile_max_shapes"] == "x:4x3x1920x1920"
    assert trt["trt_builder_optimization_level"] == 3 and trt["trt_max_workspace_size"] == 4 * 2**30
    cache = str(tmp_path / "g_AtoB.ort_trt_cache")
    assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == cache
    assert trt["trt_timing_cache_enable"] is True and trt["trt_timing_cache_path"] == cache
    assert "trt_fp16_enable" not in trt  # the graph's own precision, nothing else
    assert session.provider_options("CUDAExecutionProvider")["use_tf32"] == 0
    assert (backend.name, backend.precision, backend.device) == ("onnxruntime-trt", "fp32", "tensorrt")
    assert backend.tf32 is True  # ORT's TensorRT EP has no TF32 switch: TensorRT's default, recorded as such


def test_tensorrt_profile_follows_the_card_and_options(fake_ort, tmp_path, monkeypatch) -> None:
    # a U-Net pads to multiples of 256: 1080 -> 1280, 1920 -> 2048; the card's input name is used
    path = model(tmp_path, monkeypatch, arch="unet_256", multiple=256, min_size=256, input_name="input")
    OrtBackend(path, device="tensorrt", options={"trt_cache": False, "trt_opt_level": 5, "trt_workspace_gb": 8})
    trt = FakeSession.made[-1].provider_options("TensorrtExecutionProvider")
    assert (trt["trt_profile_min_shapes"], trt["trt_profile_opt_shapes"], trt["trt_profile_max_shapes"]) == (
        "input:1x3x256x256", "input:4x3x1280x2048", "input:4x3x2048x2048")
    assert trt["trt_builder_optimization_level"] == 5 and trt["trt_max_workspace_size"] == 8 * 2**30
    assert "trt_engine_cache_enable" not in trt

    OrtBackend(model(tmp_path, monkeypatch, train_size=2560), device="tensorrt")  # trained bigger than 1080p
    assert FakeSession.made[-1].provider_options("TensorrtExecutionProvider")["trt_profile_max_shapes"] == \
        "x:4x3x2560x2560"

    path = model(tmp_path, monkeypatch)
    OrtBackend(path, device="tensorrt", options={"trt_max_batch": 1, "trt_max_size": "720x1280"})
    trt = FakeSession.made[-1].provider_options("TensorrtExecutionProvider")
    assert trt["trt_profile_opt_shapes"] == "x:1x3x720x1280"  # the default opt shrinks to a smaller max
    assert trt["trt_profile_max_shapes"] == "x:1x3x720x1280"
    with pytest.raises(ConfigError, match="trt_opt_size 1080x1920 <= trt_max_size 720x1280"):
        OrtBackend(path, device="tensorrt", options={"trt_opt_size": "1080x1920", "trt_max_size": "720x1280"})
    for bad in ({"trt_opt_level": 6}, {"trt_workspace_gb": 0}, {"trt_max_batch": 0}):
        with pytest.raises(ConfigError):
            OrtBackend(path, device="tensorrt", options=bad)


def test_profile_batch_is_the_video_default_batch() -> None:
    from cyclegan_deploy.video.options import VideoOptions

    assert ort_backend.VIDEO_BATCH == VideoOptions().batch


def test_cuda_session_fp32_without_tf32_or_cpu(fake_ort, tmp_path, monkeypatch) -> None:
    backend = OrtBackend(model(tmp_path, monkeypatch), device="cuda")
    (session,) = FakeSession.made
    assert session.providers == [("CUDAExecutionProvider", {"device_id": 0, "use_tf32": 0})]
    assert session.options.config["session.disable_cpu_ep_fallback"] == "1"
    assert session.kwargs == {"enable_fallback": 0} and session.fallback_disabled
    assert (backend.name, backend.tf32, backend.io_binding) == ("onnxruntime-cuda", False, True)


def test_cpu_session_is_unchanged(fake_ort, tmp_path, monkeypatch) -> None:
    backend = OrtBackend(model(tmp_path, monkeypatch), device="cpu")
    (session,) = FakeSession.made
    assert session.providers == ["CPUExecutionProvider"] and session.kwargs == {}
    assert "session.disable_cpu_ep_fallback" not in session.options.config
    assert (backend.name, backend.tf32) == ("onnxruntime-cpu", None)


def test_tf32_override_is_recorded_for_tensorrt(fake_ort, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")  # NVIDIA's libraries then never use TF32
    assert OrtBackend(model(tmp_path, monkeypatch), device="tensorrt").tf32 is False


def test_trt_fp16_option_is_refused_with_the_fp16_graph_advice(fake_ort, tmp_path, monkeypatch) -> None:
    path = model(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"trt_fp16 was removed.*reporting fp32.*export --fp16"):
        OrtBackend(path, device="tensorrt", options={"trt_fp16": True})
    assert not FakeSession.made
    OrtBackend(path, device="tensorrt", options={"trt_fp16": False})  # unset: nothing to refuse


def test_nodes_left_for_the_cpu_refuse_the_gpu_session(fake_ort, tmp_path, monkeypatch) -> None:
    FakeSession.fail = ("[ONNXRuntimeError] : 1 : FAIL : This session contains graph nodes that are assigned to "
                        "the default CPU EP, but fallback to CPU EP has been explicitly disabled by the user.")
    path = model(tmp_path, monkeypatch)
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider cannot run every node"):
        OrtBackend(path, device="cuda")
    assert OrtBackend(path).name == "onnxruntime-cpu"  # "auto" may settle for the CPU, and says so


def test_provider_dropped_after_start_is_still_refused(fake_ort, tmp_path, monkeypatch) -> None:
    FakeSession.drop = ("TensorrtExecutionProvider",)
    with pytest.raises(BackendUnavailableError, match="asked for TensorrtExecutionProvider but onnxruntime started"):
        OrtBackend(model(tmp_path, monkeypatch), device="tensorrt")


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_real_onnxruntime_refuses_cpu_placement_of_a_cuda_session(tiny_onnx, monkeypatch) -> None:
    """The real (CPU-only) onnxruntime told CUDA is there: it cannot start the CUDA EP, so every node lands on the
    CPU EP, which session.disable_cpu_ep_fallback turns into an error instead of a CPU run named CUDA."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        OrtBackend(tiny_onnx, device="cuda")


@pytest.mark.gpu
def test_onnxruntime_cuda_session_runs_every_node_on_the_gpu(tiny_onnx) -> None:
    """On a GPU with onnxruntime-gpu: the exported graph has no node the CUDA EP leaves to the CPU."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDAExecutionProvider")
    backend = OrtBackend(tiny_onnx, device="cuda")
    assert backend.name == "onnxruntime-cuda" and backend.tf32 is False
