"""uint8 HWC RGB <-> float32 NCHW by the card's value ranges; reflect-pad to the model's multiple (and its
minimum size), crop back. (What a run checks on what the model returns lives in model_checks.py.)

The card says which range uint8 0..255 maps onto (ModelMeta.input_range) and which range the model's
output covers (output_range). CycleGAN/pix2pix use the reference's [-1, 1] both ways: x/255 -> (x - 0.5)/0.5
= x/127.5 - 1 in, (y + 1)/2 * 255 out. The reference truncates on the way out (astype(uint8)); we round,
which is the unbiased choice and is what "correct rounding" in the tests means.
Output size: a model with scale s maps an (H, W) input to (s*H, s*W); crop() takes the input size and s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from cyclegan_deploy.errors import ConfigError, ShapeError
from cyclegan_deploy.metadata import REFERENCE_RANGE, ModelMeta

Range = Sequence[float]


def to_model(frames: np.ndarray, value_range: Range = REFERENCE_RANGE) -> np.ndarray:
    """(N,H,W,3) or (H,W,3) uint8 RGB -> (N,3,H,W) float32 in `value_range`."""
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ShapeError(f"expected uint8 frames of shape (N,H,W,3), got {frames.dtype} {frames.shape}")
    out = frames.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # (N, 3, H, W), one contiguous copy
    normalise_into(out, out, value_range)
    return out


def normalise_into(src: np.ndarray, out: np.ndarray, value_range: Range = REFERENCE_RANGE) -> None:
    """out = src/255 mapped onto value_range, in two float32 steps (what to_model does; video reuses it to
    write straight into a batch tensor). For [-1, 1]: x * (1/127.5) - 1."""
    lo, hi = float(value_range[0]), float(value_range[1])
    np.multiply(src, np.float32((hi - lo) / 255.0), out=out, casting="unsafe")
    if lo:
        out += np.float32(lo)


def from_model(batch: np.ndarray, value_range: Range = REFERENCE_RANGE) -> np.ndarray:
    """(N,3,H,W) float in `value_range` -> (N,H,W,3) uint8 RGB, rounded and clipped."""
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ShapeError(f"expected a (N,3,H,W) batch from the model, got {batch.shape}")
    return np.ascontiguousarray(to_uint8(batch, value_range).transpose(0, 2, 3, 1))


def to_uint8(batch: np.ndarray, value_range: Range = REFERENCE_RANGE) -> np.ndarray:
    """Any float array in `value_range` -> uint8 of the same shape: scaled, clipped, rounded (half to even)."""
    lo, hi = float(value_range[0]), float(value_range[1])
    out = batch.astype(np.float32, copy=False) - np.float32(lo)
    out *= np.float32(255.0 / (hi - lo))
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out).astype(np.uint8)


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The smallest (H', W') >= (H, W) that are multiples of `multiple`."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_to_multiple(batch: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad an NCHW batch at the bottom/right to the model's multiple (no-op when it fits).

    Reflection (not zeros) keeps instance-norm statistics and borders close to the unpadded image;
    numpy reflects repeatedly when the pad is larger than the image (small inputs to a U-Net).
    """
    h, w = batch.shape[-2:]
    ph, pw = padded_size(h, w, multiple)
    if (ph, pw) == (h, w):
        return batch
    if h < 2 or w < 2:
        raise ShapeError(f"frame {h}x{w} is too small to reflect-pad; frames must be at least 2x2")
    return np.pad(batch, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="reflect")


def min_size(meta: ModelMeta) -> int:
    """The smallest H or W the model can run on: the card's min_size (written from the model-family registry).
    Cards written before that field get the rule of the families that existed then: a U-Net's bottleneck is
    1x1 at its multiple (128/256); a ResNet's blocks reflect-pad its H/4 bottleneck by 1, so twice its
    multiple (8)."""
    if meta.min_size:
        return int(meta.min_size)
    multiple = max(1, int(meta.multiple))
    return multiple if multiple >= 128 else 2 * multiple


def model_size(height: int, width: int, meta: ModelMeta) -> tuple[int, int]:
    """What an (H, W) frame is padded to for the model: the multiple, and at least min_size on each side."""
    low = min_size(meta)
    ph, pw = padded_size(max(height, low), max(width, low), max(1, int(meta.multiple)))
    return ph, pw


def pad_to_model(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pad an NCHW batch at the bottom/right to `size` (model_size): reflected where a side has 2+ pixels
    (repeatedly, for pads larger than the frame), repeated where it has one; crop() undoes it."""
    return _pad_bottom_right(batch, size, (batch.ndim - 2, batch.ndim - 1))


def pad_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pad_to_model for (N, H, W, C) frames (uint8 for a backend that normalises on its device): the same
    reflection, so the pixels the model sees are the same; a contiguous (N, H', W', C) array."""
    return _pad_bottom_right(frames, size, (1, 2))


def _pad_bottom_right(a: np.ndarray, size: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    """`a` padded along its (H, W) `axes` to `size`, in its own layout (no transposed copies): reflected
    where a side has 2+ pixels, repeated where it has one; `a` itself when it already fits."""
    for axis, target in zip(axes, size, strict=True):
        have = a.shape[axis]
        if target > have:
            widths = [(0, 0)] * a.ndim
            widths[axis] = (0, target - have)
            a = np.pad(a, widths, mode="reflect" if have > 1 else "edge")
    return a


def crop(batch: np.ndarray, height: int, width: int, scale: int = 1) -> np.ndarray:
    """Undo pad_to_multiple on a model output: keep the top-left (scale*height, scale*width)."""
    h, w = height * scale, width * scale
    if batch.shape[-2:] == (h, w):
        return batch
    return batch[..., :h, :w]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (N,H,W,3) uint8 frames with bicubic filtering (optional speed-up before the model)."""
    from PIL import Image

    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC)) for f in frames])


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'HEIGHTxWIDTH' -> (H, W), each at least 2; the one parser for every --size/--sizes value."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 2 or int(m[2]) < 2:
        raise ConfigError(f"{option} {text!r}: write HEIGHTxWIDTH (each at least 2), e.g. 256x256 or 720x1280")
    return int(m[1]), int(m[2])
