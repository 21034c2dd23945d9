"""What every run checks on the model it was given and on what the model returns (video, translate, bench):
an RGB 3 -> 3 generator card, the output shape for the card's scale, NaN/Inf, one-line failures naming the
model file, and the host memory a frame size costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.errors import CgDeployError, ConfigError, ModelError, ShapeError
from cyclegan_deploy.metadata import ModelMeta


def model_label(backend: Any, path: str | Path | None = None) -> str:
    """The model file for messages: the artifact path the command opened, else what the backend knows."""
    found = path or getattr(backend, "path", None) or getattr(backend.meta, "source", "")
    return str(found or backend.name)


def check_generator(meta: ModelMeta, label: str, command: str) -> None:
    """Refuse a card that does not describe an RGB image-to-image model (grey, 4-channel, classifiers)."""
    if meta.input_nc != 3 or meta.output_nc != 3:
        raise ConfigError(f"{label}: not a 3-channel image generator (it maps {meta.input_nc} to {meta.output_nc} "
                          f"channels; {command} needs 3 -> 3); pass an RGB CycleGAN/pix2pix generator")


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def run_failure(e: BaseException, label: str, name: str, shape: Sequence[int], good_calls: int) -> CgDeployError:
    """A backend's own (untyped) exception as one line naming the model. On the first call the model itself is
    the suspect (a classifier, a 2-input graph); later, or when memory ran out, the size and --batch are."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0][:240]
    if isinstance(e, MemoryError) or any(w in text.lower() for w in ("out of memory", "alloc", "memory")):
        fix = "use a smaller --batch" if shape[0] > 1 else "use --size HxW to shrink the frames"
        return ShapeError(f"{label}: {name} ran out of memory on a {shape_text(shape)} batch ({text}); {fix}")
    if good_calls == 0:
        return ShapeError(f"{label}: not a 3-channel image generator ({name} failed on a {shape_text(shape)} "
                          f"batch: {text}); pass a CycleGAN/pix2pix generator exported by `cgdeploy export`")
    return ShapeError(f"{label}: {name} failed on a {shape_text(shape)} batch after {good_calls} good ones "
                      f"({text})")


def check_output(out: np.ndarray, x_shape: Sequence[int], meta: ModelMeta, label: str, name: str) -> None:
    """What a generator must return for an (N, 3, H, W) batch: (N, 3, scale*H, scale*W), all finite."""
    n, _, h, w = x_shape
    s = int(meta.scale)
    if out.ndim != 4 or out.shape[:2] != (n, 3):
        raise ShapeError(f"{label}: not a 3-channel image generator ({name} returned {shape_text(out.shape)} for a "
                         f"{shape_text(x_shape)} batch); pass a CycleGAN/pix2pix generator")
    if out.shape[2:] != (h * s, w * s):
        at = "the same size" if s == 1 else f"{s} x the size (its card's scale)"
        raise ShapeError(f"{label}: {name} returned {shape_text(out.shape)} for a {shape_text(x_shape)} batch; the "
                         f"model must map 3 channels to 3 at {at} (is it a generator, and does its card match it?)")


def all_finite(a: np.ndarray) -> bool:
    """No NaN/Inf in `a`. A float32 sum first (one pass, no bool array; NaN and Inf propagate), confirmed
    element-wise only if the sum is not finite (huge but finite values could overflow it)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(a, dtype=np.float32)):
            return True
    return bool(np.isfinite(a).all())


def non_finite_error(label: str, what: str) -> ModelError:
    return ModelError(f"{label}: the model returned NaN/Inf values for {what} (damaged weights, or an overflow "
                           "in reduced precision); re-export it from a good checkpoint, or run the FP32 model")


def bytes_per_pixel(meta: ModelMeta, device: str) -> int:
    """Host memory one padded input pixel costs a model call: its float32 input and output and, on a CPU, the
    activations: ~8 full-resolution maps of ngf channels alive at once (ONNX Runtime's arena, the worst of the
    CPU runtimes, measured at 5-11; the figure bench/limits.py uses too). On a GPU the activations live in
    device memory, and the runtime reports when that runs out."""
    s2 = int(meta.scale) ** 2
    tensors = 4 * (meta.input_nc + meta.output_nc * s2)
    return tensors + (4 * 8 * max(1, int(meta.ngf)) * s2 if device == "cpu" else 0)
