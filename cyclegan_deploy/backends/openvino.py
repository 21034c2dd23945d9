"""OpenVINO backend (CPU): reads .onnx or .xml IR; inference precision is explicit and reported.

OpenVINO's CPU default is bf16 on AMX/AVX512-BF16 CPUs (several times faster, ~49 dB vs fp32) and f32
elsewhere, and it quietly runs f32 when bf16 is asked on a CPU without bf16 support. So we always set
INFERENCE_PRECISION_HINT (unless "auto"), read back what the compiled model chose, and refuse a mismatch.
Static shapes are much faster than dynamic ones: each new input shape gets its own reshaped, compiled model
(small LRU cache; the video path uses one shape).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.backends.base import (
    check_batch,
    fallback_meta,
    onnx_metadata,
    physical_cores,
    read_sidecar,
    reject_options,
)
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.metadata import CARD_KEY, ModelMeta

OV_PRECISION = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16", "auto": "auto"}
CACHE_SHAPES = 4  # a video uses one shape; bench walks a few sizes and batch sizes


def _import_ov() -> Any:
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError(f"OpenVINO is not installed ({e}); pip install openvino") from e
    return ov


def _read_meta(path: Path, model: Any) -> ModelMeta:
    if path.suffix.lower() == ".onnx":
        return ModelMeta.from_props(onnx_metadata(path)) or fallback_meta(path, "no cgdeploy model card")
    meta = read_sidecar(path)
    if meta is None and model.has_rt_info([CARD_KEY]):  # IR written with the card in its rt_info
        meta = ModelMeta.from_json(str(model.get_rt_info([CARD_KEY]).astype(str)))
    return meta or fallback_meta(path, f"no {path.name}.json sidecar")


class OpenVinoBackend:
    def __init__(self, path: str | Path, device: str = "auto", precision: str | None = None,
                 threads: int | None = None, num_streams: int | None = None,
                 performance_hint: str = "LATENCY", **other: Any) -> None:
        reject_options("openvino", other)
        if device not in ("auto", "cpu"):
            raise BackendUnavailableError(f"the OpenVINO backend runs on CPU only, not {device!r}; use --device cpu "
                                          "or the onnxruntime/tensorrt backend for NVIDIA GPUs")
        asked = OV_PRECISION.get((precision or "f32").lower())
        if asked is None:
            raise ConfigError(f"OpenVINO precision {precision!r} unknown; use f32, bf16, f16 or auto")
        ov = _import_ov()
        self.path = Path(path)
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with long C++ traces
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{self.path}: OpenVINO cannot read this model ({first}); re-export it") from e
        self.meta = _read_meta(self.path, self._model)
        self.threads = threads or physical_cores()
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint.upper(),
                                        "INFERENCE_NUM_THREADS": self.threads}
        if num_streams is not None:
            self._config["NUM_STREAMS"] = str(num_streams)
        if asked != "auto":
            self._config["INFERENCE_PRECISION_HINT"] = asked
        self._asked = asked
        self._input = self._model.inputs[0].get_any_name()
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.device = "cpu"
        # compile once now at the training size, so precision problems surface at load time, not mid-video
        size = max(self.meta.multiple, self.meta.train_size // self.meta.multiple * self.meta.multiple)
        self.precision = self._request((1, self.meta.input_nc, size, size))[1]
        self.name = f"openvino-{self.precision}"

    def _request(self, shape: tuple[int, ...]) -> tuple[Any, str]:
        hit = self._compiled.get(shape)
        if hit is not None:
            self._compiled.move_to_end(shape)
            return hit
        self._model.reshape({self._input: list(shape)})
        try:
            compiled = self._core.compile_model(self._model, "CPU", self._config)
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{self.path}: OpenVINO failed to compile for input {shape} ({first})") from e
        chosen = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if self._asked != "auto" and chosen != self._asked:
            cpu = self._core.get_property("CPU", "FULL_DEVICE_NAME")
            raise BackendUnavailableError(
                f"OpenVINO was asked for {self._asked} but chose {chosen} on this CPU ({cpu}): its CPU plugin runs "
                "bf16 only with AVX512-BF16/AMX and f16 only with AMX-FP16. Use --precision f32, or auto to take "
                "what OpenVINO picks (shown in the backend name)")
        entry = (compiled.create_infer_request(), chosen)
        self._compiled[shape] = entry
        while len(self._compiled) > CACHE_SHAPES:
            self._compiled.popitem(last=False)
        return entry

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = check_batch(batch, self.meta, self.name)
        request, _ = self._request(tuple(x.shape))
        request.infer({0: x})
        # the output tensor's memory belongs to the request and is overwritten by the next call: copy it
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def close(self) -> None:
        self._compiled.clear()
