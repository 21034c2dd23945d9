"""The super-resolution training set: HR (+ LR) pairs in the layout `cgdeploy data synth-sr` writes
(train/sr_data.py), random aligned crops, the same per-sample seeding as every dataset here (data.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cyclegan_deploy.errors import DataError
from cyclegan_deploy.train.config import TrainConfig
from cyclegan_deploy.train.data import Key, _ImageDataset, list_images, load_rgb, to_tensor
from cyclegan_deploy.train.registry import family_for
from cyclegan_deploy.train.sr_data import bicubic_downscale, modcrop


class SRDataset(_ImageDataset):
    """Super-resolution pairs: DATAROOT/<phase>/hr and, when present, <phase>/lr with the same names (else LR is
    made on the fly: sr_data.bicubic_downscale, what `data synth-sr` stores). A sample is a random aligned crop
    (HR --crop-size, LR crop/scale at the same place) with random flips and transpose (the 8 symmetries SR
    training augments with; --no-flip: none). "A" is the LR crop in the generator's input range, "B" the HR crop
    in its output range. An image of many crops' area is visited that many times per epoch, so large photographs
    weigh by their area, not as one sample. Decoded images are cached per process up to CACHE_BYTES."""

    CACHE_BYTES = 256 * 2**20  # per loader process; the built-in set is ~40 MiB decoded

    def __init__(self, cfg: TrainConfig, root: str | Path, phase: str = "train") -> None:
        super().__init__(cfg)
        root, self.scale = Path(root), cfg.scale
        family = family_for(cfg.netG)
        self.ranges = (family.input_range, family.output_range)
        if not root.is_dir():
            raise DataError(f"{root}: data root not found; pass a folder with {phase}/hr/ (HR images), or make one "
                            "with `cgdeploy data synth-sr`")
        if not (root / phase / "hr").is_dir():
            raise DataError(f"{root}: not a super-resolution data root (no {phase}/hr/); put HR images in "
                            f"{root}/{phase}/hr (and their LR in {phase}/lr, else they are bicubic-downscaled), or "
                            "make one with `cgdeploy data synth-sr`")
        self.hr_paths = list_images(root / phase / "hr", "HR images")
        lr_dir = root / phase / "lr"
        self.lr_dir = lr_dir if lr_dir.is_dir() else None
        self.index: list[int] = []
        for i, path in enumerate(self.hr_paths):
            if self.lr_dir is not None and not (self.lr_dir / path.name).is_file():
                raise DataError(f"{self.lr_dir / path.name}: missing LR image for {path}; add it, or remove "
                                f"{self.lr_dir} to make LR images by bicubic downscaling")
            with Image.open(path) as img:
                w, h = img.size
            if min(w, h) < cfg.crop_size:
                raise DataError(f"{path}: {w}x{h} is smaller than --crop-size {cfg.crop_size}; lower --crop-size "
                                "or remove the image")
            self.index += [i] * max(1, (w * h) // cfg.crop_size**2)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.index)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(HR modcropped to the scale, LR) of image i as uint8 HxWx3."""
        if i in self._cache:
            return self._cache[i]
        img, path = self._load(self.hr_paths, i)
        hr = modcrop(np.asarray(img), self.scale)
        if self.lr_dir is None:
            lr = bicubic_downscale(hr, self.scale)
        else:
            lr = np.asarray(load_rgb(self.lr_dir / path.name))
            if lr.shape[0] * self.scale != hr.shape[0] or lr.shape[1] * self.scale != hr.shape[1]:
                raise DataError(f"{self.lr_dir / path.name}: {lr.shape[1]}x{lr.shape[0]} is not 1/{self.scale} of "
                                f"{path} ({hr.shape[1]}x{hr.shape[0]}); the data root was made for another scale: "
                                f"`cgdeploy data synth-sr OUT --scale {self.scale}`, or remove {self.lr_dir}")
        if self._cached_bytes + hr.nbytes + lr.nbytes <= self.CACHE_BYTES:
            self._cache[i] = hr, lr
            self._cached_bytes += hr.nbytes + lr.nbytes
        return hr, lr

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, seed = key
        rng = np.random.default_rng(seed)
        hr, lr = self.pair(self.index[index])
        p, s = self.cfg.crop_size // self.scale, self.scale
        y, x = int(rng.integers(0, lr.shape[0] - p + 1)), int(rng.integers(0, lr.shape[1] - p + 1))
        lr, hr = lr[y:y + p, x:x + p], hr[y * s:(y + p) * s, x * s:(x + p) * s]
        flips = rng.random(3) < 0.5
        if not self.cfg.no_flip:
            for flip, op in zip(flips, (np.fliplr, np.flipud, lambda a: a.transpose(1, 0, 2)), strict=True):
                lr, hr = (op(lr), op(hr)) if flip else (lr, hr)
        return {"A": to_tensor(lr, self.ranges[0]), "B": to_tensor(hr, self.ranges[1]),
                "A_path": str(self.hr_paths[self.index[index]]), "B_path": str(self.hr_paths[self.index[index]])}
