"""Run-dir outputs besides checkpoints: losses.csv (one row per iteration), losses.png, sample grids."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from cyclegan_deploy.artifacts import atomic_output

LOSSES_CSV = "losses.csv"
LOSSES_PNG = "losses.png"
FIXED_COLUMNS = ("epoch", "iteration", "lr", "time_s")


class LossLog:
    """Appends one CSV row per iteration; on resume, rows after the checkpoint's iteration are dropped so the
    file matches the restored state exactly (an interrupted run may have logged steps it never saved)."""

    def __init__(self, path: Path, loss_names: Sequence[str], keep_until: int | None = None) -> None:
        self.path, self.columns = path, (*FIXED_COLUMNS, *loss_names)
        if keep_until is None or not path.is_file():
            self._rewrite([])
        else:
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= keep_until]
            self._rewrite([[r.get(c, "") for c in self.columns] for r in rows])
        self._file: IO[str] | None = open(path, "a", newline="")
        self._writer = csv.writer(self._file)

    def _rewrite(self, rows: list[list[str]]) -> None:
        with atomic_output(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows(rows)

    def write(self, epoch: int, iteration: int, lr: float, time_s: float, losses: dict[str, float]) -> None:
        assert self._file is not None
        # repr keeps every bit of the float: resume tests compare these values exactly
        self._writer.writerow([epoch, iteration, repr(lr), f"{time_s:.3f}",
                               *(repr(losses[c]) for c in self.columns[len(FIXED_COLUMNS):])])

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_losses(path: Path) -> dict[str, np.ndarray]:
    """losses.csv -> column name -> values (float)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {name: np.array([float(r[name]) for r in rows]) for name in rows[0]}


def plot_losses(csv_path: Path, png_path: Path, loss_names: Sequence[str]) -> None:
    """Each loss against the iteration, raw (faint) and smoothed, one panel per loss."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    from matplotlib import pyplot as plt

    data = read_losses(csv_path)
    if not data or len(data["iteration"]) < 2:
        return
    cols = min(4, len(loss_names))
    rows = -(-len(loss_names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    x = data["iteration"]
    window = max(1, len(x) // 50)
    for ax, name in zip(axes.flat, loss_names, strict=False):
        y = data[name]
        ax.plot(x, y, color="tab:blue", alpha=0.25, linewidth=0.6)
        if window > 1:
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            ax.plot(x[window - 1:], smooth, color="tab:blue", linewidth=1.2)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(loss_names):]:
        ax.axis("off")
    fig.supxlabel("iteration", fontsize=8)
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def save_grid(rows: Sequence[Sequence[np.ndarray]], path: Path, gap: int = 2) -> None:
    """Rows of uint8 HWC tiles (one row per sample, one column per visual) -> one PNG, written atomically."""
    h = max(t.shape[0] for row in rows for t in row)
    w = max(t.shape[1] for row in rows for t in row)
    ncols = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas[r * (h + gap):r * (h + gap) + tile.shape[0], c * (w + gap):c * (w + gap) + tile.shape[1]] = tile
    with atomic_output(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
