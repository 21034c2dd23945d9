"""The Backend base class: one validation of every batch, context-manager use, typed options.

A backend maps a float32 NCHW batch in the card's input range to float32 (N, C_out, scale*H, scale*W) in its
output range. It does no resizing, padding or timing: frames.py, video/ and bench/ do. Subclasses set
`name`, `meta`, `precision`, `device` (and `threads` on CPUs) and implement `_run` and `close`;
`__call__` checks the batch against the card once, for all of them. Asking for CUDA/TensorRT/bf16 and
getting something else raises BackendUnavailableError (no silent fallback).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from cyclegan_deploy.errors import ConfigError, ShapeError
from cyclegan_deploy.metadata import ModelMeta

UNAVAILABLE = "unavailable: "  # prefix of available_backends() values that are reasons, not versions


class Backend:
    name: str = "backend"  # what really runs: "onnxruntime-cpu", "openvino-bf16", "tensorrt", "torch-cuda"...
    meta: ModelMeta
    precision: str = "fp32"  # one of metadata.PRECISIONS (OpenVINO reports its own f32/bf16 names)
    device: str = "cpu"
    threads: int | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(check_batch(batch, self.meta, self.name))

    def _run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # True when the backend takes uint8 frames and gives uint8 frames back (run_uint8: pre/post-processing on
    # its device; torch on CUDA), which `video` then uses instead of the host-side float path
    uint8_io: bool = False
    # GPU backends: milliseconds the last call's model execution took on the device, between two CUDA events
    # on its stream (no host copies); None where nothing measures it (CPU backends, ONNX Runtime)
    device_ms: float | None = None

    # How many batches this backend usefully runs at once (OpenVINO THROUGHPUT mode: its optimal number of
    # infer requests); 1 for backends that run one synchronous call at a time.
    max_inflight: int = 1

    def run_many(self, batches: Iterable[np.ndarray], inflight: int | None = None) -> Iterator[np.ndarray]:
        """Outputs of `batches`, in order. Backends with an async queue override this to keep up to `inflight`
        (default max_inflight) batches running at once; the base runs them one by one. Either way `batches` is
        read lazily (at most inflight + 1 ahead of the outputs given back), every output is the caller's own
        array, a batch's error is raised at its turn, and closing the iterator early waits for the batches
        still running (video and image folders feed it from their queues)."""
        for batch in batches:
            yield self(batch)

    def run_uint8(self, rgb: np.ndarray) -> tuple[np.ndarray, bool]:
        """uint8_io backends: (N, H, W, C) uint8 frames padded to the multiple -> ((N, sH, sW, C) uint8, whether
        every output value was finite)."""
        raise NotImplementedError(f"{self.name} takes float32 batches only (uint8_io is False)")

    def run_uint8_many(self, batches: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
        """run_uint8 over `batches`, in order; a backend that can overlap copies with compute overrides it."""
        for rgb in batches:
            yield self.run_uint8(rgb)

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_batch(batch: np.ndarray, meta: ModelMeta, name: str) -> np.ndarray:
    """Validate the contract's input (float32 NCHW, channels, multiple); a contiguous float32 view or copy."""
    if batch.ndim != 4 or batch.shape[1] != meta.input_nc:
        raise ShapeError(f"{name}: expected a float32 (N,{meta.input_nc},H,W) batch, got {batch.shape}")
    h, w = batch.shape[2:]
    if h % meta.multiple or w % meta.multiple:
        raise ShapeError(f"{name}: {h}x{w} is not a multiple of {meta.multiple} ({meta.arch}); "
                         "pad with frames.pad_to_multiple first")
    return np.ascontiguousarray(batch, dtype=np.float32)


def check_frames(rgb: np.ndarray, meta: ModelMeta, name: str) -> np.ndarray:
    """Validate uint8 frames for `run_uint8` (N, H, W, C), already padded to the multiple; contiguous."""
    if rgb.ndim != 4 or rgb.shape[-1] != meta.input_nc or rgb.dtype != np.uint8:
        raise ShapeError(f"{name}: expected uint8 frames (N,H,W,{meta.input_nc}), got {rgb.dtype} {rgb.shape}")
    m = max(1, int(meta.multiple))
    if rgb.shape[1] % m or rgb.shape[2] % m:
        raise ShapeError(f"{name}: frames of {rgb.shape[1]}x{rgb.shape[2]} are not multiples of {m}; "
                         "pad them first (frames.pad_frames)")
    return np.ascontiguousarray(rgb)


@dataclass
class BackendOptions:
    """Base of each backend's typed options (subclasses declare the fields). from_options takes the loose
    keyword options that the CLI and bench specs pass: options meant for another backend are fine when unset
    (None/False), set ones are an error naming them (e.g. --threads for a GPU engine)."""

    @classmethod
    def from_options(cls: type[_O], backend: str, options: dict[str, Any]) -> _O:
        known = {f.name for f in fields(cls)}
        bad = {k: v for k, v in options.items() if k not in known and v not in (None, False)}
        if bad:
            raise ConfigError(f"backend {backend} does not take option(s) "
                              f"{', '.join(f'{k}={v!r}' for k, v in bad.items())}")
        return cls(**{k: v for k, v in options.items() if k in known})


_O = TypeVar("_O", bound=BackendOptions)


def try_import(module: str) -> tuple[Any, str | None]:
    """(module, None) or (None, "unavailable: import X failed (...)"), for each backend's `availability`."""
    try:
        return importlib.import_module(module), None
    except Exception as e:  # ImportError, or a broken install raising anything at import time
        return None, f"{UNAVAILABLE}import {module} failed ({type(e).__name__}: {str(e)[:120]})"
