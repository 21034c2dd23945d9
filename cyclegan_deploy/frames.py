"""uint8 HWC RGB <-> float32 NCHW in [-1, 1]; reflect-pad to the model's multiple and crop back.

Normalisation is the reference's: x/255 -> (x - 0.5)/0.5 = x/127.5 - 1 on the way in and
(y + 1)/2 * 255 on the way out. The reference truncates on the way out (astype(uint8)); we round,
which is the unbiased choice and is what "correct rounding" in the tests means.
"""

from __future__ import annotations

import numpy as np

from cyclegan_deploy.errors import ShapeError


def to_model(frames: np.ndarray) -> np.ndarray:
    """(N,H,W,3) or (H,W,3) uint8 RGB -> (N,3,H,W) float32 in [-1, 1]."""
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ShapeError(f"expected uint8 frames of shape (N,H,W,3), got {frames.dtype} {frames.shape}")
    out = frames.transpose(0, 3, 1, 2).astype(np.float32)
    out *= 1.0 / 127.5
    out -= 1.0
    return np.ascontiguousarray(out)


def from_model(batch: np.ndarray) -> np.ndarray:
    """(N,3,H,W) float in [-1, 1] -> (N,H,W,3) uint8 RGB, rounded and clipped."""
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ShapeError(f"expected a (N,3,H,W) batch from the model, got {batch.shape}")
    out = (batch.astype(np.float32, copy=False) + 1.0) * 127.5
    np.clip(out, 0.0, 255.0, out=out)
    return np.ascontiguousarray(np.rint(out).astype(np.uint8).transpose(0, 2, 3, 1))


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


def crop(batch: np.ndarray, height: int, width: int) -> np.ndarray:
    """Undo pad_to_multiple."""
    if batch.shape[-2:] == (height, width):
        return batch
    return batch[..., :height, :width]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (N,H,W,3) uint8 frames with area/bicubic filtering (optional speed-up before the model)."""
    from PIL import Image

    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC)) for f in frames])
