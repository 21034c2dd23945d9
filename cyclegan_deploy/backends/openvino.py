"""OpenVINO backend (CPU): reads .onnx (fp32, or the int8 QDQ graph) or .xml IR; reports what really ran.

OpenVINO's CPU default is bf16 on AMX/AVX512-BF16 CPUs and f32 elsewhere, it quietly runs f32 when bf16 is
asked on a CPU without it, and runs a QuantizeLinear/DequantizeLinear graph's convolutions in int8 only where
its int8 kernels apply. So the hint is set (unless "auto") and read back, and each compiled model's runtime
model is read: every convolution's `runtimePrecision` (u8/i8/bf16/f32) and kernel (`primitiveType`).
`precision`/`name` say what the convolutions ran (openvino-int8/-bf16/-f32), `kernels` sums them up, and a
request they did not honour (bf16, an int8 card) is refused. On an int8 graph the precision asked (default
f32) is that of the ops left in float. Each input shape gets its own reshaped, compiled model (static shapes
are much faster; small LRU cache). Narrow output convolutions are rewritten to their exact space-to-depth
form first (openvino_rewrite; `space_to_depth=False` turns it off). performance_hint="THROUGHPUT" (streams)
makes run_many keep OPTIMAL_NUMBER_OF_INFER_REQUESTS (or `inflight`) async requests running.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.artifacts import read_card
from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, check_batch, try_import
from cyclegan_deploy.backends.openvino_rewrite import space_to_depth_narrow_convs
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.machine import physical_cores
from cyclegan_deploy.metadata import OPENVINO_NAMES, canonical_precision

CACHE_SHAPES = 4  # a video uses one shape; bench walks a few sizes and batch sizes
INT8 = ("u8", "i8")  # runtimePrecision of a convolution running OpenVINO's int8 kernels
CONV_LAYERS = ("Convolution", "Deconvolution")  # runtime-model layerType of (transposed) convolutions


@dataclass
class OpenVinoOptions(BackendOptions):
    threads: int | None = None  # INFERENCE_NUM_THREADS (default: physical cores)
    num_streams: int | None = None  # parallel infer requests (THROUGHPUT mode); None: OpenVINO's choice
    performance_hint: str | None = None  # LATENCY (None) | THROUGHPUT (streams + async queue for run_many)
    inflight: int | None = None  # requests run_many keeps running; None: OPTIMAL_NUMBER_OF_INFER_REQUESTS
    space_to_depth: bool = True  # rewrite 3-channel output convs (openvino_rewrite; exact) before compiling


@dataclass
class _Compiled:
    model: Any  # ov.CompiledModel for one input shape
    request: Any  # its synchronous InferRequest


def chosen_hint(compiled: Any) -> str:
    """The INFERENCE_PRECISION_HINT a compiled model took (f32, bf16, f16)."""
    return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


@functools.lru_cache(maxsize=1)
def shared_core() -> Any:
    """The process's one ov.Core (thread-safe), kept to the end. Its CPU plugin points the creating thread's
    signal stack at a buffer of its own and restores it on the thread that destroys it: a Core freed by the
    garbage collector on another thread leaves that buffer dangling, and the next Ctrl-C crashes (SIGSEGV).
    One Core made once and never freed mid-run also loads the plugin once."""
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError(f"OpenVINO is not installed ({e}); pip install openvino") from e
    return ov.Core()


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


def _rt(op: Any, key: str) -> str:
    return str(op.get_rt_info()[key].astype(str)) if key in op.get_rt_info() else ""


def _convs(compiled: Any) -> list[Any]:
    return [op for op in compiled.get_runtime_model().get_ordered_ops() if _rt(op, "layerType") in CONV_LAYERS]


def executed_precisions(compiled: Any) -> dict[str, int]:
    """Convolutions of a compiled model per precision they run in (OpenVINO's names: u8, i8, bf16, f32...)."""
    return dict(Counter(_rt(op, "runtimePrecision") or "?" for op in _convs(compiled)))


def executed_kernels(compiled: Any) -> dict[str, int]:
    """Convolutions per kernel OpenVINO picked (primitiveType: brgconv_avx512_I8, jit_avx2_FP32...)."""
    return dict(Counter(_rt(op, "primitiveType") or "?" for op in _convs(compiled)))


def describe_execution(precisions: dict[str, int], kernels: dict[str, int]) -> str:
    """'10 convolutions: 9 u8, 1 i8; kernels brgconv_avx512_I8 x9, brgconv_avx512_i8 x1'."""
    ran = ", ".join(f"{n} {p}" for p, n in sorted(precisions.items(), key=lambda kv: -kv[1]))
    used = ", ".join(f"{k} x{n}" for k, n in sorted(kernels.items(), key=lambda kv: -kv[1]))
    return f"{sum(precisions.values())} convolutions: {ran or 'none'}; kernels {used or 'none'}"


def quantized_convs(model: Any) -> int:
    """Convolutions of an (uncompiled) ov.Model whose weights are int8 constants behind dequantization: what
    a QDQ ONNX graph's DequantizeLinear(weights) becomes (Constant i8 -> Convert -> Subtract/Multiply)."""
    count = 0
    for op in model.get_ordered_ops():
        node = op.input_value(1).get_node() if op.get_type_name() in ("Convolution", "ConvolutionBackpropData",
                                                                      "GroupConvolution") else None
        while node is not None and node.get_type_name() not in ("Constant", "FakeQuantize") and node.get_input_size():
            node = node.input_value(0).get_node()  # the dequantization chain: 2-4 nodes
        count += node is not None and (node.get_type_name() == "FakeQuantize"
                                       or node.get_output_element_type(0).get_type_name() in INT8)
    return count


def _output(request: Any) -> np.ndarray:
    """Output 0 of a finished request, copied: the request's memory is overwritten by its next inference."""
    return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def infer_async(work: Iterable[tuple[Any, dict[int, np.ndarray]]], jobs: int,
                collect: Callable[[Any], np.ndarray] = _output) -> Iterator[np.ndarray]:
    """Outputs of (compiled model, inputs) pairs, in input order, up to `jobs` inferences running at once: a pool
    of async requests per model (a new model drains it first), waited for in input order, so an inference's
    error is raised at its turn and memory stays at `jobs` batches; `collect` (default: a copy of output 0)
    reads a request before its reuse. Not AsyncInferQueue: its Python callback makes OpenVINO's threads take
    the GIL, and one doing so while the interpreter exits aborts the process ("terminate called without an
    active exception", OpenVINO 2026.4 under CPU load). Inputs are copied in (no Python objects held there)."""
    running: deque[Any] = deque()  # started requests, oldest first
    idle: list[Any] = []  # finished requests of the current model, for reuse
    current = None

    def finish() -> np.ndarray:
        running[0].wait()  # raises the inference's own error
        out = collect(running[0])
        idle.append(running.popleft())
        return out

    try:
        for compiled, inputs in work:
            if compiled is not current:
                while running:
                    yield finish()
                current, idle = compiled, []
            if len(running) >= jobs:
                yield finish()
            request = idle.pop() if idle else compiled.create_infer_request()
            request.start_async(inputs, share_inputs=False)
            running.append(request)
        while running:
            yield finish()
    finally:
        for request in running:  # stopped early: the requests end before their model goes
            with contextlib.suppress(Exception):  # the error being raised (or the stop) is what the caller sees
                request.wait()


class OpenVinoBackend(Backend):
    def __init__(self, path: str | Path, device: str = "auto", precision: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        opts = OpenVinoOptions.from_options("openvino", options or {})
        if device not in ("auto", "cpu"):
            raise BackendUnavailableError(f"the OpenVINO backend runs on CPU only, not {device!r}; use --device cpu "
                                          "or the onnxruntime/tensorrt backend for NVIDIA GPUs")
        chosen = canonical_precision(precision or "fp32", (*OPENVINO_NAMES, "int8"), "OpenVINO precision", auto=True)
        self._want_int8 = chosen == "int8"  # int8 is not a hint: the graph's Q/DQ decide, the float ops run f32
        self._asked = asked = "auto" if chosen == "auto" else OPENVINO_NAMES.get(chosen, "f32")
        if (hint := (opts.performance_hint or "LATENCY").upper()) not in ("LATENCY", "THROUGHPUT"):
            raise ConfigError(f"OpenVINO performance_hint {opts.performance_hint!r}: use LATENCY or THROUGHPUT")
        self.path = Path(path)
        self.meta = read_card(self.path)
        self._core = shared_core()
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with long C++ traces
            raise ConfigError(f"{self.path}: OpenVINO cannot read this model ({_first_line(e)}); re-export it") from e
        self._quantized = quantized_convs(self._model)
        # the output conv's 3 channels fill 3/16 of a vector; its space-to-depth form fills it (same sums)
        self.rewritten: list[str] = []
        self.rewrite_note = ""  # why the rewrite was not applied, when it failed
        if opts.space_to_depth:
            try:
                self.rewritten = space_to_depth_narrow_convs(self._model)
            except Exception as e:  # a graph shape it did not foresee: run the model as read, and say so
                self._model = self._core.read_model(str(self.path))  # the rewrite works in place
                self.rewrite_note = f"space-to-depth rewrite skipped ({_first_line(e)})"
                warnings.warn(f"{self.path}: {self.rewrite_note}; running the graph as exported", stacklevel=2)
        self.threads = opts.threads or physical_cores()
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": self.threads,
                                        **({} if asked == "auto" else {"INFERENCE_PRECISION_HINT": asked}),
                                        **({} if opts.num_streams is None else {"NUM_STREAMS": str(opts.num_streams)})}
        self._input = self._model.inputs[0].get_any_name()
        self._compiled: OrderedDict[tuple[int, ...], _Compiled] = OrderedDict()
        self.kernels = ""  # what the convolutions of the last compiled shape ran (describe_execution)
        # compile once now at the training size, so precision problems surface at load time, not mid-video
        size = max(self.meta.multiple, self.meta.train_size // self.meta.multiple * self.meta.multiple)
        first = self._request((1, self.meta.input_nc, size, size))
        # an int8 graph's float ops (output conv, norms) follow the hint: name a bf16 one, it is another variant
        float_ops = "-bf16" if self.precision == "int8" and chosen_hint(first.model) == "bf16" else ""
        self.name = f"openvino-{self.precision}{float_ops}"
        optimal, self.streams = (int(first.model.get_property(k)) for k in ("OPTIMAL_NUMBER_OF_INFER_REQUESTS",
                                                                            "NUM_STREAMS"))
        self.max_inflight = max(1, opts.inflight or (optimal if hint == "THROUGHPUT" else 1))

    def _request(self, shape: tuple[int, ...]) -> _Compiled:
        if (hit := self._compiled.get(shape)) is not None:
            self._compiled.move_to_end(shape)
            return hit
        self._model.reshape({self._input: list(shape)})
        try:
            compiled = self._core.compile_model(self._model, "CPU", self._config)
        except Exception as e:
            raise ConfigError(f"{self.path}: OpenVINO failed to compile for input {shape} ({_first_line(e)})") from e
        chosen = chosen_hint(compiled)
        if self._asked != "auto" and chosen != self._asked:
            raise self._refused(f"was asked for {self._asked} but chose {chosen}")
        self.precision = self._executed(compiled, chosen)
        entry = _Compiled(compiled, compiled.create_infer_request())
        self._compiled[shape] = entry
        while len(self._compiled) > CACHE_SHAPES:
            self._compiled.popitem(last=False)
        return entry

    def _executed(self, compiled: Any, chosen: str) -> str:
        """The precision the convolutions really ran; refuses an int8 card (or request) they did not honour and
        a float precision asked but not run."""
        ran, kernels = executed_precisions(compiled), executed_kernels(compiled)
        self.kernels = describe_execution(ran, kernels)
        int8 = sum(ran.get(p, 0) for p in INT8)
        if self.meta.precision == "int8" or self._want_int8:
            if not self._quantized:
                why = "the card says int8" if self.meta.precision == "int8" else "int8 was asked"
                raise BackendUnavailableError(
                    f"{self.path}: {why}, but the graph has no quantized convolutions (no QuantizeLinear/"
                    f"DequantizeLinear on their weights): OpenVINO ran {self.kernels}. Export one with `cgdeploy "
                    "export CKPT -o DIR --int8` and pass its g_*.int8.onnx")
            if not int8:
                raise self._refused(f"ran every convolution of this int8 graph in float ({self.kernels})",
                                    "Run the fp32 graph (g_*.onnx) instead; float execution is not labelled int8")
        if int8:  # a QDQ graph: int8 whatever its card says (a foreign export without ours)
            if int8 < self._quantized:
                self.kernels += f"; only {int8} of its {self._quantized} quantized convolutions run int8"
            return "int8"
        floats = {p: n for p, n in ran.items() if p not in INT8}
        executed = max(floats, key=lambda p: floats[p]) if floats else chosen
        if self._asked not in ("auto", executed):
            raise self._refused(f"was asked for {self._asked}, accepted it, but ran {self.kernels}")
        return executed

    def _refused(self, what: str, fix: str = "Use --precision f32, or auto to take what OpenVINO picks (shown "
                                                "in the backend name)") -> BackendUnavailableError:
        return BackendUnavailableError(
            f"{self.path}: OpenVINO {what} on this CPU ({self._core.get_property('CPU', 'FULL_DEVICE_NAME')}): its "
            "CPU plugin runs bf16 only with AVX512-BF16/AMX, f16 only with AMX-FP16 and int8 with AVX2 or better "
            f"(`cgdeploy doctor` shows which). {fix}")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        request = self._request(tuple(batch.shape)).request
        request.infer({0: batch})
        return _output(request)

    def run_many(self, batches: Iterable[np.ndarray], inflight: int | None = None) -> Iterator[np.ndarray]:
        """Outputs in order, up to `inflight` (default max_inflight) batches running at once (infer_async)."""
        jobs = max(1, inflight or self.max_inflight)
        if jobs == 1:
            yield from super().run_many(batches)
            return
        work = ((self._request(tuple(x.shape)).model, {0: x})
                for x in (check_batch(b, self.meta, self.name) for b in batches))
        yield from infer_async(work, jobs)

    def close(self) -> None:
        self._compiled.clear()


def availability(variant: str = "") -> str:
    ov, err = try_import("openvino")
    return (err or UNAVAILABLE) if ov is None else str(ov.__version__).split("-")[0]
