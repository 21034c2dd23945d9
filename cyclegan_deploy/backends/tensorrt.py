"""TensorRT engine backend (TensorRT 10.x/11.x tensor-name API + cuda-python runtime bindings).

The engine is refused unless its sidecar (`<plan>.json`, written by `cgdeploy export --engine`; format and
check in engine_sidecar.py) matches the installed TensorRT and this GPU: a mismatched engine either fails
to deserialize with a cryptic log line or runs with tactics tuned for another chip. Buffers: device memory
(cudaMalloc) grown when shapes grow, pinned host staging buffers, one stream; H2D copy, execute_async_v3
and D2H copy are queued back to back and synchronised once. cudaSetDevice is per host thread, and the video
pipeline calls the backend from its own inference thread: every call selects the device first. The stream
reaches TensorRT as its native handle (cuda.bindings.utils.get_cuda_native_handle; cuda-bindings 12.9.1/13
deprecate int(stream)). close() is idempotent and also runs from `with` and, as a last resort, __del__, so a
backend dropped without close() still frees its device and pinned memory.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cyclegan_deploy import engine_sidecar
from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, try_import
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError, ShapeError
from cyclegan_deploy.metadata import PRECISION_ALIASES, canonical_precision

if TYPE_CHECKING:
    import tensorrt as trt

REBUILD = "rebuild it here with `cgdeploy export CHECKPOINT -o OUT_DIR --engine`"


def _cuda_runtime() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise BackendUnavailableError(f"cuda-python is not installed ({e}); pip install cuda-python") from e
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (error, *values): raise on error, unwrap the value."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        cudart = _cuda_runtime()
        _, text = cudart.cudaGetErrorString(err)
        text = text.decode() if isinstance(text, bytes) else text
        raise BackendUnavailableError(f"CUDA {what} failed: {err} ({text})")
    return values[0] if len(values) == 1 else tuple(values)


def _native_handle(obj: Any) -> int:
    """The address a cuda-python handle (a cudaStream_t) wraps, as the int TensorRT's `stream_handle` takes.
    cuda-bindings 12.9.1 and 13.x deprecate int(obj) for get_cuda_native_handle; older 12.x only have int()."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


class _Buffer:
    """A device buffer and its pinned host twin, regrown (never shrunk) when a bigger shape arrives. Holds the
    runtime module it allocated with, so freeing needs no import (it may run from __del__ at exit)."""

    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart
        self.nbytes, self.device, self.host = 0, 0, 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        # cudaMalloc returns a plain int address in cuda.bindings.runtime (no handle object to unwrap)
        self.device = int(_check(self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
        self.host = int(_check(self.cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        self.nbytes = nbytes

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        count = int(np.prod(shape)) * dtype.itemsize
        raw = (ctypes.c_byte * count).from_address(self.host)  # a view on the pinned memory, no copy
        return np.frombuffer(memoryview(raw).cast("B"), dtype=dtype).reshape(shape)

    def free(self) -> None:
        device, host, self.nbytes, self.device, self.host = self.device, self.host, 0, 0, 0  # never freed twice
        if device:
            self.cudart.cudaFree(device)
        if host:
            self.cudart.cudaFreeHost(host)


@dataclass
class TensorRTOptions(BackendOptions):
    device_id: int = 0


class TensorRTBackend(Backend):
    def __init__(self, path: str | Path, device: str = "cuda", precision: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        opts = TensorRTOptions.from_options("tensorrt", options or {})
        self.path = Path(path)
        if device == "cpu":
            raise ConfigError(f"{self.path}: a TensorRT engine runs on the GPU only; use the .onnx with --device cpu")
        try:
            import tensorrt as trt
        except ImportError as e:
            raise BackendUnavailableError(f"TensorRT is not installed ({e}); install tensorrt on a machine with "
                                          "an NVIDIA GPU, or run the .onnx with --backend onnxruntime") from e
        if not hasattr(trt, "Runtime"):  # tensorrt-stubs alone makes `tensorrt` an empty namespace package
            raise BackendUnavailableError("TensorRT is not installed (only its type stubs are); install tensorrt "
                                          "on a machine with an NVIDIA GPU, or use --backend onnxruntime")
        sidecar = engine_sidecar.read_engine_sidecar(self.path)
        # one vocabulary on both sides: "FP16"/"half" asked of an engine whose sidecar says fp16 is a match
        built = PRECISION_ALIASES.get(str(sidecar.precision).strip().lower(), sidecar.precision)
        if precision is not None and canonical_precision(precision, auto=True) not in ("auto", built):
            raise ConfigError(f"{self.path}: the engine's precision is fixed at build time ({built}), "
                              f"not {precision}; build another engine with `cgdeploy export`")
        self.device_id = opts.device_id
        gpu, capability = engine_sidecar.gpu_info(self.device_id)
        engine_sidecar.check_engine_compat(sidecar, str(trt.__version__), gpu, capability, engine=str(self.path))
        cudart = self._cudart = _cuda_runtime()
        _check(cudart.cudaSetDevice(self.device_id), "cudaSetDevice")
        self._in, self._out = _Buffer(cudart), _Buffer(cudart)
        self.meta = sidecar.meta
        self.precision = built
        self.name, self.device, self.gpu = "tensorrt", "cuda", gpu
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EngineMismatchError(f"{self.path}: TensorRT {trt.__version__} could not deserialize the engine "
                                      f"(see the log above); {REBUILD}")
        self.engine: trt.ICudaEngine = engine
        self.context: trt.IExecutionContext = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ConfigError(f"{self.path}: expected one input and one output tensor, got {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))
        lo, opt, hi = (_dims(d) for d in engine.get_tensor_profile_shape(self.input_name, 0))
        self.profile = engine_sidecar.Profile(self.input_name, lo, opt, hi)  # type: ignore[arg-type]
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._stream_handle = _native_handle(self.stream)
        # around execute_async_v3 on the stream: device_ms, the engine's own time (bench reports it)
        self._events = [_check(cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(2)]

    def _check_profile(self, shape: tuple[int, ...]) -> None:
        lo, hi = self.profile.min, self.profile.max
        if not self.profile.covers(shape):
            fmt = "x".join
            raise ShapeError(
                f"{self.path}: input {fmt(map(str, shape))} (NxCxHxW) is outside the engine's optimization profile "
                f"{fmt(map(str, lo))} .. {fmt(map(str, hi))}; rebuild with `cgdeploy export --engine "
                "--min-shape/--opt-shape/--max-shape` covering it, or resize/batch the input to fit")

    def _run(self, x: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        _check(cudart.cudaSetDevice(self.device_id), "cudaSetDevice")  # this thread may not be __init__'s
        shape = tuple(int(s) for s in x.shape)
        self._check_profile(shape)
        if not self.context.set_input_shape(self.input_name, shape):
            raise ShapeError(f"{self.path}: TensorRT rejected input shape {shape}; profile {self.profile.as_dict()}")
        out_shape = _dims(self.context.get_tensor_shape(self.output_name))
        in_bytes = x.size * self.input_dtype.itemsize
        out_bytes = int(np.prod(out_shape)) * self.output_dtype.itemsize
        self._in.ensure(in_bytes)
        self._out.ensure(out_bytes)
        np.copyto(self._in.host_array(shape, self.input_dtype), x, casting="same_kind")
        for name, buf in ((self.input_name, self._in), (self.output_name, self._out)):
            if not self.context.set_tensor_address(name, buf.device):  # unknown name or address not 256-aligned
                raise BackendUnavailableError(f"{self.path}: TensorRT refused device address {buf.device:#x} for "
                                              f"tensor {name!r} (see the log above); {REBUILD}")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(self._in.device, self._in.host, in_bytes, h2d, self.stream), "H2D copy")
        start, end = self._events
        _check(cudart.cudaEventRecord(start, self.stream), "cudaEventRecord")
        if not self.context.execute_async_v3(self._stream_handle):
            raise BackendUnavailableError(f"{self.path}: TensorRT execution failed (see the log above)")
        _check(cudart.cudaEventRecord(end, self.stream), "cudaEventRecord")
        _check(cudart.cudaMemcpyAsync(self._out.host, self._out.device, out_bytes, d2h, self.stream), "D2H copy")
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        self.device_ms = float(_check(cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))
        # the pinned buffer is reused by the next call: hand out a copy
        return np.array(self._out.host_array(out_shape, self.output_dtype), dtype=np.float32, copy=True)

    def close(self) -> None:
        """Release everything; safe twice, on a backend whose __init__ failed part-way, and from __del__."""
        self.context = None  # type: ignore[assignment]  # before the engine, the engine before the runtime
        self.engine = None  # type: ignore[assignment]
        self._runtime = None  # type: ignore[assignment]
        cudart, stream, self.stream = getattr(self, "_cudart", None), getattr(self, "stream", None), None
        self._cudart = None  # a second close() (or __del__ after close()) touches nothing
        if cudart is None:
            return
        # a thread that never used CUDA would otherwise create a context on GPU 0 just to free memory
        cudart.cudaSetDevice(self.device_id)
        for buf in (getattr(self, "_in", None), getattr(self, "_out", None)):
            if buf is not None:
                buf.free()
        for event in getattr(self, "_events", []):
            cudart.cudaEventDestroy(event)
        self._events = []
        if stream is not None:
            cudart.cudaStreamDestroy(stream)

    def __del__(self) -> None:
        # the last resort for a backend dropped without close() or `with`; at interpreter exit the CUDA
        # runtime or module globals (contextlib included, hence no suppress()) may be gone: never raise
        try:
            self.close()
        except Exception:
            pass


def availability(variant: str = "") -> str:
    trt, err = try_import("tensorrt")
    # tensorrt-stubs alone makes `import tensorrt` succeed as an empty namespace package
    if trt is None or not hasattr(trt, "Runtime"):
        return err or f"{UNAVAILABLE}TensorRT is not installed (only type stubs, if any); " \
                      "install tensorrt on a machine with an NVIDIA GPU"
    _, cuda_err = try_import("cuda.bindings.runtime")
    return f"{UNAVAILABLE}cuda-python is missing ({cuda_err}); pip install cuda-python" if cuda_err \
        else str(trt.__version__)
