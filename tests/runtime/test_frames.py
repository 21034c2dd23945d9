"""frames.py against straightforward per-pixel reference implementations (loops), odd sizes, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cyclegan_deploy.errors import ShapeError
from cyclegan_deploy.frames import (
    crop,
    from_model,
    min_size,
    model_size,
    pad_to_model,
    pad_to_multiple,
    padded_size,
    resize_frames,
    to_model,
)
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.model_checks import all_finite


def ref_to_model(frames: np.ndarray) -> np.ndarray:
    n, h, w, c = frames.shape
    out = np.zeros((n, c, h, w), dtype=np.float64)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                for ch in range(c):
                    out[i, ch, y, x] = (frames[i, y, x, ch] / 255.0 - 0.5) / 0.5  # the reference's normalisation
    return out


def ref_from_model(batch: np.ndarray) -> np.ndarray:
    n, c, h, w = batch.shape
    out = np.zeros((n, h, w, c), dtype=np.uint8)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                for ch in range(c):
                    v = (float(batch[i, ch, y, x]) + 1.0) / 2.0 * 255.0
                    out[i, y, x, ch] = min(255, max(0, round(v)))
    return out


def reflect_index(i: int, size: int) -> int:
    """numpy 'reflect' (edge not repeated), applied repeatedly when the pad exceeds the image."""
    period = 2 * (size - 1)
    i %= period
    return period - i if i >= size else i


def ref_pad(batch: np.ndarray, multiple: int) -> np.ndarray:
    n, c, h, w = batch.shape
    ph, pw = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    out = np.zeros((n, c, ph, pw), dtype=batch.dtype)
    for y in range(ph):
        for x in range(pw):
            out[:, :, y, x] = batch[:, :, reflect_index(y, h), reflect_index(x, w)]
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.mark.parametrize("shape", [(1, 5, 7, 3), (2, 3, 1, 3), (1, 1, 1, 3)])
def test_to_model_matches_reference(rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    frames = rng.integers(0, 256, size=shape, dtype=np.uint8)
    got = to_model(frames)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == (shape[0], 3, shape[1], shape[2])
    np.testing.assert_allclose(got, ref_to_model(frames), atol=1e-6, rtol=0)
    assert got.min() >= -1.0 and got.max() <= 1.0


def test_to_model_accepts_single_frame_and_extremes() -> None:
    frame = np.array([[[0, 255, 128]]], dtype=np.uint8)
    got = to_model(frame)
    assert got.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(got[0, :, 0, 0], [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 3, 4, 9)])
def test_from_model_matches_reference_rounding(rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    batch = rng.uniform(-1.2, 1.2, size=shape).astype(np.float32)  # also exercises clipping
    scaled = (batch.astype(np.float64) + 1) * 127.5
    # keep clear of exact .5 ties, where float32 vs float64 arithmetic may legitimately differ
    near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3
    batch[near_tie] = 0.0
    got = from_model(batch)
    assert got.dtype == np.uint8 and got.shape == (shape[0], shape[2], shape[3], 3)
    np.testing.assert_array_equal(got, ref_from_model(batch))


def test_from_model_rounds_not_truncates() -> None:
    # 10.4 -> 10, 10.6 -> 11 (the reference's astype(uint8) would truncate 10.6 to 10)
    values = np.array([10.4, 10.6, 254.7, -3.0, 300.0], dtype=np.float64) / 127.5 - 1
    batch = np.broadcast_to(values.astype(np.float32)[None, None, None, :], (1, 3, 1, 5)).copy()
    np.testing.assert_array_equal(from_model(batch)[0, 0, :, 0], [10, 11, 255, 0, 255])


def test_uint8_round_trip_is_exact_for_every_value() -> None:
    values = np.arange(256, dtype=np.uint8)
    frames = np.stack([values, values[::-1], np.roll(values, 7)], axis=-1)[None, None]  # (1,1,256,3)
    np.testing.assert_array_equal(from_model(to_model(frames)), frames)


@pytest.mark.parametrize("hw,multiple", [((5, 7), 4), ((33, 17), 4), ((8, 12), 4), ((3, 3), 8), ((130, 2), 128)])
def test_pad_matches_reference_and_crop_round_trips(rng: np.random.Generator, hw: tuple[int, int],
                                                    multiple: int) -> None:
    batch = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    padded = pad_to_multiple(batch, multiple)
    assert padded.shape[-2:] == padded_size(*hw, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    np.testing.assert_array_equal(padded, ref_pad(batch, multiple))
    np.testing.assert_array_equal(crop(padded, *hw), batch)


@pytest.mark.parametrize("h,w,m", [(1, 1, 4), (4, 4, 4), (5, 255, 4), (257, 333, 4), (300, 1, 256)])
def test_padded_size_is_ceiling(h: int, w: int, m: int) -> None:
    assert padded_size(h, w, m) == (math.ceil(h / m) * m, math.ceil(w / m) * m)


def test_pad_is_noop_when_it_fits(rng: np.random.Generator) -> None:
    batch = rng.standard_normal((1, 3, 8, 12)).astype(np.float32)
    assert pad_to_multiple(batch, 4) is batch
    assert crop(batch, 8, 12) is batch


def test_full_frame_path_keeps_odd_size(rng: np.random.Generator) -> None:
    frames = rng.integers(0, 256, size=(2, 37, 51, 3), dtype=np.uint8)
    batch = pad_to_multiple(to_model(frames), 4)
    out = from_model(crop(batch, 37, 51))  # identity model
    np.testing.assert_array_equal(out, frames)


def test_errors_are_typed() -> None:
    with pytest.raises(ShapeError, match="too small"):
        pad_to_multiple(np.zeros((1, 3, 1, 5), np.float32), 4)
    with pytest.raises(ShapeError, match="uint8"):
        to_model(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ShapeError, match=r"\(N,H,W,3\)"):
        to_model(np.zeros((1, 4, 4, 4), np.uint8))
    with pytest.raises(ShapeError, match=r"\(N,3,H,W\)"):
        from_model(np.zeros((1, 4, 4, 3), np.float32))


def test_resize_frames_shape_and_constant_image() -> None:
    frames = np.full((2, 10, 14, 3), 77, dtype=np.uint8)
    out = resize_frames(frames, 7, 5)
    assert out.shape == (2, 7, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 77)  # any interpolation keeps a constant image constant
    assert resize_frames(frames, 10, 14) is frames


def test_min_size_follows_the_architecture() -> None:
    """ResNet: two stride-2 halvings then ReflectionPad(1), which needs 2 pixels: H/4 >= 2 -> 8 at multiple 4.
    A U-Net's bottleneck is 1x1 by design: its multiple."""
    assert min_size(ModelMeta(arch="resnet_9blocks", family="resnet", multiple=4)) == 8
    assert min_size(ModelMeta(arch="resnet_9blocks", multiple=4)) == 8  # cards without a family
    assert min_size(ModelMeta(arch="unet_256", family="unet", multiple=256)) == 256
    meta = ModelMeta(arch="resnet_2blocks", multiple=4)
    assert model_size(2, 2, meta) == (8, 8) and model_size(1, 13, meta) == (8, 16)
    assert model_size(9, 20, meta) == (12, 20)


@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (2, 2), (3, 7), (5, 1)])
def test_pad_to_model_reflects_or_repeats_and_crop_undoes_it(rng: np.random.Generator, hw: tuple[int, int]) -> None:
    batch = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    out = pad_to_model(batch, (8, 8))
    assert out.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(crop(out, *hw), batch)
    h, w = hw
    if h >= 2 and w >= 2:  # reflected, as the loop reference does it (repeatedly for pads beyond the frame)
        np.testing.assert_array_equal(out, ref_pad(batch, 8))
    if h == 1:  # one row: repeated
        assert (out[:, :, 1:, :w] == out[:, :, :1, :w]).all()
    assert pad_to_model(out, (8, 8)) is out


def test_all_finite() -> None:
    a = np.zeros((2, 3, 4, 4), np.float32)
    assert all_finite(a)
    a[1, 2, 3, 3] = np.nan
    assert not all_finite(a)
    a[1, 2, 3, 3] = np.inf
    assert not all_finite(a)
    big = np.full((4, 3, 8, 8), 3e38, np.float32)  # finite, but its sum overflows: confirmed element-wise
    assert all_finite(big)
