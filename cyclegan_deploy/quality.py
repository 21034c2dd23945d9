"""The one place PSNR, SSIM and output parity are computed (export gate, bench, training evaluation, eval), and
the natural photographs reduced models are judged on.

PSNR is over all values, with the peak-to-peak of the data's range (2 for [-1, 1] model outputs, 255 for
uint8 images); identical inputs give inf. The uint8 difference is measured after the runtime's own
output mapping (frames.to_uint8: scale, clip, round), so it is the pixel error a user would see.

Super-resolution is scored as its literature does (BasicSR's calculate_psnr/ssim with test_y_channel): on the
luma Y of ITU-R BT.601 as MATLAB's rgb2ycbcr computes it (Y = 16 + 65.481 R + 128.553 G + 24.966 B, RGB in
[0, 1], so Y spans 16..235; kept in float, not rounded to uint8), with `crop_border` pixels (the scale) shaved
off every side, peak 255; SSIM is Wang et al.'s: an 11x11 Gaussian window (sigma 1.5) over the valid region,
C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2 — scikit-image's structural_similarity with gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255 computes the same number.
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


# ITU-R BT.601 luma weights for RGB in [0, 1] (MATLAB's rgb2ycbcr, the SR literature's Y)
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
SSIM_SIGMA, SSIM_RADIUS = 1.5, 5  # Wang et al.'s 11x11 Gaussian window


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) RGB -> float64 (...) luma Y in [16, 235] (BT.601, not rounded)."""
    if rgb.shape[-1] != 3:
        raise ShapeError(f"expected RGB (..., 3), got shape {rgb.shape}")
    return Y_OFFSET + (rgb.astype(np.float64) / 255.0) @ np.asarray(Y_WEIGHTS)


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """`border` pixels off each side of an (H, W, ...) image (the SR literature's crop_border)."""
    return img[border:img.shape[0] - border, border:img.shape[1] - border] if border > 0 else img


def _y_pair(reference: np.ndarray, candidate: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    if reference.shape != candidate.shape:
        raise ShapeError(f"candidate image shape {candidate.shape} != reference {reference.shape}")
    return shave(rgb_to_y(reference), crop_border), shave(rgb_to_y(candidate), crop_border)


def psnr_y(reference: np.ndarray, candidate: np.ndarray, crop_border: int = 0) -> float:
    """PSNR (peak 255) of two uint8 HxWx3 RGB images on their BT.601 luma, `crop_border` pixels shaved."""
    ref, out = _y_pair(reference, candidate, crop_border)
    return psnr(ref, out, 255.0)


def _gaussian_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 2-D filtering of x by the 1-D `taps`, keeping only positions where the window fits ('valid')."""
    k = len(taps)
    h, w = x.shape
    rows = sum(t * x[i:h - k + 1 + i] for i, t in enumerate(taps))
    return np.asarray(sum(t * rows[:, i:w - k + 1 + i] for i, t in enumerate(taps)))


def ssim_y(reference: np.ndarray, candidate: np.ndarray, crop_border: int = 0) -> float:
    """SSIM of two uint8 HxWx3 RGB images on their BT.601 luma, `crop_border` pixels shaved (the module
    docstring says which variant); NaN when less than the 11x11 window remains."""
    ref, out = _y_pair(reference, candidate, crop_border)
    if min(ref.shape) < 2 * SSIM_RADIUS + 1:
        return math.nan
    taps = np.exp(-0.5 * (np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1) / SSIM_SIGMA) ** 2)
    taps /= taps.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _gaussian_valid(ref, taps), _gaussian_valid(out, taps)
    var_x = _gaussian_valid(ref * ref, taps) - mu_x**2
    var_y = _gaussian_valid(out * out, taps) - mu_y**2
    cov = _gaussian_valid(ref * out, taps) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


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


def photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled images at its own size as uint8 HxWx3 RGB (grey repeated, alpha dropped)."""
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("the natural photographs come from scikit-image: pip install scikit-image") from e

    stereo = {"motorcycle_left": 0, "motorcycle_right": 1}  # the two views of data.stereo_motorcycle()
    img = np.asarray(data.stereo_motorcycle()[stereo[name]] if name in stereo else getattr(data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def natural_photos(side: int) -> tuple[list[str], np.ndarray]:
    """scikit-image's photographs as uint8 (N, side, side, 3): centre square, bicubic resize."""
    from PIL import Image

    names, out = [], []
    for name in PHOTOS:
        img = photo(name)
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
