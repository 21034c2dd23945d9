"""Translate one image or a folder of images (recursive, sorted) with any Backend.

Output size == input size x the card's scale (reflect-pad to the model's multiple, crop back); pixels are
converted by the card's value ranges. Grey, palette, CMYK and
16-bit inputs are converted to RGB for the model; an alpha channel is put back on the output when the
output format keeps alpha (PNG, WebP, TIFF). EXIF orientation is applied first, like the video path
honours rotation: the model sees the photo upright and the output is written upright. Unreadable files
are skipped and listed; only "nothing could be translated" is an error. Same-size images are batched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cyclegan_deploy.artifacts import atomic_output
from cyclegan_deploy.backends.base import Backend
from cyclegan_deploy.errors import ConfigError, MediaError, ShapeError
from cyclegan_deploy.frames import crop, from_model, pad_to_multiple, resize_frames, to_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")
WRITE_AS = {".gif": ".png", ".ppm": ".png", ".pgm": ".png"}  # formats we read but would write badly


@dataclass
class ImagesReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)

    def summary(self) -> str:
        lines = [f"translated {len(self.written)} image(s)" + (f", skipped {len(self.skipped)}:" if self.skipped
                                                               else "")]
        lines += [f"  {p}: {why}" for p, why in self.skipped]
        return "\n".join(lines)


@dataclass
class _Item:
    src: Path
    dst: Path
    rgb: np.ndarray  # (H, W, 3) uint8, upright
    alpha: np.ndarray | None


def list_images(src: Path, exclude: Path | None = None) -> list[Path]:
    """`src` itself if it is a file, else every image under it (recursive, sorted; `exclude` skipped)."""
    if src.is_file():
        return [src]
    found = [p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    if exclude is not None:
        found = [p for p in found if not p.resolve().is_relative_to(exclude)]
    return sorted(found)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        im: Image.Image = ImageOps.exif_transpose(opened)
        alpha = None
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            alpha = np.asarray(im.getchannel("A"))
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bit, not clip
            data = np.asarray(im, dtype=np.float64)
            top = 65535.0 if data.max() > 255 else 255.0
            im = Image.fromarray(np.clip(data * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))
        return np.asarray(im.convert("RGB")), alpha


def _write(item: _Item, rgb: np.ndarray) -> None:
    from PIL import Image

    im = Image.fromarray(rgb)
    suffix = item.dst.suffix.lower()
    if item.alpha is not None and suffix in ALPHA_SUFFIXES:
        alpha = item.alpha if item.alpha.shape == rgb.shape[:2] else _resize_alpha(item.alpha, rgb.shape[:2])
        im.putalpha(Image.fromarray(alpha))
    kwargs = {"quality": 95} if suffix in (".jpg", ".jpeg", ".webp") else {}
    with atomic_output(item.dst) as tmp:
        im.save(tmp, format=Image.registered_extensions()[suffix], **kwargs)


def _resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(alpha).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def _out_path(src: Path, root: Path, out_dir: Path) -> Path:
    rel = src.relative_to(root) if src != root else Path(src.name)
    return out_dir / rel.with_suffix(WRITE_AS.get(src.suffix.lower(), src.suffix))


def translate_images(src: str | Path, out_dir: str | Path, backend: Backend, *, batch: int = 4,
                     size: tuple[int, int] | None = None) -> ImagesReport:
    """Translate an image or every image under a folder into out_dir (same relative paths and names).

    size: (H, W) to resize to before the model (the output then has that size too).
    """
    src, out_dir = Path(src), Path(out_dir)
    if not src.exists():
        raise MediaError(f"{src}: no such file or folder; check the path")
    if batch < 1:
        raise ConfigError(f"--batch {batch}: must be at least 1")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: is a file; -o takes an output folder for `translate`")
    if backend.meta.input_nc != 3 or backend.meta.output_nc != 3:
        raise ConfigError(f"{backend.name}: the model maps {backend.meta.input_nc} to {backend.meta.output_nc} "
                          "channels; `translate` needs an RGB (3 -> 3 channel) generator")
    root = src if src.is_dir() else src.parent
    if src.is_dir() and out_dir.resolve() == src.resolve():
        raise ConfigError(f"{out_dir}: output folder is the input folder; outputs would overwrite the inputs")
    files = list_images(src, exclude=out_dir.resolve())
    if not files:
        raise MediaError(f"{src}: no images found ({', '.join(IMAGE_SUFFIXES)}); pass an image or a folder of them")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MediaError(f"{out_dir}: cannot create the output folder ({e.strerror}); choose another -o") from e
    report = ImagesReport()
    pending: dict[tuple[int, int], list[_Item]] = {}
    for path in files:
        dst = _out_path(path, root, out_dir)
        if dst.resolve() == path.resolve():
            report.skipped.append((path, "output would overwrite the input; use another -o"))
            continue
        try:
            rgb, alpha = _read(path)
        except Exception as e:  # PIL raises OSError, UnidentifiedImageError, ValueError, DecompressionBombError...
            why = (str(e).strip().splitlines() or [""])[0][:120]
            report.skipped.append((path, f"unreadable ({type(e).__name__}{': ' + why if why else ''})"))
            continue
        if min(rgb.shape[:2]) < 2:
            report.skipped.append((path, f"too small ({rgb.shape[1]}x{rgb.shape[0]}); needs at least 2x2"))
            continue
        if size is not None:
            rgb = resize_frames(rgb[None], *size)[0]
            alpha = None if alpha is None else _resize_alpha(alpha, size)
        group = pending.setdefault(rgb.shape[:2], [])
        group.append(_Item(path, dst, rgb, alpha))
        if len(group) == batch:
            _run(pending.pop(rgb.shape[:2]), backend, report)
    for group in pending.values():
        _run(group, backend, report)
    if not report.written:
        raise MediaError(f"{src}: no image could be translated ({len(report.skipped)} skipped: "
                         + "; ".join(f"{p.name}: {why}" for p, why in report.skipped[:3]) + ")")
    return report


def _run(items: list[_Item], backend: Backend, report: ImagesReport) -> None:
    meta = backend.meta
    h, w = items[0].rgb.shape[:2]
    x = pad_to_multiple(to_model(np.stack([it.rgb for it in items]), meta.input_range), meta.multiple)
    y = backend(x)
    if y.shape != (x.shape[0], 3, x.shape[2] * meta.scale, x.shape[3] * meta.scale):
        raise ShapeError(f"{backend.name} returned {y.shape} for a {x.shape} batch; the card says 3 channels at "
                         f"{meta.scale}x the size")
    out = from_model(crop(y, h, w, meta.scale), meta.output_range)
    for item, rgb in zip(items, out, strict=True):
        try:
            _write(item, rgb)
        except OSError as e:
            raise MediaError(f"{item.dst}: cannot write ({e.strerror or e}); check the output folder") from e
        report.written.append(item.dst)
