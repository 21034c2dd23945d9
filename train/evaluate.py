"""`cgdeploy eval G [--against T] [--data DIR]`: how close one generator comes to another, and what each costs.

Measured in what a user sees (uint8 images after the card's output mapping):
- PSNR and SSIM of G vs T on held-out images: the data root's test split of the input domain (testA, or testB
  for a BtoA generator), or every image of a plain folder (then labelled "folder", not "held-out");
- the same on natural photographs (scikit-image's bundled ones, centre square at --photo-size);
- task PSNR vs the true mapping on the built-in data's held-out pairs, for both, when the data root is the
  built-in known-mapping set (`cgdeploy data synth`);
- convolution MACs of both at 256x256 and 720x1280 and their ratio.
Without --against only MACs and task PSNR are reported. Super-resolution generators (card scale > 1) are scored
by train/sr_eval.py instead: SR and bicubic vs HR, PSNR/SSIM on Y.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cyclegan_deploy.errors import ConfigError, DataError
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.quality import natural_photos, psnr, ssim

MAX_IMAGES = 50  # images evaluated from a folder (an evenly spread subset beyond that)
MAX_SIDE = 512  # larger images are downscaled to this side first (the report says so)
MAX_PHOTO_SIDE = 2048


def _round(value: float, digits: int = 3) -> float:
    return round(value, digits) if math.isfinite(value) else value


def _nan_round(value: float) -> float:
    return round(float(value), 4) if math.isfinite(value) else math.nan


def image_metrics(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]:
    """Per-image PSNR (peak 255) and SSIM of uint8 HxWx3 pairs, with their mean and worst. Identical images
    give PSNR inf (written as null in JSON reports)."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"need equally many images on both sides, got {len(reference)} and {len(candidate)}")
    p = [psnr(a, b, 255.0) for a, b in zip(reference, candidate, strict=True)]
    s = [ssim(a, b) for a, b in zip(reference, candidate, strict=True)]
    return {"n_images": len(p), "psnr_db_mean": _round(float(np.mean(p))), "psnr_db_min": _round(min(p)),
            # NaN SSIM: an image under 3 pixels a side (quality.ssim); left out of the mean and worst
            "ssim_mean": _nan_round(float(np.nanmean(s)) if any(np.isfinite(s)) else math.nan),
            "ssim_min": _nan_round(float(np.nanmin(s)) if any(np.isfinite(s)) else math.nan),
            "psnr_db": [_round(v) for v in p], "ssim": [_nan_round(v) for v in s]}


def translate_each(net: nn.Module, meta: ModelMeta, images: list[np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    """Each uint8 HxWx3 image through the generator (padded to its multiple, cropped back), one at a time so
    images of different sizes mix."""
    from cyclegan_deploy.train.synthetic import translate_uint8

    return [translate_uint8(net, img[None], device=device, multiple=meta.multiple, input_range=meta.input_range,
                            output_range=meta.output_range, scale=meta.scale)[0] for img in images]


def input_split(meta: ModelMeta) -> str:
    """The test folder of the domain the generator takes: testA for AtoB, testB for BtoA."""
    return "testB" if meta.direction == "BtoA" else "testA"


def held_out(data: Path, meta: ModelMeta, training_folder: bool = False) -> tuple[list[np.ndarray], str, str]:
    """(images, kind, where): the data root's test split of the input domain, else every image of a plain
    folder; a data root without that split gives no images (its other folders are not this model's inputs)."""
    from cyclegan_deploy.train.data import list_images, load_rgb

    split = data / input_split(meta)
    half = None  # pix2pix test/ pairs: A|B side by side, the input is one half
    if split.is_dir():
        folder, kind = split, "held-out"
    elif (data / "test").is_dir() and not any((data / n).is_dir() for n in ("trainA", "trainB", "testA", "testB")):
        folder, kind, half = data / "test", "held-out (input halves of the A|B pairs)", meta.direction == "BtoA"
    elif any((data / name).is_dir() for name in ("trainA", "trainB", "train", "testA", "testB")):
        return [], f"no {input_split(meta)}/ in this data root", str(data)
    else:
        folder, kind = data, "training images (not held out)" if training_folder else "folder"
    paths = list_images(folder, "images to evaluate on")
    if len(paths) > MAX_IMAGES:  # an evenly spread, deterministic subset: bounded time at the end of a run
        kind += f", {MAX_IMAGES} of {len(paths)}"
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, MAX_IMAGES).round().astype(int)]
    images = []
    for path in paths:
        img = load_rgb(path)
        if half is not None:
            w2 = img.width // 2
            img = img.crop((w2, 0, img.width, img.height) if half else (0, 0, w2, img.height))
        images.append(np.asarray(_bounded(img)))
    return images, kind, str(folder)


def _bounded(img: Any) -> Any:
    """Downscaled (aspect kept) to at most MAX_SIDE pixels a side: eval cost and memory stay bounded."""
    from PIL import Image

    if max(img.size) <= MAX_SIDE:
        return img
    scale = MAX_SIDE / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BICUBIC)


def _check_device(device: str) -> None:
    import torch

    from cyclegan_deploy.errors import BackendUnavailableError

    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: use cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"--device cuda: torch sees no CUDA device (this torch is {torch.__version__}); "
                                      "use --device cpu")


def _macs(meta: ModelMeta) -> dict[str, int]:
    from cyclegan_deploy.train.distill import card_config, sized_macs

    return sized_macs(card_config(meta))


def describe(path: Path, meta: ModelMeta) -> dict[str, Any]:
    return {"file": str(path), "sha256": meta.source_sha256, "arch": meta.arch, "ngf": meta.ngf,
            "n_blocks": meta.n_blocks, "direction": meta.direction}


def evaluate(generator: str | Path, against: str | Path | None = None, data: str | Path | None = None,
             device: str = "cpu", photo_side: int = 256, training_folder: bool = False) -> dict[str, Any]:
    """The eval report (see the module docstring) as a JSON-ready dict."""
    from cyclegan_deploy.train.checkpoints import load_generator, resolve_generator_path
    from cyclegan_deploy.train.synthetic import evaluate_synthetic, is_synthetic

    g_path = resolve_generator_path(generator)
    g_net, g_meta = load_generator(g_path)
    _check_device(device)
    if g_meta.scale == 1 and not 16 <= photo_side <= MAX_PHOTO_SIDE:
        raise ConfigError(f"--photo-size {photo_side}: use 16 to {MAX_PHOTO_SIDE} pixels")
    report: dict[str, Any] = {"generator": describe(g_path, g_meta)}
    nets = {"generator": (g_net, g_meta)}
    if against is not None:
        t_path = resolve_generator_path(against)
        t_net, t_meta = load_generator(t_path)
        if t_meta.direction != g_meta.direction:
            raise ConfigError(f"{t_path}: maps {t_meta.direction} but {g_path} maps {g_meta.direction}; compare "
                              "generators of one direction (pass the other run's G_A/G_B file)")
        if (t_meta.scale, t_meta.output_nc) != (g_meta.scale, g_meta.output_nc):
            raise ConfigError(f"{t_path}: makes scale {t_meta.scale}, {t_meta.output_nc} channels but {g_path} "
                              f"scale {g_meta.scale}, {g_meta.output_nc} channels; compare generators of one task")
        report["against"] = describe(t_path, t_meta)
        nets["against"] = (t_net, t_meta)
    for net, _ in nets.values():
        net.to(device).eval()
    if g_meta.scale != 1:  # super-resolution: SR (and --against's) and bicubic vs HR on the Y channel
        from cyclegan_deploy.train.sr_eval import run_score

        root = Path(data) if data is not None else None
        return {"task": "super-resolution"} | report | run_score(nets, root, g_meta.scale, device)
    g_macs = _macs(g_meta)
    if against is not None:
        t_macs = _macs(nets["against"][1])
        report["macs"] = {size: {"generator": g_macs[size], "against": t_macs[size],
                                 "ratio": round(t_macs[size] / max(1, g_macs[size]), 2)} for size in g_macs}
    else:
        report["macs"] = {size: {"generator": g_macs[size]} for size in g_macs}

    root = Path(data) if data is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"{root}: data folder not found; pass --data with a folder of images or a data root with "
                        f"{input_split(g_meta)}/")
    if root is not None and against is not None:
        images, kind, where = held_out(root, g_meta, training_folder)
        if images:
            outs = {name: translate_each(net, meta, images, device) for name, (net, meta) in nets.items()}
            report["held_out"] = {"kind": kind, "folder": where} | image_metrics(outs["against"], outs["generator"])
        else:
            report["held_out"] = {"status": f"unavailable: {kind}"}
    if against is not None:
        try:
            names, photos = natural_photos(photo_side)
        except ImportError as e:
            report["photos"] = {"status": f"unavailable: {e}"}
        else:
            images = list(photos)
            outs = {name: translate_each(net, meta, images, device) for name, (net, meta) in nets.items()}
            report["photos"] = {"names": names, "side": photo_side} | image_metrics(outs["against"], outs["generator"])
    if root is not None and is_synthetic(root) and g_meta.direction == "AtoB":
        task = {name: evaluate_synthetic(net, root, device, meta.multiple) for name, (net, meta) in nets.items()}
        report["task"] = {"n_images": task["generator"]["n_images"],
                          "identity_psnr_db": task["generator"]["psnr_identity_db"],
                          "generator_psnr_db": task["generator"]["psnr_model_db"]}
        if "against" in task:
            report["task"] |= {"against_psnr_db": task["against"]["psnr_model_db"],
                               "delta_db": round(task["generator"]["psnr_model_db"]
                                                 - task["against"]["psnr_model_db"], 3)}
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report as a few plain lines for the terminal."""
    if report.get("task") == "super-resolution":
        from cyclegan_deploy.train.sr_eval import sr_summary_lines

        return sr_summary_lines(report)
    g = report["generator"]
    lines = [f"generator {Path(g['file']).name}: {g['arch']} ngf {g['ngf']}"]
    if "against" in report:
        a = report["against"]
        lines[0] += f"  vs  {Path(a['file']).name}: {a['arch']} ngf {a['ngf']}"
    for size, m in report["macs"].items():
        line = f"MACs at {size}: {m['generator'] / 1e9:.2f} G"
        if "against" in m:
            more = f"{m['ratio']:.1f}x fewer" if m["ratio"] >= 1 else f"{1 / m['ratio']:.1f}x more"
            line += f" vs {m['against'] / 1e9:.2f} G ({more})"
        lines.append(line)
    for key, label in (("held_out", "images"), ("photos", "natural photos")):
        r = report.get(key)
        if r and "psnr_db_mean" in r:
            where = f"{r['kind']} {r['folder']}" if key == "held_out" else f"{', '.join(r['names'])} at {r['side']}"
            lines.append(f"vs --against on {r['n_images']} {label} ({where}): PSNR mean {r['psnr_db_mean']} dB, "
                         f"worst {r['psnr_db_min']} dB; SSIM mean {r['ssim_mean']}, worst {r['ssim_min']}")
        elif r:
            lines.append(f"{label}: {r['status']}")
    if "task" in report:
        t = report["task"]
        line = (f"task PSNR vs the true mapping ({t['n_images']} built-in held-out pairs): {t['generator_psnr_db']} "
                f"dB (identity {t['identity_psnr_db']} dB)")
        if "against_psnr_db" in t:
            line += f"; --against {t['against_psnr_db']} dB ({t['delta_db']:+.2f} dB)"
        lines.append(line)
    return lines
