"""Tiling: run a model on frames too large for memory or a TensorRT profile, one tile at a time.

TiledBackend wraps any backend (video, translate and bench see an ordinary Backend): a batch larger than the
tile is cut into a grid of regions of `tile - 2 * overlap` pixels; each region is run with `overlap` pixels of
its neighbours around it (a window of `tile` pixels, shifted inward at the frame's edges, so every call has the
same shape and no engine or compiled model sees a new one), and only the region's own part of the output is
kept. A convolutional model whose receptive field reaches no further than `overlap` pixels gives exactly the
untiled output (tests/runtime/test_sr_runtime.py: within 1e-4 on an fp32 backend), so there are no seams; with a
larger field the difference is confined to the overlap's far side and small. Windows start on multiples of
the card's size multiple, so a pixel-unshuffle or a stride-2 layer sees the same phase as untiled.

Models with instance normalisation (CycleGAN, pix2pix) are refused: statistics per tile are not the frame's,
so tiles would differ in tone; super-resolution families (no instance norm) are what tiling is for.
"""

from __future__ import annotations

import numpy as np

from cyclegan_deploy.backends.base import Backend
from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.metadata import ModelMeta


def check_tiling(meta: ModelMeta, tile: int, overlap: int) -> None:
    """Refuses --tile/--tile-overlap that this model cannot be tiled with (before any work: `batch` checks on
    the driver, before its workers load the model)."""
    m = max(1, int(meta.multiple))
    if meta.norm == "instance":
        raise ConfigError(f"--tile: {meta.arch} normalises each image by its own statistics (instance norm), so "
                          "tiles would not match each other; run it untiled (--size HxW to shrink frames)")
    if tile % m or tile < max(m, int(meta.min_size)):
        raise ConfigError(f"--tile {tile}: must be a multiple of {m} and at least {max(m, int(meta.min_size))} "
                          f"for {meta.arch}")
    if overlap < 0 or tile - 2 * overlap < m or (2 * overlap) % m:
        raise ConfigError(f"--tile-overlap {overlap}: must be >= 0, leave at least {m} pixels of each {tile}-pixel "
                          f"tile, and twice it a multiple of {m} ({meta.arch}); e.g. --tile-overlap 16")


class TiledBackend(Backend):
    def __init__(self, inner: Backend, tile: int, overlap: int = 16) -> None:
        meta = inner.meta
        check_tiling(meta, tile, overlap)
        self.inner, self.tile, self.overlap, self.step = inner, tile, overlap, tile - 2 * overlap
        self.meta, self.precision, self.device, self.threads = meta, inner.precision, inner.device, inner.threads
        self.name = f"{inner.name} tiled {tile}px/{overlap}"
        self.path = getattr(inner, "path", None)
        self.calls = 0  # model calls made (tests check the tiling really happened)

    def call_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of every model call for (H, W) frames: what a TensorRT profile must cover."""
        return min(self.tile, height), min(self.tile, width)

    def _windows(self, size: int) -> list[tuple[int, int, int]]:
        """(region start, region end, window start) along one axis."""
        m, win = max(1, int(self.meta.multiple)), min(self.tile, size)
        out = []
        for start in range(0, size, self.step):
            end = min(start + self.step, size)
            w0 = min(max(start - self.overlap, 0), size - win)  # shifted inward at the edges: always `win` wide
            out.append((start, end, w0 - w0 % m))  # regions start on multiples of m, so this still covers them
        return out

    def _run(self, batch: np.ndarray) -> np.ndarray:  # (N, C, H, W) -> (N, C_out, sH, sW)
        n, _, h, w = batch.shape
        if h <= self.tile and w <= self.tile:
            self.calls += 1
            return self.inner(batch)
        s, (th, tw) = int(self.meta.scale), self.call_size(h, w)
        out = np.empty((n, self.meta.output_nc, s * h, s * w), np.float32)
        columns = self._windows(w)
        grid = [(y0, y1, wy, x0, x1, wx) for y0, y1, wy in self._windows(h) for x0, x1, wx in columns]
        # the tiles are independent: run_many keeps the inner backend's max_inflight of them running (OpenVINO's
        # THROUGHPUT mode); check_batch makes each view contiguous
        tiles = (batch[:, :, wy:wy + th, wx:wx + tw] for _, _, wy, _, _, wx in grid)
        for (y0, y1, wy, x0, x1, wx), y in zip(grid, self.inner.run_many(tiles), strict=True):
            self.calls += 1
            out[:, :, s * y0:s * y1, s * x0:s * x1] = y[:, :, s * (y0 - wy):s * (y1 - wy), s * (x0 - wx):s * (x1 - wx)]
        return out

    def close(self) -> None:
        self.inner.close()


def maybe_tiled(backend: Backend, tile: int | None, overlap: int = 16) -> Backend:
    """`backend` as is (tile None) or wrapped in a TiledBackend; a refused --tile closes it."""
    if tile is None:
        return backend
    try:
        return TiledBackend(backend, tile, overlap)
    except BaseException:
        backend.close()
        raise


def call_size(backend: object, height: int, width: int) -> tuple[int, int]:
    """The (H, W) a backend's model calls have for (H, W) frames (smaller than the frame when tiled)."""
    return backend.call_size(height, width) if isinstance(backend, TiledBackend) else (height, width)
