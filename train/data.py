"""Datasets as the reference lays them out: unpaired DATAROOT/trainA + trainB, aligned DATAROOT/train/*.jpg
(A|B side by side), and a single folder; transforms as the reference's get_transform.

Randomness (shuffle order, unpaired B pick, crop offset, flip) is drawn per sample from a generator seeded by
(seed, epoch, index), never from worker-global RNGs: the data a run sees is the same for any --workers and
is reproduced exactly when a run is resumed, even in the middle of an epoch.
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from cyclegan_deploy.errors import DataError
from cyclegan_deploy.metadata import REFERENCE_RANGE
from cyclegan_deploy.train.config import TrainConfig

if TYPE_CHECKING:
    from cyclegan_deploy.train.sr_dataset import SRDataset

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
Key = tuple[int, int]  # (index, per-sample seed) as yielded by EpochSampler


class DataWarning(UserWarning):
    """Files skipped while scanning or loading a dataset (each reported once, with its path)."""


def list_images(folder: str | Path, role: str = "images") -> list[Path]:
    """Readable images under `folder` (recursive, sorted); others are reported once and skipped.

    Headers are opened here so a non-image or garbage file is reported up front instead of killing a
    worker mid-epoch; `role` names what the folder should hold, for the error message.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; it should hold the {role}")
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in sorted((p for p in folder.rglob("*") if p.is_file()), key=str):
        if path.name.startswith("."):  # .DS_Store, editor temp files
            continue
        if path.suffix.lower() not in IMG_EXTENSIONS:
            skipped.append((path, f"not an image ({', '.join(IMG_EXTENSIONS)})"))
            continue
        try:
            with Image.open(path) as img:
                img.verify()  # cheap structural check (PNG CRCs); decoding errors are handled at load time
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            skipped.append((path, f"unreadable: {str(e)[:100] or type(e).__name__}"))
            continue
        images.append(path)
    if skipped:
        listing = "; ".join(f"{p} ({why})" for p, why in skipped)
        warnings.warn(f"skipped {len(skipped)} file(s) in {folder}: {listing}", DataWarning, stacklevel=2)
    if not images:
        raise DataError(f"{folder}: no readable images found (searched recursively for {', '.join(IMG_EXTENSIONS)}); "
                        f"put the {role} there")
    return images


def load_rgb(path: Path) -> Image.Image:
    """RGB image (grayscale, palette and RGBA converted as the reference does with .convert('RGB'))."""
    with Image.open(path) as img:
        return img.convert("RGB")


# --- transforms (the reference's get_params / get_transform, in PIL + numpy) ---

@dataclass(frozen=True)
class TransformParams:
    x: int
    y: int
    flip: bool


def _scale_width(img: Image.Image, target_width: int, crop_size: int) -> Image.Image:
    w, h = img.size
    if w == target_width and h >= crop_size:
        return img
    return img.resize((target_width, int(max(target_width * h / w, crop_size))), Image.Resampling.BICUBIC)


def _make_multiple(img: Image.Image, base: int) -> Image.Image:
    w, h = img.size
    nw, nh = max(base, round(w / base) * base), max(base, round(h / base) * base)
    return img if (nw, nh) == (w, h) else img.resize((nw, nh), Image.Resampling.BICUBIC)


def resized_size(cfg: TrainConfig, size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) after the resize step, before cropping."""
    w, h = size
    if cfg.preprocess == "resize_and_crop":
        return cfg.load_size, cfg.load_size
    if cfg.preprocess == "scale_width_and_crop":
        return cfg.load_size, cfg.load_size * h // w
    return w, h


def draw_params(cfg: TrainConfig, size: tuple[int, int], rng: np.random.Generator) -> TransformParams:
    w, h = resized_size(cfg, size)
    x = int(rng.integers(0, max(0, w - cfg.crop_size) + 1))
    y = int(rng.integers(0, max(0, h - cfg.crop_size) + 1))
    return TransformParams(x=x, y=y, flip=bool(rng.random() > 0.5))


def apply_transform(img: Image.Image, cfg: TrainConfig, params: TransformParams) -> torch.Tensor:
    """Resize / crop / flip as --preprocess says, then to float32 CHW in [-1, 1]."""
    if cfg.preprocess == "resize_and_crop":
        img = img.resize((cfg.load_size, cfg.load_size), Image.Resampling.BICUBIC)
    elif cfg.preprocess in ("scale_width", "scale_width_and_crop"):
        img = _scale_width(img, cfg.load_size, cfg.crop_size)
    if "crop" in cfg.preprocess:
        w, h = img.size
        if w < cfg.crop_size or h < cfg.crop_size:
            raise DataError(f"image {w}x{h} is smaller than --crop-size {cfg.crop_size}; lower --crop-size or "
                            "use --preprocess resize_and_crop")
        img = img.crop((params.x, params.y, params.x + cfg.crop_size, params.y + cfg.crop_size))
    if cfg.preprocess == "none" or cfg.preprocess == "scale_width":
        img = _make_multiple(img, cfg.multiple)  # the generator needs sizes it can down/upsample exactly
    if not cfg.no_flip and params.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(np.asarray(img), cfg.value_range)


def to_tensor(rgb: np.ndarray, value_range: Sequence[float] = REFERENCE_RANGE) -> torch.Tensor:
    """uint8 HWC -> float32 CHW in the family's range. Divides as the reference's Normalize((0.5,)*3, (0.5,)*3)
    does for [-1, 1] (x/127.5 - 1, bit for bit); the runtime multiplies by the reciprocal (1 ulp apart at most)."""
    lo, hi = float(value_range[0]), float(value_range[1])
    arr = rgb.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0 / (hi - lo)) + np.float32(lo)
    return torch.from_numpy(np.ascontiguousarray(arr))


# --- datasets ---

class _ImageDataset(Dataset[dict[str, Any]]):
    """Shared loading with a deterministic fallback for files that pass the header check but fail to decode."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self._reported: set[Path] = set()

    def _load(self, paths: list[Path], index: int) -> tuple[Image.Image, Path]:
        for step in range(len(paths)):
            path = paths[(index + step) % len(paths)]
            try:
                return load_rgb(path), path
            except (OSError, ValueError, SyntaxError) as e:
                if path not in self._reported:  # once per worker process
                    self._reported.add(path)
                    warnings.warn(f"skipped unreadable image {path}: {str(e)[:100]}", DataWarning, stacklevel=2)
        raise DataError(f"{paths[0].parent}: none of the {len(paths)} images could be decoded; check the files")


class UnpairedDataset(_ImageDataset):
    """DATAROOT/<phase>A and <phase>B; A in (shuffled) order, B drawn at random (reference serial_batches off)."""

    def __init__(self, cfg: TrainConfig, root: str | Path, phase: str = "train") -> None:
        super().__init__(cfg)
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: data root not found; pass a folder with {phase}A/ and {phase}B/ "
                            "(or make one with `cgdeploy data synth`)")
        a, b = ("B", "A") if cfg.direction == "BtoA" else ("A", "B")
        self.dir_A, self.dir_B = root / f"{phase}{a}", root / f"{phase}{b}"
        self.A_paths = list_images(self.dir_A, f"domain-{a} {phase} images")
        self.B_paths = list_images(self.dir_B, f"domain-{b} {phase} images")

    def __len__(self) -> int:
        return max(len(self.A_paths), len(self.B_paths))

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, seed = key
        rng = np.random.default_rng(seed)
        img_a, path_a = self._load(self.A_paths, index % len(self.A_paths))
        img_b, path_b = self._load(self.B_paths, int(rng.integers(len(self.B_paths))))
        # the reference draws independent crop/flip for each domain (unpaired images share nothing)
        return {"A": apply_transform(img_a, self.cfg, draw_params(self.cfg, img_a.size, rng)),
                "B": apply_transform(img_b, self.cfg, draw_params(self.cfg, img_b.size, rng)),
                "A_path": str(path_a), "B_path": str(path_b)}


class AlignedDataset(_ImageDataset):
    """DATAROOT/<phase>/*.jpg holding A|B side by side (pix2pix); both halves get the same crop and flip."""

    def __init__(self, cfg: TrainConfig, root: str | Path, phase: str = "train") -> None:
        super().__init__(cfg)
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: data root not found; pass a folder with {phase}/ holding A|B image pairs")
        self.dir_AB = root / phase
        self.AB_paths = list_images(self.dir_AB, "A|B image pairs side by side (pix2pix layout)")

    def __len__(self) -> int:
        return len(self.AB_paths)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, seed = key
        rng = np.random.default_rng(seed)
        ab, path = self._load(self.AB_paths, index)
        w, h = ab.size
        if w < 2:
            raise DataError(f"{path}: {w}x{h} is too narrow to split into A|B halves")
        half = w // 2
        img_a, img_b = ab.crop((0, 0, half, h)), ab.crop((half, 0, w, h))
        if self.cfg.direction == "BtoA":
            img_a, img_b = img_b, img_a
        params = draw_params(self.cfg, img_a.size, rng)
        return {"A": apply_transform(img_a, self.cfg, params), "B": apply_transform(img_b, self.cfg, params),
                "A_path": str(path), "B_path": str(path)}


class SingleDataset(_ImageDataset):
    """One folder of images, for translating or evaluating (no randomness unless the config crops/flips)."""

    def __init__(self, cfg: TrainConfig, folder: str | Path) -> None:
        super().__init__(cfg)
        self.paths = list_images(folder, "images to translate")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: Key | int) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        img, path = self._load(self.paths, index)
        params = draw_params(self.cfg, img.size, np.random.default_rng(seed))
        return {"A": apply_transform(img, self.cfg, params), "A_path": str(path)}


def distill_layout(root: Path, direction: str, phase: str = "train") -> tuple[str, Path]:
    """What distillation reads under `root`, and from where: ("unpaired", root) with {phase}A/ + {phase}B/;
    ("inputs", {phase}A/, or {phase}B/ for BtoA) with only the input domain (never the whole root, whose test
    split is held out); ("aligned", root) with {phase}/ A|B pairs; else ("inputs", root), a folder of images.
    Only "unpaired" and "aligned" give the discriminator real target images (--gan-real data)."""
    if (root / f"{phase}A").is_dir() and (root / f"{phase}B").is_dir():
        return "unpaired", root
    source = root / f"{phase}{'B' if direction == 'BtoA' else 'A'}"
    if source.is_dir():
        return "inputs", source
    if (root / phase).is_dir() and not (root / f"{phase}A").is_dir():
        return "aligned", root
    return "inputs", root


def build_dataset(cfg: TrainConfig, phase: str = "train"
                  ) -> UnpairedDataset | AlignedDataset | SingleDataset | SRDataset:
    """The reference's dataset mode for the model: unaligned for CycleGAN, aligned for pix2pix. Distillation
    takes either layout (the target domain then feeds its discriminator) or any folder of input images; srgan
    takes HR (+ LR) pairs (train/sr_dataset.py)."""
    if cfg.model == "srgan":
        from cyclegan_deploy.train.sr_dataset import SRDataset

        return SRDataset(cfg, cfg.dataroot, phase)
    if cfg.model == "distill":
        root = Path(cfg.dataroot)
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found; pass --data with a folder of input images or a data "
                            f"root with {phase}A/ and {phase}B/")
        layout, folder = distill_layout(root, cfg.direction, phase)
        if layout == "unpaired":
            return UnpairedDataset(cfg, root, phase)
        return AlignedDataset(cfg, root, phase) if layout == "aligned" else SingleDataset(cfg, folder)
    if cfg.model == "pix2pix":
        return AlignedDataset(cfg, cfg.dataroot, phase)
    return UnpairedDataset(cfg, cfg.dataroot, phase)


# --- sampling and loading ---

def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochSampler(Sampler[Key]):
    """Shuffled order per epoch from (seed, epoch); can start part-way into an epoch (mid-epoch resume)."""

    def __init__(self, length: int, seed: int, shuffle: bool = True) -> None:
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.epoch, self.start = 1, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Next iteration yields epoch `epoch`'s order from sample `start` on."""
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.length)
        return np.random.default_rng([self.seed, epoch]).permutation(self.length)

    def __iter__(self) -> Iterator[Key]:
        for index in self.order(self.epoch)[self.start:]:
            yield int(index), sample_seed(self.seed, self.epoch, int(index))

    def __len__(self) -> int:
        return max(0, self.length - self.start)


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C goes to the whole process group, and systemd's stop sends SIGTERM to every process of the unit:
    # workers ignore both so the main process can finish the current step, save a resumable checkpoint and
    # shut the workers down cleanly (they exit with it; torch's watchdog ends them if it is killed outright).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# torch's own warning for more workers than CPUs: a paragraph, printed at construction and again at the first
# iteration; make_loader says it once in one line instead
TORCH_WORKER_WARNING = "This DataLoader will create"


def make_loader(dataset: Dataset[dict[str, Any]], cfg: TrainConfig, sampler: EpochSampler,
                pin_memory: bool = False) -> DataLoader[dict[str, Any]]:
    from cyclegan_deploy.machine import allowed_cpus

    cpus = allowed_cpus()
    if cfg.num_workers > cpus:
        warnings.warn(f"--workers {cfg.num_workers} is more than the {cpus} CPU(s) this process may use: data "
                      f"loading may slow down or stall; use --workers {cpus}", DataWarning, stacklevel=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCH_WORKER_WARNING)
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          worker_init_fn=_worker_init if cfg.num_workers else None, pin_memory=pin_memory,
                          persistent_workers=cfg.num_workers > 0, drop_last=False)
