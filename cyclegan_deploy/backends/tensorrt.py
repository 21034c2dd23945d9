"""TensorRT engine backend (TensorRT 10.x/11.x tensor-name API + cuda-python runtime bindings).

The engine is refused unless its sidecar (`<plan>.json`, written by `cgdeploy export --engine`; format and
check in engine_sidecar.py) matches the installed TensorRT and this GPU: a mismatched engine either fails
to deserialize with a cryptic log line or runs with tactics tuned for another chip. Buffers: device memory
(cudaMalloc) grown when shapes grow, pinned host staging buffers, one stream; H2D copy, execute_async_v3
and D2H copy are queued back to back and synchronised once. cudaSetDevice is per host thread, and the video
pipeline calls the backend from its own inference thread: every call selects the device first. The stream
reaches TensorRT as its native handle (cuda.bindings.utils.get_cuda_native_handle; cuda-bindings 12.9.1/13
deprecate int(stream)). An engine built with `--engine-io uint8` (export/uint8_io.py) takes uint8 NHWC frames
and gives uint8 frames plus per-frame non-finite flags (`run_uint8`, which `video` uses: a quarter of the
bytes each way, normalising on the GPU); its float32 `__call__` rounds batches to uint8 first, exact for
batches made from uint8 images. Helpers (checks, buffers) in cuda_buffers.py. close() is idempotent and
also runs from `with` and, as a last resort, __del__, so a backend dropped without close() still frees its
device and pinned memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cyclegan_deploy import engine_sidecar
from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, check_frames, try_import
from cyclegan_deploy.backends.cuda_buffers import Buffer, check, native_handle
from cyclegan_deploy.backends.cuda_buffers import cuda_runtime as _cuda_runtime  # tests replace it
from cyclegan_deploy.engine_sidecar import FRAMES_IN, FRAMES_OUT, NONFINITE, UINT8_OUTPUTS
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError, EngineMismatchError, ShapeError
from cyclegan_deploy.frames import from_model, to_model
from cyclegan_deploy.metadata import PRECISION_ALIASES, canonical_precision

if TYPE_CHECKING:
    import tensorrt as trt

REBUILD = "rebuild it here with `cgdeploy export CHECKPOINT -o OUT_DIR --engine`"


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


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
        check(cudart.cudaSetDevice(self.device_id), "cudaSetDevice", cudart)
        self._in, self._outs = Buffer(cudart), {}
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
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        # an engine built with --engine-io uint8 takes uint8 NHWC frames (export/uint8_io.py)
        self.uint8_io = len(inputs) == 1 and self._dtypes[inputs[0]] == np.uint8
        if len(inputs) != 1 or (sorted(outputs) != sorted(UINT8_OUTPUTS) if self.uint8_io else len(outputs) != 1):
            want = f"{FRAMES_IN} -> {', '.join(UINT8_OUTPUTS)}" if self.uint8_io else "one input and one output"
            raise ConfigError(f"{self.path}: expected {want} tensors, got {inputs} -> {outputs}; {REBUILD}")
        self.input_name, self.output_name = inputs[0], FRAMES_OUT if self.uint8_io else outputs[0]
        self.input_dtype, self.output_dtype = self._dtypes[self.input_name], self._dtypes[self.output_name]
        self._outs = {n: Buffer(cudart) for n in outputs}
        lo, opt, hi = (_dims(d) for d in engine.get_tensor_profile_shape(self.input_name, 0))
        if self.uint8_io:  # NHWC frames: the profile in the NCHW terms of the model's input
            lo, opt, hi = ((s[0], s[3], s[1], s[2]) for s in (lo, opt, hi))
        self.profile = engine_sidecar.Profile(self.input_name, lo, opt, hi)  # type: ignore[arg-type]
        self.stream = check(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart)
        self._stream_handle = native_handle(self.stream)
        # around execute_async_v3 on the stream: device_ms, the engine's own time (bench reports it)
        self._events = [check(cudart.cudaEventCreate(), "cudaEventCreate", cudart) for _ in range(2)]

    def _check_profile(self, shape: tuple[int, ...]) -> None:
        lo, hi = self.profile.min, self.profile.max
        if not self.profile.covers(shape):
            fmt = "x".join
            raise ShapeError(
                f"{self.path}: input {fmt(map(str, shape))} (NxCxHxW) is outside the engine's optimization profile "
                f"{fmt(map(str, lo))} .. {fmt(map(str, hi))}; rebuild with `cgdeploy export --engine "
                "--min-shape/--opt-shape/--max-shape` covering it, or resize/batch the input to fit")

    def _execute(self, x: np.ndarray, nchw: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Every output of the engine for the host array `x` (whose frames are `nchw`), as the caller's copies:
        H2D copy, execution between two events, D2H copies, one synchronisation."""
        cudart = self._cudart
        check(cudart.cudaSetDevice(self.device_id), "cudaSetDevice", cudart)  # this thread may not be __init__'s
        self._check_profile(nchw)
        shape = tuple(int(s) for s in x.shape)
        if not self.context.set_input_shape(self.input_name, shape):
            raise ShapeError(f"{self.path}: TensorRT rejected input shape {shape}; profile {self.profile.as_dict()}")
        shapes = {n: _dims(self.context.get_tensor_shape(n)) for n in self._outs} | {self.input_name: shape}
        sizes = {n: int(np.prod(s)) * self._dtypes[n].itemsize for n, s in shapes.items()}
        buffers = {self.input_name: self._in, **self._outs}
        for name, buf in buffers.items():
            buf.ensure(sizes[name])
            if not self.context.set_tensor_address(name, buf.device):  # unknown name or address not 256-aligned
                raise BackendUnavailableError(f"{self.path}: TensorRT refused device address {buf.device:#x} for "
                                              f"tensor {name!r} (see the log above); {REBUILD}")
        np.copyto(self._in.host_array(shape, self.input_dtype), x, casting="same_kind")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        in_bytes = sizes[self.input_name]
        check(cudart.cudaMemcpyAsync(self._in.device, self._in.host, in_bytes, h2d, self.stream), "H2D copy", cudart)
        start, end = self._events
        check(cudart.cudaEventRecord(start, self.stream), "cudaEventRecord", cudart)
        if not self.context.execute_async_v3(self._stream_handle):
            raise BackendUnavailableError(f"{self.path}: TensorRT execution failed (see the log above)")
        check(cudart.cudaEventRecord(end, self.stream), "cudaEventRecord", cudart)
        for name, buf in self._outs.items():
            check(cudart.cudaMemcpyAsync(buf.host, buf.device, sizes[name], d2h, self.stream), "D2H copy", cudart)
        check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize", cudart)
        self.device_ms = float(check(cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime", cudart))
        # the pinned buffers are reused by the next call: hand out copies
        return {n: np.array(b.host_array(shapes[n], self._dtypes[n]), copy=True) for n, b in self._outs.items()}

    def _run(self, x: np.ndarray) -> np.ndarray:
        if not self.uint8_io:
            return np.asarray(self._execute(x, x.shape)[self.output_name], dtype=np.float32)
        # uint8 frames in and out: batches in the card's range are rounded to uint8 first, which is exact for
        # every batch made from uint8 images (all of cgdeploy's), and the uint8 output mapped back
        frames, finite = self._frames(from_model(x, self.meta.input_range))
        y = to_model(frames, self.meta.output_range)
        y[~finite] = np.nan  # the frames the engine flagged: NaN, as the float path would have given
        return y

    def _frames(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 NHWC output frames, per-frame all-finite flags) of a uint8-I/O engine."""
        n, h, w, c = rgb.shape
        outs = self._execute(rgb, (n, c, h, w))
        return outs[FRAMES_OUT], outs[NONFINITE].reshape(n) == 0

    def run_uint8(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """(N, H, W, C) uint8 frames padded to the model's multiple -> ((N, sH, sW, C) uint8, all finite); only
        for engines built with `--engine-io uint8`."""
        if not self.uint8_io:
            raise ConfigError(f"{self.path}: this engine takes float32 batches; for uint8 frames build one with "
                              "`cgdeploy export CHECKPOINT -o OUT_DIR --engine --engine-io uint8`")
        out, finite = self._frames(check_frames(rgb, self.meta, self.name))
        return out, bool(finite.all())

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
        for buf in (getattr(self, "_in", None), *getattr(self, "_outs", {}).values()):
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
