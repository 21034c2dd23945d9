"""Translate one image or a folder of images (recursive, sorted) with any Backend.

Output size == input size x the card's scale (padded to the model's multiple and minimum size, cropped
back; so a 2x2 image runs too); pixels are converted by the card's value ranges. Grey, palette, CMYK and
16-bit inputs are converted to RGB for the model; an alpha channel is put back on the output when the
output format keeps alpha (PNG, WebP, TIFF). EXIF orientation is applied first, like the video path
honours rotation: the model sees the photo upright and the output is written upright. Same-size images are
batched (the batch lowered to what the memory holds), and the batches go through the backend's run_many:
with OpenVINO in throughput mode several run at once while the next images are read and the last written.

Per file, an image is skipped and listed (never a crash after other outputs were written) when it is
unreadable, over PIL's decompression-bomb limit, or needs more memory than there is; only "nothing could be
translated" is an error. Refused before any work: an output folder that is the input, --size frames that
cannot fit in memory, and (unless force) outputs that already exist, listed. The output folder is locked
against a second run, proven writable first, and removed again if the run created it and failed before
writing anything. A failure mid-run (a model returning NaN, a full disk) keeps the complete images written
so far (each is written atomically) and says how many.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy import machine
from cyclegan_deploy.artifacts import atomic_output
from cyclegan_deploy.backends.base import Backend
from cyclegan_deploy.errors import CgDeployError, ConfigError, MediaError, OutputError
from cyclegan_deploy.frames import crop, from_model, model_size, pad_to_model, resize_frames, to_model
from cyclegan_deploy.machine import gib
from cyclegan_deploy.model_checks import (
    all_finite,
    bytes_per_pixel,
    check_generator,
    check_output,
    model_label,
    non_finite_error,
    run_failure,
)
from cyclegan_deploy.outputs import check_writable, locked, missing_dirs, os_error_message, remove_empty_dirs
from cyclegan_deploy.video.inflight import inflight_for, ordered_outputs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")
WRITE_AS = {".gif": ".png", ".ppm": ".png", ".pgm": ".png"}  # formats we read but would write badly
LOCK_NAME = ".cgdeploy-translate"  # out_dir/.<it>.lock: held while a run writes into the folder
DECODE_BYTES = 12  # per pixel while reading: PIL's image, mode conversions, the uint8 array


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


class _Skip(Exception):
    """This file is skipped, for the reason given (not an error of the run)."""


@dataclass
class _Run:
    backend: Backend
    label: str  # the model file, for messages
    batch: int
    free: int | None  # bytes of memory available (None: unknown, no checks)
    report: ImagesReport
    good_calls: int = 0
    inflight: int = 1  # batches the backend runs at once (each holds its memory)

    def image_bytes(self, h: int, w: int) -> int:
        """Memory one image costs the model call: its padded tensors and activations, the output image."""
        ph, pw = model_size(h, w, self.backend.meta)
        s2 = int(self.backend.meta.scale) ** 2
        return bytes_per_pixel(self.backend.meta, getattr(self.backend, "device", "cpu")) * ph * pw + 6 * s2 * h * w

    def batch_for(self, h: int, w: int) -> int:
        if self.free is None:
            return self.batch
        return max(1, min(self.batch, int(self.free * 0.9 / self.inflight) // max(1, self.image_bytes(h, w))))


def list_images(src: Path, exclude: Path | None = None) -> list[Path]:
    """`src` itself if it is a file, else every image under it (recursive, sorted; `exclude` skipped)."""
    if src.is_file():
        return [src]
    found = [p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    if exclude is not None:
        found = [p for p in found if not p.resolve().is_relative_to(exclude)]
    return sorted(found)


def _read(path: Path, run: _Run, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode `path` upright as RGB (+ alpha); _Skip when it is too large to decode or to translate. The size
    is read from the header first, so nothing large is allocated before the check."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's limit is a skip, not a warning
            opened = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _Skip(f"too large to open safely ({str(e).split(', could')[0]}: PIL's decompression-bomb limit, "
                    "a guard against malicious files); shrink the image first") from e
    with opened:
        w, h = opened.size
        need = DECODE_BYTES * h * w + run.image_bytes(*(size or (h, w)))
        if run.free is not None and need > run.free:
            fix = "choose a smaller --size" if size else "shrink it first, or pass --size HxW"
            raise _Skip(f"{h}x{w} (HxW) needs ~{gib(need)} GiB to translate, {gib(run.free)} GiB available; {fix}")
        return upright_rgb(opened)


def upright_rgb(opened: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """An opened PIL image as uint8 (H, W, 3) RGB turned upright by its EXIF orientation, and its alpha (or
    None); 16/32-bit grey is scaled to 8 bit, not clipped. `translate` and `serve` decode through this."""
    from PIL import Image, ImageOps

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


def _plan(files: list[Path], root: Path, out_dir: Path, report: ImagesReport) -> list[tuple[Path, Path]]:
    """(input, output) pairs, in input order; inputs whose output would be an input, or another input's output
    (pic.gif is written as pic.png: a pic.png beside it keeps its name), are skipped."""
    taken: dict[Path, Path] = {}
    for path in sorted(files, key=lambda f: f.suffix.lower() in WRITE_AS):  # stable: same-suffix names first
        dst = _out_path(path, root, out_dir)
        if dst.resolve() == path.resolve():
            report.skipped.append((path, "output would overwrite the input; use another -o"))
        elif dst in taken:
            report.skipped.append((path, f"same output name as {taken[dst].name} ({dst.name}); rename one"))
        else:
            taken[dst] = path
    order = {f: i for i, f in enumerate(files)}
    return sorted(((src, dst) for dst, src in taken.items()), key=lambda pair: order[pair[0]])


def _refuse_existing(pairs: list[tuple[Path, Path]], out_dir: Path) -> None:
    """The overwrite rule for a folder of outputs: decided per file, before any work, naming the first few."""
    existing = [dst for _, dst in pairs if dst.exists()]
    if existing:
        names = ", ".join(str(p.relative_to(out_dir)) for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise OutputError(f"{out_dir}: {len(existing)} of the {len(pairs)} output file(s) already exist ({names}); "
                          "pass --force to replace them, or choose another -o")


def translate_images(src: str | Path, out_dir: str | Path, backend: Backend, *, batch: int = 4,
                     size: tuple[int, int] | None = None, force: bool = True, progress: bool = False,
                     model: str | Path | None = None, inflight: int | None = None) -> ImagesReport:
    """Translate an image or every image under a folder into out_dir (same relative paths and names).

    size: (H, W) to resize to before the model (the output then has that size too). force: replace existing
    outputs (the library default; `cgdeploy translate` passes --force, refusing them otherwise). progress: a
    bar on stderr when it is a terminal. model: the model file, named in messages. inflight: batches the backend
    runs at once (None: its max_inflight; 1: one call at a time).
    """
    src, out_dir = Path(src), Path(out_dir)
    if not src.exists():
        raise MediaError(f"{src}: no such file or folder; check the path")
    if src.is_file() and src.suffix.lower() in VIDEO_SUFFIXES:
        raise MediaError(f"{src}: is a video, not an image; translate videos with `cgdeploy video {src.name} -o OUT`")
    if batch < 1:
        raise ConfigError(f"--batch {batch}: must be at least 1")
    if inflight is not None and inflight < 1:
        raise ConfigError(f"--inflight {inflight}: must be at least 1 (1: one batch at a time)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: is a file; -o takes an output folder for `translate`")
    label = model_label(backend, model)
    check_generator(backend.meta, label, "translate")
    root = src if src.is_dir() else src.parent
    if src.is_dir() and out_dir.resolve() == src.resolve():
        raise ConfigError(f"{out_dir}: output folder is the input folder; outputs would overwrite the inputs")
    files = list_images(src, exclude=out_dir.resolve())
    if not files:
        raise MediaError(f"{src}: no images found ({', '.join(IMAGE_SUFFIXES)}); pass an image or a folder of them")
    run = _Run(backend, label, batch, machine.available_memory(), ImagesReport(), inflight=inflight_for(backend,
                                                                                                       inflight))
    if size is not None and run.free is not None and run.image_bytes(*size) > run.free:
        raise ConfigError(f"--size {size[0]}x{size[1]}: translating needs ~{gib(run.image_bytes(*size))} GiB per "
                          f"image, {gib(run.free)} GiB available; choose a smaller --size")
    pairs = _plan(files, root, out_dir, run.report)
    if not force:
        _refuse_existing(pairs, out_dir)
    created = missing_dirs(out_dir) + [d for parent in {dst.parent for _, dst in pairs} for d in missing_dirs(parent)]
    try:
        with ExitStack() as stack:
            check_writable(out_dir)
            lock = out_dir / LOCK_NAME  # inside the folder: its parent may not be ours to write
            try:
                stack.enter_context(locked(lock))
            except OutputError as e:
                raise OutputError(str(e).replace(str(lock), str(out_dir), 1)) from None
            if not force:
                _refuse_existing(pairs, out_dir)  # again, under the lock: a run that just finished wrote them
            _translate_all(pairs, run, size, progress)
            if not run.report.written:
                raise MediaError(f"{src}: no image could be translated ({len(run.report.skipped)} skipped: "
                                 + "; ".join(f"{p.name}: {why}" for p, why in run.report.skipped[:3]) + ")")
    except BaseException as e:
        remove_empty_dirs(created)
        if isinstance(e, CgDeployError) and run.report.written:
            raise type(e)(f"{e} ({len(run.report.written)} image(s) translated before this are kept in "
                          f"{out_dir})") from e
        raise
    return run.report


def _translate_all(pairs: list[tuple[Path, Path]], run: _Run, size: tuple[int, int] | None, progress: bool) -> None:
    """Read, batch, run (run.inflight batches at once, outputs in order) and write, with a progress bar of files
    done. Reading runs lazily as the backend asks for its next batch, so it overlaps the batches in flight."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    backend, meta = run.backend, run.backend.meta
    with Progress(TextColumn("translate"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                  TimeRemainingColumn(), console=console, disable=not (progress and console.is_terminal)) as bar:
        task = bar.add_task("translate", total=len(pairs))

        def model_input(items: list[_Item]) -> np.ndarray:
            h, w = items[0].rgb.shape[:2]
            return pad_to_model(to_model(np.stack([it.rgb for it in items]), meta.input_range), model_size(h, w, meta))

        def failed(e: Exception, shape: tuple[int, ...] | None) -> Exception:
            if isinstance(e, CgDeployError):  # the backend's own check (an engine's profile...): the model's
                return type(e)(f"{run.label}: {e}")
            return run_failure(e, run.label, backend.name, shape or (run.batch, meta.input_nc, 0, 0), run.good_calls)

        with closing(ordered_outputs(backend, _groups(pairs, run, size, lambda: bar.advance(task)), model_input,
                                     run.inflight, failed)) as outputs:
            for items, shape, y in outputs:
                bar.advance(task, _write_batch(items, y, shape, run))


def _groups(pairs: list[tuple[Path, Path]], run: _Run, size: tuple[int, int] | None,
            skipped: Callable[[], None]) -> Iterator[list[_Item]]:
    """Same-size images in batches of what the memory holds, in reading order per size. Pending groups (sizes
    that have not filled a batch yet) are flushed, largest first, once they hold more than a quarter of the
    memory; unreadable files are listed in the report (and `skipped` is called) as they are met."""
    budget = (run.free or 4 << 30) // 4
    pending: dict[tuple[int, int], list[_Item]] = {}
    for path, dst in pairs:
        try:
            rgb, alpha = _read(path, run, size)
        except _Skip as e:
            run.report.skipped.append((path, str(e)))
            skipped()
            continue
        except Exception as e:  # PIL raises OSError, UnidentifiedImageError, ValueError, SyntaxError...
            why = (str(e).strip().splitlines() or [""])[0][:120]
            run.report.skipped.append((path, f"unreadable ({type(e).__name__}{': ' + why if why else ''})"))
            skipped()
            continue
        if size is not None:
            rgb = resize_frames(rgb[None], *size)[0]
            alpha = None if alpha is None else _resize_alpha(alpha, size)
        key = (int(rgb.shape[0]), int(rgb.shape[1]))
        group = pending.setdefault(key, [])
        group.append(_Item(path, dst, rgb, alpha))
        if len(group) >= run.batch_for(*key):
            yield pending.pop(key)
        while pending and sum(it.rgb.nbytes for g in pending.values() for it in g) > budget:
            yield pending.pop(max(pending, key=lambda k: k[0] * k[1] * len(pending[k])))
    yield from pending.values()


def _write_batch(items: list[_Item], y: np.ndarray, shape: tuple[int, ...], run: _Run) -> int:
    """Check one backend output (of a `shape` input) and write each image. Returns the number written."""
    meta = run.backend.meta
    check_output(y, shape, meta, run.label, run.backend.name)
    if not all_finite(y):
        raise non_finite_error(run.label, ", ".join(str(it.src) for it in items[:3])
                               + (", ..." if len(items) > 3 else ""))
    run.good_calls += 1
    h, w = items[0].rgb.shape[:2]
    out = from_model(crop(y, h, w, meta.scale), meta.output_range)
    for item, rgb in zip(items, out, strict=True):
        try:
            _write(item, rgb)
        except OSError as e:  # named as the output file, not its temp name
            raise OutputError(os_error_message(OSError(e.errno, e.strerror), item.dst)) from e
        run.report.written.append(item.dst)
    return len(items)
