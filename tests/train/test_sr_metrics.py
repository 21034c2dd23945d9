"""Super-resolution metrics (quality.psnr_y / ssim_y): BT.601 luma as MATLAB's rgb2ycbcr, PSNR against values
computed by hand (identical, uniform offset, known noise), crop_border, and SSIM equal to scikit-image's
Gaussian-window variant (Wang et al.: sigma 1.5, population covariance, data range 255) on the same Y channel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cyclegan_deploy.errors import ShapeError
from cyclegan_deploy.quality import psnr_y, rgb_to_y, shave, ssim_y

Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0  # Y change per unit change of R = G = B (uint8 steps): 219/255


def _photo_like(seed: int, shape: tuple[int, int] = (48, 56)) -> np.ndarray:
    """Smooth structure plus texture in 20..235, so offsets up to 20 neither clip nor wrap."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = 120 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.array([1.0, 0.6, -0.8])
    return np.clip(base + rng.normal(0, 12, (*shape, 3)), 20, 235).astype(np.uint8)


def test_y_is_bt601_luma_as_matlab_rgb2ycbcr() -> None:
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert rgb_to_y(rgb)[0] == pytest.approx([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], abs=1e-9)
    assert rgb_to_y(np.full((1, 1, 3), 128, np.uint8))[0, 0] == pytest.approx(16 + 219 * 128 / 255)


def test_identical_images_give_inf_psnr_and_ssim_one() -> None:
    a = _photo_like(0)
    assert psnr_y(a, a.copy(), 4) == math.inf
    assert ssim_y(a, a.copy(), 4) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("d", [1, 4, 15])
def test_uniform_offset_gives_the_closed_form_psnr(d: int) -> None:
    a = _photo_like(d)
    # R, G and B all +d: Y moves by d * 219/255 everywhere, so MSE = (d * 219/255)^2
    expected = 20 * math.log10(255.0 / (d * Y_GAIN))
    assert psnr_y(a, a + np.uint8(d), 4) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(a + np.uint8(d), a, 0) == pytest.approx(expected, abs=1e-9)


def test_known_gaussian_noise_level_gives_the_psnr_computed_by_hand() -> None:
    rng = np.random.default_rng(7)
    a = np.full((64, 80, 3), 128, np.uint8)
    noise = np.rint(rng.normal(0.0, 5.0, (64, 80))).astype(np.int16)  # the same noise on R, G and B
    b = (a.astype(np.int16) + noise[..., None]).astype(np.uint8)  # 128 +- a few sigma: no clipping
    border = 4
    shaved = noise[border:-border, border:-border].astype(np.float64)
    by_hand = 10 * math.log10(255.0**2 / np.mean((shaved * Y_GAIN) ** 2))
    assert psnr_y(a, b, border) == pytest.approx(by_hand, abs=1e-9)
    # and about what sigma says: 20 log10(255 / (5 * 219/255)) = 35.5 dB
    assert psnr_y(a, b, border) == pytest.approx(20 * math.log10(255 / (5 * Y_GAIN)), abs=0.15)


def test_crop_border_ignores_what_lies_in_the_border() -> None:
    a = _photo_like(3)
    b = a.copy()
    b[:4] = 0
    b[:, -4:] = 255
    assert psnr_y(a, b, 4) == math.inf and ssim_y(a, b, 4) == pytest.approx(1.0)
    assert psnr_y(a, b, 3) < 30 and ssim_y(a, b, 0) < 0.99
    assert shave(a, 4).shape == (40, 48, 3) and shave(a, 0) is a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_equals_scikit_images_gaussian_variant_on_y(seed: int) -> None:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a = _photo_like(seed)
    b = np.clip(a.astype(np.int16) + np.random.default_rng(seed + 10).integers(-25, 26, a.shape), 0, 255)
    b = b.astype(np.uint8)
    for border in (0, 4):
        ya, yb = shave(rgb_to_y(a), border), shave(rgb_to_y(b), border)
        reference = skimage_metrics.structural_similarity(ya, yb, data_range=255, gaussian_weights=True, sigma=1.5,
                                                          use_sample_covariance=False)
        assert ssim_y(a, b, border) == pytest.approx(reference, abs=1e-10)
        assert 0.2 < reference < 0.99  # a real difference, not a degenerate case


def test_ssim_needs_the_window_and_shapes_must_match() -> None:
    tiny = _photo_like(0, (14, 14))
    assert math.isnan(ssim_y(tiny, tiny, 2))  # 10x10 left: less than the 11x11 window
    assert ssim_y(tiny, tiny, 1) == pytest.approx(1.0)
    with pytest.raises(ShapeError):
        psnr_y(tiny, _photo_like(0, (14, 16)))
