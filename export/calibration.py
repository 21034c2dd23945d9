"""Calibration images for `cgdeploy export --int8`: where they come from, what was skipped, and their hash.

Sources, first that applies: the folder the user gives (--calib, searched recursively, any format Pillow
reads), else the training data of the run the checkpoint belongs to (its config.json's dataroot: the
generator's input domain), else the built-in known-mapping dataset (procedural scenes, made in memory).
Each image is resized (shorter side) and centre-cropped to the model's training size, as the model saw its
data. The images are split, deterministically, into a calibration set (NNCF's statistics) and a held-out set
that only the accuracy guard and the parity gate see. The hash covers the bytes of every file used (or the
generated pixels) and the size, so the card says exactly what calibrated the graph.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cyclegan_deploy.errors import DataError
from cyclegan_deploy.frames import to_model
from cyclegan_deploy.metadata import ModelMeta

MIN_HOLDOUT, MAX_HOLDOUT = 4, 16


@dataclass
class Calibration:
    kind: str  # folder | training-data | built-in
    source: str  # what to tell the user: the folder, or how the built-in images were made
    sha256: str
    size: int  # images are size x size
    calib: list[np.ndarray]  # (1, C, size, size) float32 in the model's input range
    holdout: list[np.ndarray]
    skipped: list[str] = field(default_factory=list)  # "path (why)" for files that could not be read

    def describe(self) -> str:
        skipped = f"; {len(self.skipped)} unreadable file(s) skipped" if self.skipped else ""
        return (f"{len(self.calib)} calibration + {len(self.holdout)} held-out images ({self.size}x{self.size}) "
                f"from {self.kind} {self.source}{skipped}")

    def card(self) -> dict[str, object]:
        return {"kind": self.kind, "source": self.source, "sha256": self.sha256, "size": self.size,
                "calibration_images": len(self.calib), "holdout_images": len(self.holdout),
                "skipped_files": len(self.skipped)}


def holdout_size(n_calib: int) -> int:
    """Held-out images wanted beside n_calib calibration images: a quarter of them, within [4, 16]."""
    return min(MAX_HOLDOUT, max(MIN_HOLDOUT, n_calib // 4))


def split_counts(total: int, n_calib: int) -> tuple[int, int]:
    """(calibration, held-out) counts from `total` usable images: the held-out set is a quarter of the
    calibration size within [4, 16], or what is left beyond n_calib (at least one); a source with no more
    than n_calib images gives up a fifth of them (at least one)."""
    holdout = holdout_size(n_calib)
    if total > n_calib:
        holdout = min(holdout, total - n_calib)
        return n_calib, holdout
    holdout = max(1, total // 5)
    return total - holdout, holdout


def model_side(meta: ModelMeta) -> int:
    m = max(1, meta.multiple)
    return max(m, round(meta.train_size / m) * m)


def _square(img: np.ndarray | object, side: int) -> np.ndarray:
    from PIL import Image

    pil = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
    scale = side / min(pil.size)
    size = (max(side, round(pil.width * scale)), max(side, round(pil.height * scale)))
    pil = pil.resize(size, Image.Resampling.BICUBIC)
    left, top = (pil.width - side) // 2, (pil.height - side) // 2
    return np.asarray(pil.crop((left, top, left + side, top + side)), dtype=np.uint8)


def _pick(n_total: int, n: int) -> list[int]:
    """n indices spread evenly over n_total (different scenes rather than the first n files)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, n).round()})


def _split(images: list[np.ndarray], n_calib: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Held-out = every k-th image (deterministic, spread over the source), calibration = the rest."""
    n_cal, n_hold = split_counts(len(images), n_calib)
    hold_idx = set(_pick(len(images), n_hold))
    holdout = [im for i, im in enumerate(images) if i in hold_idx]
    calib = [im for i, im in enumerate(images) if i not in hold_idx][:n_cal]
    return calib, holdout


def from_folder(folder: Path, meta: ModelMeta, n_calib: int, kind: str = "folder",
                half: str | None = None) -> Calibration:
    """Images under `folder` (recursive). Unreadable files are reported in `skipped` and passed over; `half`
    (left | right) takes one side of aligned pix2pix A|B images."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: calibration folder not found; pass --calib DIR with images of the "
                        "generator's input domain")
    files = sorted((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")), key=str)
    side, want = model_side(meta), n_calib + holdout_size(n_calib)
    digest = hashlib.sha256(f"{side}:{half}".encode())
    images: list[np.ndarray] = []
    skipped: list[str] = []
    for path in files:  # in order, so the images used do not depend on which files fail
        if len(images) >= want:
            break
        try:
            data = path.read_bytes()
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            skipped.append(f"{path} ({str(e)[:80] or type(e).__name__})")
            continue
        if half:
            w = rgb.width // 2
            rgb = rgb.crop((0, 0, w, rgb.height) if half == "left" else (w, 0, 2 * w, rgb.height))
        digest.update(hashlib.sha256(data).digest())
        images.append(to_model(_square(rgb, side), meta.input_range))
    if len(images) < 2:
        raise DataError(f"{folder}: {len(images)} readable image(s) (need at least 2; {len(skipped)} unreadable "
                        f"file(s) skipped); pass --calib DIR with images of the generator's input domain")
    calib, holdout = _split(images, n_calib)
    return Calibration(kind, str(folder), digest.hexdigest(), side, calib, holdout, skipped)


def built_in(meta: ModelMeta, n_calib: int, seed: int = 0) -> Calibration:
    """Procedural scenes of the built-in dataset (domain A, or f(A) for a BtoA generator), made in memory."""
    from cyclegan_deploy.train.synthetic import apply_mapping, scene

    side = model_side(meta)
    n_cal, n_hold = n_calib, holdout_size(n_calib)
    domain_b = meta.direction == "BtoA"
    digest = hashlib.sha256(f"{side}:{seed}:{domain_b}".encode())
    images = []
    for i in range(n_cal + n_hold):
        img = scene(seed, "trainA", i, side)
        img = apply_mapping(img) if domain_b else img
        digest.update(img.tobytes())
        images.append(to_model(img, meta.input_range))
    calib, holdout = _split(images, n_calib)
    source = f"(seed {seed}, {'f(A) scenes' if domain_b else 'domain A scenes'}, `cgdeploy data synth`)"
    return Calibration("built-in", source, digest.hexdigest(), side, calib, holdout)


def training_folder(checkpoint: Path, direction: str | None) -> tuple[Path, str | None] | None:
    """The generator's input-domain folder of the run `checkpoint` belongs to, if that data is still there:
    (folder, half) where half is left/right for aligned pix2pix data. None when unknown or gone."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    config = run_dir / "config.json"
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    dataroot = cfg.get("dataroot") if isinstance(cfg, dict) else None
    if not isinstance(dataroot, str) or not dataroot:
        return None
    # a relative dataroot is relative to where training ran: the current folder, or one above the run dir
    candidates = [Path(dataroot)] + [parent / dataroot for parent in run_dir.resolve().parents]
    root = next((p for p in candidates if p.is_dir()), None)
    if root is None:
        return None
    swapped = cfg.get("direction") == "BtoA"  # the reference swaps the domains for --direction BtoA
    if cfg.get("model") == "pix2pix":
        left = not swapped
        return (root / "train", "left" if left else "right") if (root / "train").is_dir() else None
    domain_a = (direction != "BtoA") != swapped
    folder = root / ("trainA" if domain_a else "trainB")
    return (folder, None) if folder.is_dir() else None


def collect(calib_dir: Path | None, checkpoint: Path, meta: ModelMeta, n_calib: int,
            echo: Callable[[str], None] = print) -> Calibration:
    """The calibration set by the rule in the module docstring; says which source it used and what it
    skipped."""
    if n_calib < 1:
        raise DataError(f"--calib-size {n_calib}: use at least 1 image (default 64)")
    if calib_dir is not None:
        cal = from_folder(Path(calib_dir), meta, n_calib)
    else:
        found = training_folder(checkpoint, meta.direction)
        if found is not None:
            cal = from_folder(found[0], meta, n_calib, kind="training-data", half=found[1])
        else:
            cal = built_in(meta, n_calib)
            echo("note: no --calib folder and the run's training data was not found: calibrating on the "
                 "built-in dataset; pass --calib DIR with images like the ones you will translate")
    for line in cal.skipped[:5]:
        echo(f"skipped unreadable calibration file {line}")
    if len(cal.skipped) > 5:
        echo(f"... and {len(cal.skipped) - 5} more unreadable file(s)")
    echo(f"int8 calibration: {cal.describe()}")
    return cal
