"""The built-in unpaired dataset whose true A->B mapping is known, so training quality is a number.

Domain A holds procedural landscapes (sky gradient, sun, clouds, hills, houses, trees, texture). Domain B holds
f(other landscapes), where f is a fixed colour grade: a 3x3 channel mix plus per-channel gamma, stored in
mapping.json. B is made from *different* scenes than A, so the training data is truly unpaired; held-out
pairs (testA, testB_true = f(testA)) measure how close G_AtoB gets to f, against the identity baseline.

Everything is drawn from generators seeded by (seed, split, index): the same seed gives the same files.
This module needs only numpy + Pillow; `evaluate_synthetic` imports torch when called.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cyclegan_deploy.artifacts import atomic_dir
from cyclegan_deploy.errors import DataError, OutputError
from cyclegan_deploy.metadata import REFERENCE_RANGE
from cyclegan_deploy.outputs import check_writable, locked, output_errors, refuse_existing, removed_if_failed
from cyclegan_deploy.quality import psnr

if TYPE_CHECKING:
    from torch import nn

MAPPING_NAME = "mapping.json"
FORMAT = "cgdeploy-synthetic-v1"
# A strong, smooth, invertible grade: blue sky -> rose, green grass -> teal/violet, yellow sun -> pale green.
# Far from identity (identity scores ~12 dB), yet a per-pixel map that a small generator represents exactly.
DEFAULT_MAPPING: dict[str, Any] = {
    "kind": "channel_mix_gamma",
    "formula": "y = clip(M @ x + b, 0, 1) ** gamma, per pixel, x and y RGB in [0, 1]",
    "matrix": [[0.15, 0.15, 0.70],
               [0.60, 0.30, 0.10],
               [0.10, 0.65, 0.25]],
    "bias": [0.02, 0.0, 0.03],
    "gamma": [0.8, 1.25, 1.0],
}
_SPLITS = {"trainA": 1, "trainB": 2, "testA": 3}


# --- the mapping ---

def apply_mapping(img: np.ndarray, mapping: dict[str, Any] | None = None) -> np.ndarray:
    """f: uint8 (..., 3) RGB -> uint8, the stored colour grade (computed in float64, rounded)."""
    mapping = DEFAULT_MAPPING if mapping is None else mapping
    if mapping.get("kind") != "channel_mix_gamma":
        raise DataError(f"unknown synthetic mapping kind {mapping.get('kind')!r}; expected channel_mix_gamma")
    if img.dtype != np.uint8 or img.shape[-1] != 3:
        raise DataError(f"apply_mapping needs uint8 RGB (..., 3), got {img.dtype} {img.shape}")
    x = img.astype(np.float64) / 255.0
    y = x @ np.asarray(mapping["matrix"], dtype=np.float64).T + np.asarray(mapping["bias"], dtype=np.float64)
    y = np.clip(y, 0.0, 1.0) ** np.asarray(mapping["gamma"], dtype=np.float64)
    return np.rint(y * 255.0).astype(np.uint8)


# --- procedural scenes ---

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (h in turns) -> RGB float in [0, 1]."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [-1, 1]: a coarse random grid upsampled bilinearly (texture without a library)."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    pos = np.linspace(0.0, cells, size)
    i = np.minimum(pos.astype(int), cells - 1)
    f = pos - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def make_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """One landscape, uint8 (size, size, 3)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
    # sky: vertical gradient from a deep blue top to a pale horizon colour
    top = _hsv(rng.uniform(0.55, 0.68), rng.uniform(0.5, 0.9), rng.uniform(0.55, 0.95))
    low = _hsv(rng.uniform(0.48, 0.62), rng.uniform(0.15, 0.45), rng.uniform(0.8, 1.0))
    img = top + (low - top) * yy[..., None]
    # sun: soft disc, yellow to white
    cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.35), rng.uniform(0.05, 0.11)
    sun = np.clip((r - np.hypot(xx - cx, yy - cy)) / (0.25 * r), 0.0, 1.0)[..., None]
    img = img * (1 - sun) + _hsv(rng.uniform(0.11, 0.17), rng.uniform(0.2, 0.8), 1.0) * sun
    # clouds: soft white ellipses
    for _ in range(int(rng.integers(0, 4))):
        ex, ey = rng.uniform(0.0, 1.0), rng.uniform(0.05, 0.4)
        ax, ay = rng.uniform(0.08, 0.22), rng.uniform(0.03, 0.07)
        d = ((xx - ex) / ax) ** 2 + ((yy - ey) / ay) ** 2
        cloud = 0.85 * np.clip((1.0 - d) * 2.0, 0.0, 1.0)[..., None]
        img = img * (1 - cloud) + rng.uniform(0.85, 1.0) * cloud
    # ground: hills under a wavy horizon, green to olive/brown, darker towards the bottom, textured
    horizon = rng.uniform(0.45, 0.7) + sum(
        rng.uniform(0.01, 0.06) * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * xx[0] + rng.uniform(0, 2 * np.pi))
        for _ in range(3))
    ground = (yy >= horizon[None, :])[..., None]
    g_top = _hsv(rng.uniform(0.18, 0.38), rng.uniform(0.45, 0.85), rng.uniform(0.45, 0.8))
    g_low = g_top * rng.uniform(0.45, 0.75)
    depth = np.clip((yy - horizon[None, :]) / np.maximum(1.0 - horizon[None, :], 1e-3), 0.0, 1.0)[..., None]
    texture = 0.08 * _smooth_noise(rng, size, 8)[..., None]
    img = np.where(ground, g_top + (g_low - g_top) * depth + texture, img)
    # houses (walls + darker roof) and trees (trunk + round crown) standing on the horizon
    for _ in range(int(rng.integers(0, 4))):
        hx, w = rng.uniform(0.05, 0.85), rng.uniform(0.08, 0.16)
        base = float(np.interp(hx + w / 2, xx[0], horizon)) + rng.uniform(0.0, 0.15)
        if rng.random() < 0.5:
            hh = rng.uniform(0.08, 0.18)
            wall = (xx >= hx) & (xx <= hx + w) & (yy <= base) & (yy >= base - hh)
            roof = (yy < base - hh) & (yy >= base - hh - w / 2) & (np.abs(xx - hx - w / 2) <= (yy - base + hh + w / 2))
            img[wall] = _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.6), rng.uniform(0.5, 0.95))
            img[roof] = _hsv(rng.uniform(0.0, 0.08), rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.6))
        else:
            trunk = (np.abs(xx - hx - w / 2) <= w / 8) & (yy <= base) & (yy >= base - w)
            crown = np.hypot(xx - hx - w / 2, yy - base + w * 1.3) <= w * 0.6
            img[trunk] = _hsv(0.07, 0.6, rng.uniform(0.25, 0.4))
            img[crown] = _hsv(rng.uniform(0.22, 0.36), rng.uniform(0.5, 0.9), rng.uniform(0.2, 0.45))
    img = img + rng.normal(0.0, 1.5 / 255.0, img.shape)  # sensor-like noise so flat areas are not perfectly flat
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def scene(seed: int, split: str, index: int, size: int) -> np.ndarray:
    """The scene behind file `index` of `split` (trainA / trainB / testA), independent of every other file."""
    return make_scene(np.random.default_rng([seed, _SPLITS[split], index]), size)


# --- writing the dataset ---

def _save_png(img: np.ndarray, path: Path) -> None:
    Image.fromarray(img).save(path, format="PNG", compress_level=1)  # lossless: f(a) must stay exact


def _check_resources(out: Path, n_images: int, size: int) -> None:
    """Refuse sizes that cannot fit before the first image is drawn: a scene is ~12 float64 RGB planes in
    memory, and each PNG about its raw size on disk (sensor noise defeats compression)."""
    from cyclegan_deploy.machine import available_memory, gib

    memory, available = 12 * 3 * 8 * size * size, available_memory()
    if available is not None and memory > available:
        raise DataError(f"--size {size}: drawing one scene needs about {gib(memory)} GiB of memory, more than the "
                        f"{gib(available)} GiB free; use a smaller --size (64 trains in minutes)")
    disk, free = n_images * 3 * size * size, shutil.disk_usage(out.parent).free
    if disk > free:
        raise DataError(f"{out}: {n_images} images of {size}x{size} need about {gib(disk)} GiB of disk, more than "
                        f"the {gib(free)} GiB free there; lower --n-train/--n-test/--size or write somewhere else")


def write_synthetic(out: str | Path, n_train: int = 400, n_test: int = 50, size: int = 64, seed: int = 0,
                    mapping: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write OUT/{trainA,trainB,testA,testB_true}/*.png and OUT/mapping.json; returns OUT.

    Written into a temp folder beside OUT and renamed at the end, so OUT is either complete or absent. An
    existing non-empty OUT is refused unless overwrite (--force); a write that fails (disk full, read-only)
    is an OutputError naming the file.
    """
    out = Path(out)
    if n_train < 1 or n_test < 1:
        raise DataError(f"--n-train and --n-test must be >= 1 (got {n_train}, {n_test})")
    if size < 16:
        raise DataError(f"--size must be >= 16 pixels, got {size}")
    mapping = dict(DEFAULT_MAPPING if mapping is None else mapping)
    with new_dataset_dir(out, overwrite, 2 * (n_train + n_test), size) as tmp:
        for folder in ("trainA", "trainB", "testA", "testB_true"):
            (tmp / folder).mkdir()
        for i in range(n_train):
            _save_png(scene(seed, "trainA", i, size), tmp / "trainA" / f"{i:06d}.png")
            _save_png(apply_mapping(scene(seed, "trainB", i, size), mapping), tmp / "trainB" / f"{i:06d}.png")
        for i in range(n_test):
            a = scene(seed, "testA", i, size)
            _save_png(a, tmp / "testA" / f"{i:06d}.png")
            _save_png(apply_mapping(a, mapping), tmp / "testB_true" / f"{i:06d}.png")
        card = {"format": FORMAT, "mapping": mapping, "seed": seed, "size": size, "n_train": n_train,
                "n_test": n_test, "layout": "trainA: scenes; trainB: f(other scenes); testB_true: f(testA)"}
        (tmp / MAPPING_NAME).write_text(json.dumps(card, indent=2) + "\n")
    return out


@contextlib.contextmanager
def new_dataset_dir(out: Path, overwrite: bool, n_images: int, size: int) -> Iterator[Path]:
    """The temp folder a built-in dataset is written into, renamed to OUT when the block ends without error (OUT
    is complete or absent). An existing non-empty OUT is refused unless overwrite (--force); memory and disk for
    `n_images` images of up to size x size are checked first; OUT is locked meanwhile."""
    _refuse_existing(out, overwrite)
    with removed_if_failed(out.parent), output_errors(out):
        check_writable(out.parent)
        _check_resources(out, n_images, size)
        # two writers of one folder: the second is refused (PID named), and re-checks after the first won
        with locked(out, option="OUT_DIR"), atomic_dir(out, replace=True) as tmp:
            _refuse_existing(out, overwrite)
            yield tmp


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # an empty folder holds nothing to lose
        try:
            refuse_existing(out, overwrite, option="OUT_DIR")
        except OutputError as e:  # the one overwrite rule's words, as the DataError this function raises
            raise DataError(str(e)) from None


def read_mapping(data_root: str | Path) -> dict[str, Any]:
    """The stored f of a synthetic data root (DataError if the root has none)."""
    path = Path(data_root) / MAPPING_NAME
    if not path.is_file():
        raise DataError(f"{path}: not found; evaluate_synthetic needs a data root written by `cgdeploy data synth`")
    card = json.loads(path.read_text())
    if card.get("format") != FORMAT:
        raise DataError(f"{path}: format {card.get('format')!r} is not {FORMAT}; regenerate with `cgdeploy data synth`")
    return dict(card["mapping"])


def is_synthetic(data_root: str | Path) -> bool:
    return (Path(data_root) / MAPPING_NAME).is_file()


# --- evaluation ---

def _load_pairs(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    dir_a, dir_b = data_root / "testA", data_root / "testB_true"
    names = sorted(p.name for p in dir_a.glob("*.png")) if dir_a.is_dir() else []
    if not names:
        raise DataError(f"{dir_a}: no test images; regenerate the data root with `cgdeploy data synth`")
    missing = [n for n in names if not (dir_b / n).is_file()]
    if missing:
        raise DataError(f"{dir_b}: missing {len(missing)} true outputs (e.g. {missing[0]}); regenerate the data root")
    a = np.stack([np.asarray(Image.open(dir_a / n).convert("RGB")) for n in names])
    b = np.stack([np.asarray(Image.open(dir_b / n).convert("RGB")) for n in names])
    return a, b


def translate_uint8(generator: nn.Module, images: np.ndarray, device: str = "cpu", batch_size: int = 16,
                    multiple: int = 4, input_range: Sequence[float] = REFERENCE_RANGE,
                    output_range: Sequence[float] = REFERENCE_RANGE, scale: int = 1) -> np.ndarray:
    """Run a generator on uint8 NHWC images (reflect-padded to its multiple, cropped back) -> uint8 NHWC, the
    card's value ranges and scale applied (super-resolution: scale x the input's height and width)."""
    import torch

    from cyclegan_deploy.frames import crop, from_model, pad_to_multiple, to_model

    h, w = images.shape[1:3]
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = pad_to_multiple(to_model(images[i:i + batch_size], input_range), multiple)
            y = generator(torch.from_numpy(x).to(device)).float().cpu().numpy()
            outs.append(from_model(crop(y, h, w, scale), output_range))
    return np.concatenate(outs)


def evaluate_synthetic(generator: nn.Module, data_root: str | Path, device: str = "cpu",
                       multiple: int = 4) -> dict[str, Any]:
    """Held-out PSNR of G_AtoB(a) against the true f(a), and of the identity (a vs f(a)) as the baseline.

    The generator runs in eval mode (batch-norm running stats, no dropout) and is put back in its mode after.
    """
    data_root = Path(data_root)
    read_mapping(data_root)
    a, b_true = _load_pairs(data_root)
    was_training = generator.training
    generator.eval()
    try:
        fake = translate_uint8(generator, a, device=device, multiple=multiple)
    finally:
        generator.train(was_training)
    psnr_model, psnr_identity = psnr(fake, b_true, 255.0), psnr(a, b_true, 255.0)
    return {"psnr_model_db": round(psnr_model, 3), "psnr_identity_db": round(psnr_identity, 3),
            "gain_db": round(psnr_model - psnr_identity, 3), "n_images": int(len(a)),
            "size": [int(a.shape[1]), int(a.shape[2])]}
