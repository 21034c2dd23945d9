"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers, verified after the session exists.

ORT quietly drops a provider it cannot load (missing CUDA libraries, CPU-only build) and runs on CPU;
we compare session.get_providers() with what was asked and refuse instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.backends.base import check_batch, fallback_meta, physical_cores, reject_options
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.metadata import ModelMeta

PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
SHORT = {"cpu": "cpu", "cuda": "cuda", "tensorrt": "trt"}


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError(f"onnxruntime is not installed ({e}); pip install onnxruntime "
                                      "(or onnxruntime-gpu for CUDA/TensorRT, never both)") from e
    return ort


def _providers(device: str, path: Path, ort_options: dict[str, Any]) -> list[Any]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": int(ort_options.get("device_id", 0))})
    if device == "cuda":
        return [cuda, "CPUExecutionProvider"]
    # TensorRT EP builds an engine per shape on first use: cache it beside the model so reruns start fast
    cache = path.with_name(path.stem + ".ort_trt_cache")
    trt = ("TensorrtExecutionProvider", {
        "device_id": int(ort_options.get("device_id", 0)),
        "trt_fp16_enable": bool(ort_options.get("trt_fp16", False)),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
    })
    return [trt, cuda, "CPUExecutionProvider"]


class OrtBackend:
    """An onnxruntime InferenceSession on one provider; `name` says which one really runs."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 precision: str | None = None, io_binding: bool | None = None, spin: bool = True,
                 trt_fp16: bool = False, device_id: int = 0, **other: Any) -> None:
        reject_options("onnxruntime", other)
        if precision not in (None, "auto", "fp32", "f32"):
            raise ConfigError(f"onnxruntime runs the graph's own precision, not --precision {precision}; for FP16 "
                              "pass the g_*.fp16.onnx from `cgdeploy export --fp16`, for bf16 use --backend openvino")
        ort = _import_ort()
        self.path = Path(path)
        available = ort.get_available_providers()
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in available else "cpu"
            try:
                self._open(ort, device, threads, spin, {"device_id": device_id})
            except BackendUnavailableError:
                if device == "cpu":
                    raise
                device = "cpu"  # "auto" never promised CUDA; the name below says CPU
                self._open(ort, device, threads, spin, {})
        else:
            if device not in PROVIDER:
                raise ConfigError(f"onnxruntime device {device!r} unknown; use cpu, cuda or tensorrt")
            if PROVIDER[device] not in available:
                raise BackendUnavailableError(
                    f"{PROVIDER[device]} is not in this onnxruntime build (available: {', '.join(available)}); "
                    "install onnxruntime-gpu instead of onnxruntime (never both) with matching CUDA/cuDNN")
            self._open(ort, device, threads, spin, {"device_id": device_id, "trt_fp16": trt_fp16})
        self.device = device
        self.name = f"onnxruntime-{SHORT[device]}"
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta: ModelMeta = ModelMeta.from_props(props) or fallback_meta(self.path, "no cgdeploy model card")
        self.precision = self.meta.precision
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        # FP16 graphs exported with keep_io_types take float32; one without it takes float16
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.device_id = device_id
        self.io_binding = device != "cpu" and io_binding is not False

    def _open(self, ort: Any, device: str, threads: int | None, spin: bool, ort_options: dict[str, Any]) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # one conv at a time uses every core; inter-op parallelism only adds contention for this graph
        self.threads = threads or physical_cores()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        if not spin:  # spinning workers steal cycles from decode/encode threads in the video pipeline
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so,
                                                providers=_providers(device, self.path, ort_options))
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

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = check_batch(batch, self.meta, self.name).astype(self.input_dtype, copy=False)
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
