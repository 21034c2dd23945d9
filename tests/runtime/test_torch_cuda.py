"""The torch backend's CUDA path without a GPU: a stand-in `torch` module (a pretend CUDA device) records what the
backend sets and calls - cudnn.benchmark on, TF32 set explicitly (off for the fp32 baseline, recorded on the
backend), a plain host-to-device copy (no per-call pin_memory), fp16 as a half model on CUDA (model.half(), the
input cast once on the device; no autocast), uint8 I/O on by default on CUDA, CUDA graphs captured once per
shape and replayed through pinned buffers (the stand-in's tensors compute lazily, so a captured output follows
its static input as a replay's would). The real torch checks run
on CPU, and on a GPU where one is present (`gpu` mark).
"""

from __future__ import annotations

import contextlib
import sys
import types
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cyclegan_deploy.backends.torch import TorchBackend
from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.metadata import ModelMeta

DTYPES = ("float16", "bfloat16")  # the stand-in's dtype objects are these strings


class FakeTensor:
    """A tensor whose value may be a function of other tensors' current values (`source`): a result computed
    during CUDA graph capture then follows later writes into the graph's static input, as a replay would."""

    def __init__(self, data: Any, calls: list[Any], device: str = "cpu", dtype: str = "float32") -> None:
        self._data, self.calls, self.device, self.dtype = data, calls, device, dtype
        self.pinned = False

    @property
    def data(self) -> np.ndarray:
        return self._data() if callable(self._data) else self._data

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def _derived(self, fn: Any = None, **kwargs: Any) -> FakeTensor:
        fields = {"device": self.device, "dtype": self.dtype, **kwargs}
        return FakeTensor(lambda: (fn or (lambda a: a))(self.data), self.calls, **fields)

    def pin_memory(self) -> FakeTensor:
        self.calls.append("pin_memory")
        pinned = FakeTensor(np.array(self.data), self.calls, self.device, self.dtype)
        pinned.pinned = True
        return pinned

    def copy_(self, src: FakeTensor, non_blocking: bool = False) -> FakeTensor:
        self.calls.append(("copy_", src.device, self.device, non_blocking))
        self._data = np.array(src.data)
        return self

    def to(self, device: Any = None, **kwargs: Any) -> FakeTensor:
        self.calls.append(("to", device, kwargs))
        if device in DTYPES:
            return self._derived(dtype=device)
        return FakeTensor(np.array(self.data), self.calls, device if isinstance(device, str) else self.device,
                          self.dtype)

    def contiguous(self, memory_format: Any = None) -> FakeTensor:
        self.calls.append(("contiguous", memory_format))
        return self

    def float(self) -> FakeTensor:
        return self._derived(dtype="float32")

    def cpu(self) -> FakeTensor:
        self.calls.append("cpu")
        return FakeTensor(np.array(self.data), self.calls)

    def numpy(self) -> np.ndarray:
        return self.data


class FakeModel:
    def __init__(self, calls: list[Any], torch: Any) -> None:
        self.calls, self.torch = calls, torch

    def to(self, *args: Any, **kwargs: Any) -> FakeModel:
        self.calls.append(("model.to", args, kwargs))
        return self

    def __call__(self, x: FakeTensor) -> FakeTensor:
        flags = self.torch.backends
        # what the kernels would see at this moment
        self.calls.append(("forward", x.device, flags.cudnn.benchmark, flags.cudnn.allow_tf32,
                           flags.cuda.matmul.allow_tf32, self.torch.autocasting, x.dtype))
        self.torch.clock_ms += 1.5  # an eager forward's time on the device
        return x._derived(np.tanh)


def fake_torch(calls: list[Any]) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.__version__ = "2.11.0+cu130"  # type: ignore[attr-defined]
    torch.version = SimpleNamespace(cuda="13.0")  # type: ignore[attr-defined]
    torch.cuda = SimpleNamespace(is_available=lambda: True, is_bf16_supported=lambda: True,  # type: ignore[attr-defined]
                                 get_device_name=lambda *a: "NVIDIA H100 80GB HBM3",
                                 empty_cache=lambda: calls.append("empty_cache"))
    # torch's defaults: cuDNN TF32 on, matmul TF32 off, benchmark off
    torch.backends = SimpleNamespace(cudnn=SimpleNamespace(benchmark=False, allow_tf32=True),  # type: ignore[attr-defined]
                                     cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=False)))
    torch.channels_last, torch.contiguous_format = "channels_last", "contiguous_format"  # type: ignore[attr-defined]
    torch.float16, torch.bfloat16 = "float16", "bfloat16"  # type: ignore[attr-defined]
    torch.set_num_threads = lambda n: None  # type: ignore[attr-defined]
    torch.get_num_threads = lambda: 2  # type: ignore[attr-defined]
    torch.compile = lambda model, **k: model  # type: ignore[attr-defined]
    torch.from_numpy = lambda a: FakeTensor(a, calls)  # type: ignore[attr-defined]
    torch.autocasting = None  # type: ignore[attr-defined]

    class Autocast:
        def __init__(self, device_type: str, dtype: Any) -> None:
            self.state = (device_type, dtype)

        def __enter__(self) -> None:
            torch.autocasting = self.state  # type: ignore[attr-defined]

        def __exit__(self, *exc: object) -> None:
            torch.autocasting = None  # type: ignore[attr-defined]

    class InferenceMode:
        def __enter__(self) -> None:
            calls.append("inference_mode")

        def __exit__(self, *exc: object) -> None:
            pass

    class Stream:
        def wait_stream(self, other: Any) -> None:
            calls.append("wait_stream")

        def synchronize(self) -> None:
            calls.append("synchronize")

    class CUDAGraph:
        def replay(self) -> None:
            calls.append("replay")
            torch.clock_ms += 0.5  # type: ignore[attr-defined]  # a replay's time on the device

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing
            self.t: float | None = None

        def record(self) -> None:
            self.t = torch.clock_ms  # type: ignore[attr-defined]

        def synchronize(self) -> None:
            pass

        def elapsed_time(self, end: Event) -> float:
            assert self.t is not None and end.t is not None
            return end.t - self.t

    @contextlib.contextmanager
    def on(name: str) -> Any:
        calls.append(f"enter {name}")
        yield
        calls.append(f"exit {name}")

    torch.autocast = Autocast  # type: ignore[attr-defined]
    torch.inference_mode = InferenceMode  # type: ignore[attr-defined]
    torch.no_grad = lambda: on("no_grad")  # type: ignore[attr-defined]
    torch.cuda.Stream = Stream  # type: ignore[attr-defined]
    torch.cuda.current_stream = Stream  # type: ignore[attr-defined]
    torch.cuda.stream = lambda s: on("side stream")  # type: ignore[attr-defined]
    torch.cuda.CUDAGraph = CUDAGraph  # type: ignore[attr-defined]
    torch.cuda.Event = Event  # type: ignore[attr-defined]
    torch.clock_ms = 0.0  # type: ignore[attr-defined]
    torch.cuda.graph = lambda g, **kwargs: on("capture")  # type: ignore[attr-defined]
    torch.empty_like = lambda t, device=None: FakeTensor(np.empty_like(t.data), calls, device or t.device)  # type: ignore[attr-defined]
    torch.empty = lambda shape, dtype=None: FakeTensor(np.empty(shape, np.float32), calls)  # type: ignore[attr-defined]
    return torch


@pytest.fixture
def cuda_stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> tuple[Any, list[Any], Any]:
    calls: list[Any] = []
    torch = fake_torch(calls)
    checkpoints = types.ModuleType("cyclegan_deploy.train.checkpoints")
    meta = ModelMeta(arch="resnet_2blocks", ngf=8, n_blocks=2, multiple=4)
    checkpoints.load_generator = lambda path, **k: (FakeModel(calls, torch), meta)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "cyclegan_deploy.train.checkpoints", checkpoints)
    path = tmp_path / "latest_net_G_A.pth"
    path.write_bytes(b"stand-in")
    return torch, calls, path


def test_cuda_fp32_sets_benchmark_and_turns_tf32_off(cuda_stand_in) -> None:
    torch, calls, path = cuda_stand_in
    backend = TorchBackend(path, device="cuda")
    assert (backend.name, backend.precision, backend.tf32) == ("torch-cuda", "fp32", False)
    assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    torch.backends.cudnn.allow_tf32 = True  # another torch user in the process flips the global switch
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 12)).astype(np.float32)
    y = backend(x)
    np.testing.assert_allclose(y, np.tanh(x))
    assert backend.device_ms == 1.5  # CUDA events around the model only
    # the call set the switches again, ran on CUDA with TF32 off and no autocast
    assert ("forward", "cuda", True, False, False, None, "float32") in calls
    assert "pin_memory" not in calls  # a plain pageable copy, no fresh pinned buffer per call
    assert [c for c in calls if isinstance(c, tuple) and c[0] == "to"] == [("to", "cuda", {})]
    backend.close()
    assert "empty_cache" in calls


def test_cuda_fp16_is_a_half_model_and_tf32_can_be_asked_for(cuda_stand_in) -> None:
    torch, calls, path = cuda_stand_in
    backend = TorchBackend(path, device="cuda", precision="fp16")
    assert ("model.to", ("float16",), {}) in calls  # the weights themselves in fp16
    backend(np.zeros((1, 3, 8, 8), np.float32))
    assert ("forward", "cuda", True, False, False, None, "float16") in calls  # a half input, no autocast
    assert backend.name == "torch-cuda-fp16" and backend.tf32 is False
    assert backend.uint8_io is True  # video's pre/post-processing runs on the GPU by default
    with pytest.raises(ConfigError, match="cuda_graphs and compile do not combine"):
        TorchBackend(path, device="cuda", options={"cuda_graphs": True, "compile": True})

    fast = TorchBackend(path, device="cuda", options={"tf32": True, "channels_last": True})
    assert (fast.name, fast.tf32) == ("torch-cuda-cl-tf32", True)
    assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True
    fast(np.zeros((1, 3, 8, 8), np.float32))
    assert ("contiguous", "channels_last") in calls


def test_cpu_records_no_tf32_and_refuses_it(tiny_generator_file) -> None:
    pytest.importorskip("torch")
    backend = TorchBackend(tiny_generator_file, device="cpu")
    assert backend.tf32 is None and backend.name == "torch-cpu"
    with pytest.raises(ConfigError, match="tf32 applies to CUDA only"):
        TorchBackend(tiny_generator_file, device="cpu", options={"tf32": True})


@pytest.mark.gpu
def test_cuda_fp32_without_tf32_matches_cpu_fp32(tiny_generator_file) -> None:
    """TF32 off: the CUDA fp32 baseline is FP32 (the design's 1e-4 fp32 tolerance, not the TF32 one)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    cpu, gpu = TorchBackend(tiny_generator_file, device="cpu"), TorchBackend(tiny_generator_file, device="cuda")
    with cpu, gpu:
        assert gpu.tf32 is False and torch.backends.cudnn.benchmark is True
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert float(np.abs(gpu(x) - cpu(x)).max()) <= 1e-4


def test_cuda_graphs_capture_once_per_shape_and_replay(cuda_stand_in) -> None:
    """Per shape: warm-up calls on a side stream, one capture, then each call copies into the static input
    through a pinned buffer, replays and copies the output back through another (non-blocking, one
    synchronize). New values of the same shape give their own results; the oldest shape is evicted."""
    from cyclegan_deploy.backends import cuda_graphs as torch_backend

    torch, calls, path = cuda_stand_in
    backend = TorchBackend(path, device="cuda", options={"cuda_graphs": True})
    assert backend.name == "torch-cuda-graphs"
    rng = np.random.default_rng(0)
    first, second = (rng.uniform(-1, 1, (2, 3, 8, 12)).astype(np.float32) for _ in range(2))
    np.testing.assert_allclose(backend(first), np.tanh(first))
    assert calls.count("enter capture") == 1
    assert sum(c[0] == "forward" for c in calls if isinstance(c, tuple)) == torch_backend.GRAPH_WARMUP + 1
    assert calls.index("enter side stream") < calls.index("enter capture")
    calls.clear()
    np.testing.assert_allclose(backend(second), np.tanh(second))  # the replay follows the new input
    assert "enter capture" not in calls and calls.count("replay") == 1 and calls.count("synchronize") == 1
    assert backend.device_ms == 0.5  # the replay, between CUDA events
    assert not any(isinstance(c, tuple) and c[0] == "forward" for c in calls)  # replayed, not run again
    assert [c for c in calls if isinstance(c, tuple) and c[0] == "copy_"] == [
        ("copy_", "cpu", "cpu", False),  # the caller's array into the pinned staging buffer
        ("copy_", "cpu", "cuda", True),  # pinned -> the static device input
        ("copy_", "cuda", "cpu", True)]  # the static output -> pinned
    for h in range(torch_backend.GRAPH_SHAPES):  # more shapes than kept: the first is captured again
        backend(np.zeros((1, 3, 8, 16 + 4 * h), np.float32))
    calls.clear()
    np.testing.assert_allclose(backend(first), np.tanh(first))
    assert calls.count("enter capture") == 1

