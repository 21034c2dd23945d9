"""OpenVINO backend (CPU): reads .onnx or .xml IR; inference precision is explicit and reported.

OpenVINO's CPU default is bf16 on AMX/AVX512-BF16 CPUs (several times faster, ~49 dB vs fp32) and f32
elsewhere, and it quietly runs f32 when bf16 is asked on a CPU without bf16 support. So we always set
INFERENCE_PRECISION_HINT (unless "auto"), read back what the compiled model chose, and refuse a mismatch.
`precision`/`name` use OpenVINO's own names (f32, bf16, f16), as its hint does.
Static shapes are much faster than dynamic ones: each new input shape gets its own reshaped, compiled model
(small LRU cache; the video path uses one shape).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.artifacts import read_card
from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, try_import
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.machine import physical_cores
from cyclegan_deploy.metadata import OPENVINO_NAMES, canonical_precision

CACHE_SHAPES = 4  # a video uses one shape; bench walks a few sizes and batch sizes


@dataclass
class OpenVinoOptions(BackendOptions):
    threads: int | None = None  # INFERENCE_NUM_THREADS (default: physical cores)
    num_streams: int | None = None  # parallel infer requests (THROUGHPUT mode); None: OpenVINO's choice
    performance_hint: str = "LATENCY"


def _import_ov() -> Any:
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError(f"OpenVINO is not installed ({e}); pip install openvino") from e
    return ov


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


class OpenVinoBackend(Backend):
    def __init__(self, path: str | Path, device: str = "auto", precision: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        opts = OpenVinoOptions.from_options("openvino", options or {})
        if device not in ("auto", "cpu"):
            raise BackendUnavailableError(f"the OpenVINO backend runs on CPU only, not {device!r}; use --device cpu "
                                          "or the onnxruntime/tensorrt backend for NVIDIA GPUs")
        chosen = canonical_precision(precision or "fp32", tuple(OPENVINO_NAMES), "OpenVINO precision", auto=True)
        asked = "auto" if chosen == "auto" else OPENVINO_NAMES[chosen]
        ov = _import_ov()
        self.path = Path(path)
        self.meta = read_card(self.path)
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with long C++ traces
            raise ConfigError(f"{self.path}: OpenVINO cannot read this model ({_first_line(e)}); re-export it") from e
        self.threads = opts.threads or physical_cores()
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": opts.performance_hint.upper(),
                                        "INFERENCE_NUM_THREADS": self.threads}
        if opts.num_streams is not None:
            self._config["NUM_STREAMS"] = str(opts.num_streams)
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
            raise ConfigError(f"{self.path}: OpenVINO failed to compile for input {shape} ({_first_line(e)})") from e
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

    def _run(self, batch: np.ndarray) -> np.ndarray:
        request, _ = self._request(tuple(batch.shape))
        request.infer({0: batch})
        # the output tensor's memory belongs to the request and is overwritten by the next call: copy it
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def close(self) -> None:
        self._compiled.clear()


def availability(variant: str = "") -> str:
    ov, err = try_import("openvino")
    return (err or UNAVAILABLE) if ov is None else str(ov.__version__).split("-")[0]
