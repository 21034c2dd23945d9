"""The Backend protocol and load_backend (dispatch by artifact and what is installed).

A backend maps float32 NCHW in [-1, 1] to the same. It does no resizing, padding or timing:
frames.py and bench.py do. Asking for CUDA/TensorRT and getting CPU raises BackendUnavailableError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cyclegan_deploy.metadata import ModelMeta


@runtime_checkable
class Backend(Protocol):
    name: str  # "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "openvino-f32", "torch-cpu"...
    meta: ModelMeta

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def load_backend(artifact: str | Path, backend: str = "auto", device: str = "auto", **options: Any) -> Backend:
    """Open `artifact` (.onnx, .plan, .xml, .pth/run dir) with `backend` (auto|onnxruntime|openvino|torch|tensorrt)."""
    raise NotImplementedError("filled in by the runtime stage")
