"""The TensorRT backend against stand-ins for `tensorrt` and `cuda.bindings.runtime` (neither can be installed
on the machines this is developed on; FACTS.md). Everything up to the TensorRT/CUDA calls runs for real: the
sidecar checks, precision names, buffers, copies, tensor addresses, the stream handle, the device selected per
calling thread, and release by close(), `with` and __del__. The real-GPU conformance test is in test_backends.py.
"""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cyclegan_deploy.backends import UNAVAILABLE, available_backends, load_backend
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError, ShapeError

H100 = ("NVIDIA H100 80GB HBM3", "9.0")


def _fake_engine(tmp_path: Path, trt_version: str = "10.13.0.35", gpu: str = H100[0], cc: str = H100[1],
                 precision: str = "fp32", io: str = "float32") -> Path:
    """A .plan that is not an engine, with a real sidecar (export's format) saying where it was built."""
    from cyclegan_deploy.artifacts import sidecar_path
    from cyclegan_deploy.engine_sidecar import EngineSidecar, write_sidecar

    plan = tmp_path / "g_AtoB.plan"
    plan.write_bytes(b"not a real engine")
    card = {"arch": "resnet_2blocks", "ngf": 8, "n_blocks": 2, "multiple": 4}
    profile = {"input_name": "input", "min": [1, 3, 32, 32], "opt": [1, 3, 64, 64], "max": [2, 3, 128, 128]}
    write_sidecar(sidecar_path(plan), EngineSidecar(
        tensorrt_version=trt_version, gpu_name=gpu, compute_capability=cc, profile=profile, precision=precision,
        source_onnx="g_AtoB.onnx", source_onnx_sha256="0" * 64, model_card=card, extra={"io": io}))
    return plan


class _FakeStream:
    """cudaStream_t stand-in: int(stream) still works but is the path cuda-bindings 13 deprecates; counted."""

    def __init__(self, cuda: _FakeCuda, address: int) -> None:
        self.cuda, self.address = cuda, address

    def __int__(self) -> int:
        self.cuda.int_calls += 1
        return self.address


class _FakeCuda:
    """cuda.bindings.runtime stand-in: device memory is bytearrays behind fake addresses, host memory is real.
    The current device is per host thread (as cudaSetDevice's is; a new thread starts on device 0), and every
    device allocation and execution records the device it landed on. Double frees are recorded, not raised:
    the real runtime returns an error code there, which close() does not look at."""

    class cudaMemcpyKind:  # noqa: N801  (mirrors the cuda-python name)
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self) -> None:
        self.device: dict[int, bytearray] = {}
        self.host: dict[int, Any] = {}
        self.streams: dict[int, _FakeStream] = {}
        self.mallocs = 0
        self.malloc_devices: list[int] = []
        self.exec_devices: list[int] = []
        self.double_frees: list[str] = []
        self.int_calls = 0
        self.handle_lookups: list[_FakeStream] = []  # streams given to cuda.bindings.utils.get_cuda_native_handle
        self.event_times: dict[int, float | None] = {}
        self.clock_ms, self.exec_ms = 0.0, 2.5
        self.broken = False  # True: every call raises, as a runtime torn down at interpreter exit might
        self._thread = threading.local()

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("cuda") and name != "cudaMemcpyKind" and object.__getattribute__(self, "broken"):
            raise RuntimeError("CUDA runtime already unloaded")
        return object.__getattribute__(self, name)

    def current_device(self) -> int:
        return getattr(self._thread, "device", 0)

    def cudaSetDevice(self, i: int) -> tuple[int]:  # noqa: N802
        self._thread.device = i
        return (0,)

    def cudaMalloc(self, n: int) -> tuple[int, int]:  # noqa: N802
        self.mallocs += 1
        self.malloc_devices.append(self.current_device())
        addr = 0x10000000 + 0x1000000 * self.mallocs
        self.device[addr] = bytearray(n)
        return 0, addr

    def cudaMallocHost(self, n: int) -> tuple[int, int]:  # noqa: N802
        buf = ctypes.create_string_buffer(n)
        self.host[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: _FakeStream) -> tuple[int]:  # noqa: N802
        assert stream.address in self.streams
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.device[dst][:n] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(self.device[src][:n]), n)
        return (0,)

    def cudaFree(self, addr: int) -> tuple[int]:  # noqa: N802
        if self.device.pop(addr, None) is None:
            self.double_frees.append(f"device {addr:#x}")
            return (1,)  # cudaErrorInvalidValue
        return (0,)

    def cudaFreeHost(self, addr: int) -> tuple[int]:  # noqa: N802
        if self.host.pop(addr, None) is None:
            self.double_frees.append(f"host {addr:#x}")
            return (1,)
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, _FakeStream]:  # noqa: N802
        stream = _FakeStream(self, 0x7000 + len(self.streams))
        self.streams[stream.address] = stream
        return 0, stream

    def cudaStreamSynchronize(self, s: _FakeStream) -> tuple[int]:  # noqa: N802
        return (0,)

    # events: a clock per record; execute_async_v3 advances it by `exec_ms`, so elapsed times are known
    def cudaEventCreate(self) -> tuple[int, int]:  # noqa: N802
        event = 0x9000 + len(self.event_times) + 100 * self.mallocs
        self.event_times[event] = None
        return 0, event

    def cudaEventRecord(self, event: int, stream: _FakeStream) -> tuple[int]:  # noqa: N802
        assert event in self.event_times and stream.address in self.streams
        self.event_times[event] = self.clock_ms
        return (0,)

    def cudaEventElapsedTime(self, start: int, end: int) -> tuple[int, float]:  # noqa: N802
        return 0, self.event_times[end] - self.event_times[start]

    def cudaEventDestroy(self, event: int) -> tuple[int]:  # noqa: N802
        if self.event_times.pop(event, "gone") == "gone":
            self.double_frees.append(f"event {event:#x}")
            return (1,)
        return (0,)

    def cudaStreamDestroy(self, s: _FakeStream) -> tuple[int]:  # noqa: N802
        if self.streams.pop(s.address, None) is None:
            self.double_frees.append(f"stream {s.address:#x}")
            return (1,)
        return (0,)


def _fake_tensorrt(cuda: _FakeCuda) -> types.ModuleType:
    """Just the TensorRT surface the backend uses; the 'engine' computes tanh(x) from device memory. A plan
    whose bytes say `uint8` is a uint8-I/O engine (export/uint8_io.py's tensors): frames_out = 255 - frames,
    and `nonfinite` is 1 for the frames whose first byte is 7 (a model that overflowed on them)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35"  # type: ignore[attr-defined]
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})  # type: ignore[attr-defined]
    trt.TensorIOMode = types.SimpleNamespace(INPUT=1, OUTPUT=2)  # type: ignore[attr-defined]
    trt.nptype = lambda dtype: dtype  # type: ignore[attr-defined]  # the stand-in's dtypes are numpy's

    class Context:
        def __init__(self, uint8: bool = False) -> None:
            self.uint8 = uint8
            self.shape: tuple[int, ...] = ()
            self.addr: dict[str, int] = {}
            self.streams: list[Any] = []

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            self.shape = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.shape[:1] if name == "nonfinite" else self.shape

        def set_tensor_address(self, name: str, addr: int) -> bool:
            self.addr[name] = addr
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert type(stream_handle) is int  # the binding takes the handle's address, as an int
            self.streams.append(stream_handle)
            cuda.exec_devices.append(cuda.current_device())
            if self.uint8:
                n = int(np.prod(self.shape))
                x = np.frombuffer(bytes(cuda.device[self.addr["frames"]][:n]), np.uint8)
                cuda.device[self.addr["frames_out"]][:n] = (255 - x).tobytes()
                flags = (x.reshape(self.shape[0], -1)[:, 0] == 7).astype(np.float32)
                cuda.device[self.addr["nonfinite"]][:4 * len(flags)] = flags.tobytes()
                cuda.clock_ms += cuda.exec_ms
                return True
            n = int(np.prod(self.shape)) * 4
            x = np.frombuffer(bytes(cuda.device[self.addr["input"]][:n]), np.float32)
            cuda.device[self.addr["output"]][:n] = np.tanh(x).tobytes()
            cuda.clock_ms += cuda.exec_ms  # the engine's time on the device
            return True

    class Engine:
        def __init__(self, uint8: bool) -> None:
            self.uint8 = uint8
            self.names = ("frames", "frames_out", "nonfinite") if uint8 else ("input", "output")
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> int:
            return 1 if name in ("input", "frames") else 2

        def get_tensor_dtype(self, name: str) -> Any:
            return np.uint8 if name.startswith("frames") else np.float32

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            nchw = [(1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 128, 128)]
            return [(n, h, w, c) for n, c, h, w in nchw] if self.uint8 else nchw

        def create_execution_context(self) -> Context:
            return Context(self.uint8)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            return Engine(uint8=data == b"uint8")

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt


def _native_handles(cuda: _FakeCuda) -> types.ModuleType:
    """cuda.bindings.utils stand-in (cuda-bindings >= 12.9.1): get_cuda_native_handle for our stream type."""
    utils = types.ModuleType("cuda.bindings.utils")

    def get_cuda_native_handle(obj: Any) -> int:
        if not isinstance(obj, _FakeStream):
            raise TypeError(f"Unknown type: {type(obj)}")
        cuda.handle_lookups.append(obj)
        return obj.address

    utils.get_cuda_native_handle = get_cuda_native_handle  # type: ignore[attr-defined]
    return utils


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> _FakeCuda:
    """Stand-ins for tensorrt, cuda.bindings.runtime (+ .utils) and a pretend H100 on every device id."""
    from cyclegan_deploy import engine_sidecar
    from cyclegan_deploy.backends import tensorrt as trt_backend

    fake = _FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(fake))
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", _native_handles(fake))
    monkeypatch.setattr(trt_backend, "_cuda_runtime", lambda: fake)
    monkeypatch.setattr(engine_sidecar, "gpu_info", lambda device=0: H100)
    return fake


def _batch(shape: tuple[int, ...] = (1, 3, 32, 32)) -> np.ndarray:
    return np.linspace(-2, 2, int(np.prod(shape)), dtype=np.float32).reshape(shape)


@pytest.mark.skipif(not available_backends(["tensorrt"])["tensorrt"].startswith(UNAVAILABLE),
                    reason="TensorRT is installed here")
def test_tensorrt_absent_is_a_clear_error(tmp_path) -> None:
    plan = _fake_engine(tmp_path)
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        load_backend(plan)
    with pytest.raises(ConfigError, match="GPU only"):
        load_backend(plan, device="cpu")


def test_engine_sidecar_mismatch_is_refused(tmp_path, monkeypatch) -> None:
    """Everything up to deserialization runs with a stand-in tensorrt module and a pretend H100."""
    from cyclegan_deploy import engine_sidecar
    from cyclegan_deploy.backends.tensorrt import TensorRTBackend

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.13.0.35"  # type: ignore[attr-defined]
    fake.Runtime = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(engine_sidecar, "gpu_info", lambda device=0: H100)
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.0\.1\.6 \(this machine: 10\.13\.0\.35\).*--engine"):
        TensorRTBackend(_fake_engine(tmp_path, trt_version="10.0.1.6"))
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.0 \(this GPU: 9\.0\)"):
        TensorRTBackend(_fake_engine(tmp_path, gpu="NVIDIA A100-SXM4-40GB", cc="8.0"))
    with pytest.raises(ConfigError, match="precision is fixed at build time"):
        TensorRTBackend(_fake_engine(tmp_path), precision="fp16")
    plan = _fake_engine(tmp_path)
    (tmp_path / "g_AtoB.plan.json").unlink()
    with pytest.raises(EngineMismatchError, match="missing or unreadable engine sidecar"):
        TensorRTBackend(plan)


def test_tensorrt_backend_buffers_and_profile_with_stand_ins(tmp_path, cuda) -> None:
    """The backend's own logic (buffers, copies, addresses, growth, profile check) against stand-in APIs."""
    backend = load_backend(_fake_engine(tmp_path))
    assert backend.name == "tensorrt" and backend.meta.arch == "resnet_2blocks"
    rng = np.random.default_rng(3)
    for shape in [(1, 3, 32, 32), (2, 3, 64, 96), (1, 3, 36, 52)]:  # grows, then reuses the bigger buffers
        x = rng.uniform(-3, 3, size=shape).astype(np.float32)
        y = backend(x)
        np.testing.assert_allclose(y, np.tanh(x), rtol=1e-6)
        y[...] = 0  # the caller owns its copy: the next call must not see this
    assert cuda.mallocs == 4  # input+output at the first shape, again once at the bigger one, none after
    assert backend.device_ms == cuda.exec_ms  # CUDA events around execute_async_v3 only
    with pytest.raises(ShapeError, match=r"3x3x32x32.*outside the engine's optimization profile 1x3x32x32 \.\. "
                                         r"2x3x128x128.*--max-shape"):
        backend(np.zeros((3, 3, 32, 32), np.float32))
    with pytest.raises(ShapeError, match="outside"):
        backend(np.zeros((1, 3, 16, 32), np.float32))
    backend.close()
    assert not cuda.device and not cuda.host and not cuda.streams and not cuda.event_times  # everything freed
    assert not cuda.double_frees


def test_engine_suffix_with_its_sidecar_loads(tmp_path, cuda) -> None:
    """`.engine` is a TensorRT engine like `.plan`: g.engine + g.engine.json load (they used to be refused)."""
    plan = _fake_engine(tmp_path)
    engine = plan.rename(tmp_path / "g_AtoB.engine")
    (tmp_path / "g_AtoB.plan.json").rename(tmp_path / "g_AtoB.engine.json")
    with load_backend(engine) as backend:
        assert backend.name == "tensorrt" and backend.meta.arch == "resnet_2blocks"
        x = _batch()
        np.testing.assert_allclose(backend(x), np.tanh(x), rtol=1e-6)
    assert not cuda.device and not cuda.host and not cuda.streams  # the context manager closed it


def test_every_call_selects_the_device_in_its_own_thread(tmp_path, cuda) -> None:
    """cudaSetDevice is per host thread: the video pipeline's inference thread never ran __init__, so without a
    cudaSetDevice per call its lazy cudaMalloc would land on GPU 0 instead of device_id."""
    backend = load_backend(_fake_engine(tmp_path), device_id=1)
    assert cuda.current_device() == 1 and not cuda.malloc_devices  # __init__ selected it; nothing allocated yet
    outputs: list[np.ndarray] = []
    errors: list[BaseException] = []
    seen: list[int] = []

    def worker() -> None:
        seen.append(cuda.current_device())  # a fresh thread starts on device 0, as with the real runtime
        try:
            outputs.append(backend(_batch((2, 3, 32, 32))))
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    assert seen == [0]
    assert cuda.malloc_devices == [1, 1] and cuda.exec_devices == [1]  # input + output buffers, one execution
    np.testing.assert_allclose(outputs[0], np.tanh(_batch((2, 3, 32, 32))), rtol=1e-6)
    backend.close()


def test_stream_reaches_tensorrt_as_its_native_handle(tmp_path, cuda, monkeypatch) -> None:
    """cuda-bindings 12.9.1/13 deprecate int(cudaStream_t) for cuda.bindings.utils.get_cuda_native_handle;
    older 12.x have only int(). TensorRT's execute_async_v3 takes the address as an int either way."""
    with load_backend(_fake_engine(tmp_path)) as backend:
        backend(_batch())
        (stream,) = cuda.streams.values()
        assert backend.context.streams == [stream.address]
        assert cuda.int_calls == 0 and cuda.handle_lookups == [stream]  # looked up once, at load
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", None)  # cuda-bindings < 12.9.1: no utils module
    with load_backend(_fake_engine(tmp_path)) as backend:
        backend(_batch())
        (stream,) = cuda.streams.values()
        assert backend.context.streams == [stream.address] and cuda.int_calls == 1


def test_refused_tensor_address_is_a_clear_error(tmp_path, cuda) -> None:
    """set_tensor_address returns False (unknown name, address not 256-byte aligned): say so, don't execute."""
    with load_backend(_fake_engine(tmp_path)) as backend:
        backend.context.set_tensor_address = lambda name, addr: name != "output"
        with pytest.raises(BackendUnavailableError, match=r"g_AtoB\.plan: TensorRT refused device address 0x[0-9a-f]+"
                                                          r" for tensor 'output'.*cgdeploy export"):
            backend(_batch())
        assert not cuda.exec_devices


def test_precision_aliases_match_the_sidecar(tmp_path, cuda) -> None:
    """Requested and recorded precision are compared in one vocabulary (metadata.PRECISION_ALIASES)."""
    plan = _fake_engine(tmp_path, precision="fp16")
    for asked in ("fp16", "FP16", "half", "float16", " F16 ", "auto", None):
        with load_backend(plan, precision=asked) as backend:
            assert backend.precision == "fp16"
    with pytest.raises(ConfigError, match=r"fixed at build time \(fp16\), not fp32"):
        load_backend(plan, precision="fp32")
    with pytest.raises(ConfigError, match="--precision 'fp12'"):
        load_backend(plan, precision="fp12")
    hand_edited = _fake_engine(tmp_path, precision="FP16")
    with load_backend(hand_edited, precision="half") as backend:
        assert backend.precision == "fp16"  # reported in the canonical name, not the sidecar's spelling
    with pytest.raises(ConfigError, match="backend tensorrt does not take option.*threads=4"):
        load_backend(_fake_engine(tmp_path), threads=4)
    assert not cuda.device and not cuda.host and not cuda.streams


def test_close_twice_and_a_dropped_backend_free_everything_once(tmp_path, cuda) -> None:
    backend = load_backend(_fake_engine(tmp_path))
    backend(_batch())
    assert len(cuda.device) == 2 and len(cuda.host) == 2 and len(cuda.streams) == 1
    backend.close()
    backend.close()
    assert not cuda.device and not cuda.host and not cuda.streams and not cuda.double_frees
    del backend  # __del__ after close(): nothing freed twice
    gc.collect()
    assert not cuda.double_frees

    dropped = load_backend(_fake_engine(tmp_path))  # never closed: __del__ frees device, pinned memory, stream
    dropped(_batch((2, 3, 64, 64)))
    assert cuda.device and cuda.host and cuda.streams
    del dropped
    gc.collect()
    assert not cuda.device and not cuda.host and not cuda.streams and not cuda.double_frees


def test_finalizer_never_raises(tmp_path, cuda, monkeypatch) -> None:
    """At interpreter exit the CUDA runtime may be gone before a dropped backend is collected; a half-built
    backend (its __init__ raised) has no stream or buffers. Neither may raise from __del__."""
    from cyclegan_deploy.backends.tensorrt import TensorRTBackend

    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    TensorRTBackend.__new__(TensorRTBackend).close()  # nothing was ever set
    half_built = TensorRTBackend.__new__(TensorRTBackend)
    half_built.__dict__.update(_cudart=cuda, device_id=0)
    del half_built
    backend = load_backend(_fake_engine(tmp_path))
    backend(_batch())
    cuda.broken = True
    del backend
    gc.collect()
    assert not unraisable


def _uint8_engine(tmp_path: Path) -> Path:
    plan = _fake_engine(tmp_path, io="uint8")
    plan.write_bytes(b"uint8")  # the stand-in runtime deserializes it as a uint8-I/O engine
    return plan


def test_uint8_engine_takes_and_gives_frames(tmp_path, cuda) -> None:
    """An engine built with --engine-io uint8: uint8 NHWC in, uint8 NHWC + per-frame flags out, the profile
    read back in NCHW terms, a quarter of the float32 bytes copied each way."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 36, 44, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = 8
    with load_backend(_uint8_engine(tmp_path)) as backend:
        assert backend.uint8_io and backend.input_name == "frames"
        assert backend.profile.min == (1, 3, 32, 32) and backend.profile.max == (2, 3, 128, 128)
        out, finite = backend.run_uint8(frames)
        assert out.dtype == np.uint8 and finite is True
        np.testing.assert_array_equal(out, 255 - frames)
        assert sorted(len(b) for b in cuda.device.values()) == [2 * 4, frames.nbytes, frames.nbytes]
        assert backend.device_ms == cuda.exec_ms
        frames[1, 0, 0, 0] = 7  # the stand-in engine flags this frame as non-finite
        assert backend.run_uint8(frames)[1] is False
        with pytest.raises(ShapeError, match=r"3x3x32x32.*outside the engine's optimization profile"):
            backend.run_uint8(np.zeros((3, 32, 32, 3), np.uint8))  # the batch is checked in NCHW terms
        with pytest.raises(ShapeError, match="expected uint8 frames"):
            backend.run_uint8(frames.astype(np.float32))
        with pytest.raises(ShapeError, match="not multiples of 4"):
            backend.run_uint8(np.zeros((1, 34, 32, 3), np.uint8))
    assert not cuda.device and not cuda.host and not cuda.streams and not cuda.double_frees


def test_uint8_engine_serves_the_float_contract_exactly_for_frames(tmp_path, cuda) -> None:
    """bench, translate and the export gate call backends with float32 batches made from uint8 frames: those
    round to the same frames, and the uint8 output comes back in the card's range; flagged frames are NaN."""
    from cyclegan_deploy.frames import to_model

    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 40, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = 9
    with load_backend(_uint8_engine(tmp_path)) as backend:
        y = backend(to_model(frames))
        np.testing.assert_array_equal(y, to_model(255 - frames))
        frames[0, 0, 0, 0] = 7
        y = backend(to_model(frames))
        assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()


def test_float_engine_refuses_uint8_frames_with_the_fix(tmp_path, cuda) -> None:
    with load_backend(_fake_engine(tmp_path)) as backend:
        assert not backend.uint8_io
        with pytest.raises(ConfigError, match="--engine-io uint8"):
            backend.run_uint8(np.zeros((1, 32, 32, 3), np.uint8))
