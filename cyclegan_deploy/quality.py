"""The one place PSNR, SSIM and output parity are computed (export gate, bench, training evaluation, eval), and
the natural photographs reduced models are judged on.

PSNR is over all values, with the peak-to-peak of the data's range (2 for [-1, 1] model outputs, 255 for
uint8 images); identical inputs give inf. The uint8 difference is measured after the runtime's own
output mapping (frames.to_uint8: scale, clip, round), so it is the pixel error a user would see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cyclegan_deploy.errors import ShapeError
from cyclegan_deploy.metadata import REFERENCE_RANGE


def psnr(reference: np.ndarray, candidate: np.ndarray, peak_to_peak: float = 2.0) -> float:
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak_to_peak**2 / mse)


def ssim(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean structural similarity of two uint8 HxWx3 images (scikit-image's, Gaussian-free 7x7 window, per
    channel, data range 255): 1.0 for identical images; a smaller window on images under 7 pixels a side, NaN
    under 3."""
    from skimage.metrics import structural_similarity

    side = min(reference.shape[:2])
    window = min(7, side if side % 2 else side - 1)  # the window must fit the image (odd, at least 3)
    if window < 3:
        return math.nan
    return float(structural_similarity(reference, candidate, channel_axis=-1, data_range=255, win_size=window))


# scikit-image ships these photographs in its wheel (no download): a held-out natural-image set no generator
# here was trained or calibrated on
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def natural_photos(side: int) -> tuple[list[str], np.ndarray]:
    """scikit-image's photographs as uint8 (N, side, side, 3): centre square, bicubic resize."""
    from PIL import Image

    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("the natural photographs come from scikit-image: pip install scikit-image") from e

    names, out = [], []
    for name in PHOTOS:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3].astype(np.uint8)
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        square = Image.fromarray(img[top:top + s, left:left + s]).resize((side, side), Image.Resampling.BICUBIC)
        names.append(name)
        out.append(np.asarray(square))
    return names, np.stack(out)


@dataclass
class Parity:
    """How far a candidate NCHW output is from the reference's (same shape)."""

    max_abs: float
    mean_abs: float
    psnr_db: float  # inf when identical
    max_uint8_diff: int


def parity(reference: np.ndarray, candidate: np.ndarray, value_range: Sequence[float] = REFERENCE_RANGE) -> Parity:
    """Max/mean abs error and PSNR on the output range, max uint8 difference after the output mapping."""
    from cyclegan_deploy.frames import to_uint8

    if reference.shape != candidate.shape:
        raise ShapeError(f"candidate output shape {candidate.shape} != reference {reference.shape}")
    ref, out = reference.astype(np.float64), candidate.astype(np.float64)
    diff = np.abs(ref - out)
    lo, hi = float(value_range[0]), float(value_range[1])
    u8 = np.abs(to_uint8(reference, (lo, hi)).astype(np.int16) - to_uint8(candidate, (lo, hi)).astype(np.int16))
    return Parity(max_abs=float(diff.max()), mean_abs=float(diff.mean()), psnr_db=psnr(ref, out, hi - lo),
                  max_uint8_diff=int(u8.max()))
