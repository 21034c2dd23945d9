"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers, verified after the session exists.

ORT quietly drops a provider it cannot load (missing CUDA libraries, CPU-only build) and runs on CPU;
we compare session.get_providers() with what was asked and refuse instead. The precision is the graph's
own (its card): an FP16 or INT8 graph is a different .onnx file, not an option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.artifacts import read_card
from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, try_import
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.machine import physical_cores
from cyclegan_deploy.metadata import canonical_precision

PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
SHORT = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "trt"}


@dataclass
class OrtOptions(BackendOptions):
    threads: int | None = None  # intra-op threads (default: physical cores)
    io_binding: bool | None = None  # GPU sessions: output left on the device by ORT, copied once (default on)
    spin: bool = True  # spinning workers steal cycles from decode/encode threads in the video pipeline
    device_id: int = 0


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError(f"onnxruntime is not installed ({e}); pip install onnxruntime "
                                      "(or onnxruntime-gpu for CUDA/TensorRT, never both)") from e
    return ort


def _providers(device: str, path: Path, device_id: int) -> list[Any]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if device == "cuda":
        return [cuda, "CPUExecutionProvider"]
    # TensorRT EP builds an engine per shape on first use: cache it beside the model so reruns start fast
    cache = path.with_name(path.stem + ".ort_trt_cache")
    trt = ("TensorrtExecutionProvider", {"device_id": device_id, "trt_engine_cache_enable": True,
                                         "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True})
    return [trt, cuda, "CPUExecutionProvider"]


class OrtBackend(Backend):
    """An onnxruntime InferenceSession on one provider; `name` says which one really runs."""

    def __init__(self, path: str | Path, device: str = "auto", precision: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        opts = OrtOptions.from_options("onnxruntime", options or {})
        self.path = Path(path)
        self.meta = read_card(self.path)
        self.precision = self.meta.precision
        if precision is not None and canonical_precision(precision, auto=True) not in ("auto", self.precision):
            raise ConfigError(f"onnxruntime runs the graph's own precision ({self.precision}), not --precision "
                              f"{precision}; for FP16 pass the g_*.fp16.onnx from `cgdeploy export --fp16`, for bf16 "
                              "use --backend openvino")
        ort = _import_ort()
        available = ort.get_available_providers()
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
            try:
                self._open(ort, device, opts)
            except BackendUnavailableError:
                if device == "cpu":
                    raise
                device = "cpu"  # "auto" never promised CUDA; the name below says CPU
                self._open(ort, device, opts)
        else:
            if device not in PROVIDER:
                raise ConfigError(f"onnxruntime device {device!r} unknown; use cpu, cuda or tensorrt")
            if PROVIDER[device] not in available:
                raise BackendUnavailableError(
                    f"{PROVIDER[device]} is not in this onnxruntime build (available: {', '.join(available)}); "
                    "install onnxruntime-gpu instead of onnxruntime (never both) with matching CUDA/cuDNN")
            self._open(ort, device, opts)
        self.device = device
        self.name = f"onnxruntime-{SHORT[device]}"
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        # FP16 graphs exported with keep_io_types take float32; one without it takes float16
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.device_id = opts.device_id
        self.io_binding = device != "cpu" and opts.io_binding is not False

    def _open(self, ort: Any, device: str, opts: OrtOptions) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # one conv at a time uses every core; inter-op parallelism only adds contention for this graph
        self.threads = opts.threads or physical_cores()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        if not opts.spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so,
                                                providers=_providers(device, self.path, opts.device_id))
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            text = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if device != "cpu" and ("CUDA" in text or "TensorRT" in text or "cuda" in text):
                raise BackendUnavailableError(f"{self.path}: {PROVIDER[device]} failed to start ({text})") from e
            raise ConfigError(f"{self.path}: onnxruntime cannot load this model ({text}); "
                              "re-export it with `cgdeploy export`") from e
        got = self.session.get_providers()
        if PROVIDER[device] not in got:
            raise BackendUnavailableError(
                f"{self.path}: asked for {PROVIDER[device]} but onnxruntime started only {', '.join(got)} "
                "(usually missing CUDA/cuDNN/TensorRT libraries for this onnxruntime-gpu build); "
                "fix the install or use --device cpu")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(self.input_dtype, copy=False)
        if not self.io_binding:
            y = self.session.run([self.output_name], {self.input_name: x})[0]
            return np.asarray(y, dtype=np.float32)
        # output allocated on the GPU by ORT and copied once; avoids ORT's extra staging copy for outputs
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        binding.bind_output(self.output_name, "cuda", self.device_id)
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]  # releases the provider's device memory


def availability(variant: str = "") -> str:
    """Version, or "unavailable: ..." when onnxruntime or the variant's provider (cpu/cuda/trt) is missing."""
    ort, err = try_import("onnxruntime")
    if ort is None:
        return err or UNAVAILABLE
    provider = PROVIDER[{"": "cpu", "trt": "tensorrt"}.get(variant, variant)]
    listed = ort.get_available_providers()
    return str(ort.__version__) if provider in listed else (
        f"{UNAVAILABLE}{provider} not in this onnxruntime build ({', '.join(listed)}); "
        "install onnxruntime-gpu instead of onnxruntime (never both)")
