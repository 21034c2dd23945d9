"""The built-in super-resolution dataset (`cgdeploy data synth-sr OUT --scale 4`) and the one bicubic resampler
every SR path uses (the dataset's LR, LR made on the fly in training and eval, the bicubic baseline).

Layout (the one `train --model srgan` and `eval` read; a user's own data goes in the same shape, lr/ optional):
    OUT/train/hr/*.png   HR images: procedural scenes (train/synthetic.py's landscapes drawn at --size) and
                         scikit-image's bundled photographs that are *not* evaluated on (TRAIN_PHOTOS)
    OUT/train/lr/*.png   LR = bicubic_downscale(HR), same file names
    OUT/test/hr, test/lr held-out pairs: other scenes (their own seed stream) and quality.PHOTOS, the natural
                         photographs eval reports on; a test image is never a training image (checked)
    OUT/sr_data.json     the card: format, scale, seed, how LR was made, every file's source
File names say the source: scene_<index>.png, photo_<name>.png (eval groups its report by them).

LR is PIL's Image.resize(BICUBIC) of the HR image (HR sides first cut to multiples of the scale at the bottom/
right, the SR literature's modcrop). PIL resamples by convolution and widens the cubic kernel (a = -0.5, as
MATLAB's imresize) by the reduction factor, so the downscale is antialiased, as MATLAB's imresize is; no
reducing_gap (its box pre-reduction would be an approximation). Torch-free: numpy + Pillow only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cyclegan_deploy.errors import DataError
from cyclegan_deploy.quality import PHOTOS, photo
from cyclegan_deploy.train.registry import SR_TRAIN_SCALES as SCALES  # x2 or x4
from cyclegan_deploy.train.synthetic import _save_png, make_scene, new_dataset_dir

CARD_NAME = "sr_data.json"
FORMAT = "cgdeploy-sr-data-v1"
LR_METHOD = "PIL Image.resize BICUBIC (antialiased: kernel widened by the factor), HR modcropped to the scale"
# bundled images that are not among quality.PHOTOS (chelsea's twin `cat` is left out on purpose): natural texture
# for training; the grey ones are repeated to RGB (the Y-channel metric sees only luma anyway)
TRAIN_PHOTOS = ("motorcycle_left", "motorcycle_right", "camera", "brick", "grass", "gravel", "moon", "coins",
                "clock", "page", "text")
PHOTO_PIXELS = 6_000_000
_STREAMS = {"train": 101, "test": 102}  # scene seeds apart from `data synth`'s (1-3): other scenes


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """An HxWx3 image cut at the bottom/right to multiples of `scale`."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def bicubic_resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 HxWx3 -> uint8 height x width x 3, PIL bicubic (antialiased when reducing)."""
    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BICUBIC))


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR of an HR image (already modcropped): 1/scale of each side, bicubic, antialiased."""
    return bicubic_resize(hr, hr.shape[0] // scale, hr.shape[1] // scale)


def check_scale(scale: int, option: str = "--scale") -> int:
    if scale not in SCALES:
        raise DataError(f"{option} {scale}: use {' or '.join(map(str, SCALES))} (the SR generators here upscale x2 "
                        "or x4)")
    return scale


def _sources(n_train: int, n_test: int, size: int, seed: int) -> dict[str, list[tuple[str, Any]]]:
    """split -> (file stem, how to draw it): scenes by (seed, split, index), photos by name."""
    def scenes(split: str, n: int) -> list[tuple[str, Any]]:
        return [(f"scene_{i:06d}", (seed, _STREAMS[split], i, size)) for i in range(n)]

    return {"train": scenes("train", n_train) + [(f"photo_{name}", name) for name in TRAIN_PHOTOS],
            "test": scenes("test", n_test) + [(f"photo_{name}", name) for name in PHOTOS]}


def sr_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A landscape (synthetic.make_scene) with sharp detail on top: the landscapes alone are smooth, and a x4
    downscale of smooth content loses little, so there would be little to learn. Two to five of: stripe patches
    (period 2.5-12 px, any angle: fine texture the downscale aliases or erases), rotated rectangles (straight
    sharp edges) and thin lines (1-3 px)."""
    img = make_scene(rng, size).astype(np.float64) / 255.0
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float64) + 0.5) / size
    for _ in range(int(rng.integers(2, 6))):
        kind, colour = int(rng.integers(3)), rng.uniform(0.0, 1.0, 3)
        cx, cy, r, angle = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)  # coordinates along / across the angle
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        if kind == 0:
            period = rng.uniform(2.5, 12.0) / size
            mask = (np.hypot(u, v) <= r) & (np.mod(u / period, 1.0) < 0.5)
        elif kind == 1:
            mask = (np.abs(u) <= r) & (np.abs(v) <= r * rng.uniform(0.2, 1.0))
        else:
            mask = (np.abs(v) <= rng.uniform(0.5, 1.5) / size) & (np.abs(u) <= 2 * r)
        img[mask] = colour
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _draw(source: Any) -> np.ndarray:
    if isinstance(source, str):
        return photo(source)
    seed, stream, index, size = source
    return sr_scene(np.random.default_rng([seed, stream, index]), size)


def write_sr_data(out: str | Path, scale: int = 4, n_train: int = 400, n_test: int = 20, size: int = 128,
                  seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Write the built-in SR dataset (module docstring) into OUT atomically; returns its card.

    An existing non-empty OUT is refused unless overwrite (--force); OUT is complete or absent.
    """
    out = Path(out)
    check_scale(scale)
    if n_train < 1 or n_test < 1:
        raise DataError(f"--n-train and --n-test must be >= 1 (got {n_train}, {n_test})")
    if size < 16 * scale:
        raise DataError(f"--size {size}: scenes must be at least {16 * scale} pixels (16 LR pixels at x{scale})")
    sources = _sources(n_train, n_test, size, seed)
    files: dict[str, dict[str, str]] = {"train": {}, "test": {}}
    # the disk check counts images of size x size: the bundled photographs (HR + LR) are ~5.6 M pixels
    with new_dataset_dir(out, overwrite, 2 * (n_train + n_test) + PHOTO_PIXELS // size**2, size) as tmp:
        hashes: dict[str, set[str]] = {"train": set(), "test": set()}
        for split, items in sources.items():
            for folder in ("hr", "lr"):
                (tmp / split / folder).mkdir(parents=True)
            for stem, source in items:
                hr = modcrop(_draw(source), scale)
                hashes[split].add(_digest(hr))
                _save_png(hr, tmp / split / "hr" / f"{stem}.png")
                _save_png(bicubic_downscale(hr, scale), tmp / split / "lr" / f"{stem}.png")
                files[split][f"{stem}.png"] = "scene" if stem.startswith("scene_") else "photo"
        assert not hashes["train"] & hashes["test"], "a held-out SR image is also a training image"
        card = {"format": FORMAT, "scale": scale, "seed": seed, "scene_size": size, "lr": LR_METHOD,
                "n_train": len(files["train"]), "n_test": len(files["test"]),
                "layout": "train/hr, train/lr, test/hr, test/lr: same names; lr = bicubic_downscale(hr)",
                "files": files}
        (tmp / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    return card


def _digest(img: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(img.tobytes() + str(img.shape).encode()).hexdigest()


def read_sr_card(root: str | Path) -> dict[str, Any] | None:
    """The card of a data root written by `data synth-sr`, else None (a user's own SR data has none)."""
    path = Path(root) / CARD_NAME
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e}); regenerate the data root with `cgdeploy data synth-sr`") from e
    if card.get("format") != FORMAT:
        raise DataError(f"{path}: format {card.get('format')!r} is not {FORMAT}; regenerate with "
                        "`cgdeploy data synth-sr`")
    return dict(card)


def is_sr_root(root: str | Path, phase: str = "train") -> bool:
    """Whether `root` has the SR layout's <phase>/hr folder."""
    return (Path(root) / phase / "hr").is_dir()
