"""Super-resolution quality, as the SR literature reports it: PSNR and SSIM on the Y channel with crop_border =
scale (quality.psnr_y / ssim_y), of each generator's SR and of bicubic upscaling (the baseline) against HR.

Images (sr_pairs):
- a data root's held-out pairs: test/hr with test/lr (`data synth-sr`), or test/hr alone (LR by bicubic downscale);
- a plain folder of HR images (LR by sr_data.bicubic_downscale, the built-in set's own downscale);
- none given: scikit-image's photographs (quality.PHOTOS) at their own size.
HR sides are cut to multiples of the scale (modcrop) and centre-cropped to MAX_HR_SIDE; at most MAX_IMAGES images
(evenly spread). Means are over images (the literature's per-image average), per group: scenes and photos of the
built-in set (by file name) and all.
Used by `cgdeploy eval` for SR generators (evaluate.evaluate hands them here) and at the end of an srgan run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cyclegan_deploy.errors import DataError
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.quality import PHOTOS, photo, psnr_y, ssim_y
from cyclegan_deploy.train.evaluate import MAX_IMAGES, describe, translate_each
from cyclegan_deploy.train.sr_data import bicubic_downscale, bicubic_resize, is_sr_root, modcrop

MAX_HR_SIDE = 1024  # eval memory stays bounded: a x4 SRResNet's features at 1024x1024 take ~1 GiB
METRIC = "PSNR/SSIM on Y (ITU-R BT.601, MATLAB rgb2ycbcr), crop_border = scale, mean over images"
BASELINE = "bicubic"


@dataclass
class Pair:
    name: str
    group: str  # "scenes" | "photos" | "images"
    hr: np.ndarray  # uint8 HxWx3, sides multiples of the scale
    lr: np.ndarray  # uint8 (H/s)x(W/s)x3


def _group(name: str) -> str:
    return "scenes" if name.startswith("scene_") else "photos" if name.startswith("photo_") else "images"


def _bounded(hr: np.ndarray, lr: np.ndarray | None, scale: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Centre crop to MAX_HR_SIDE, at offsets on the LR grid so a stored LR is cut at the same place."""
    h, w = hr.shape[:2]
    th, tw = min(h, MAX_HR_SIDE // scale * scale), min(w, MAX_HR_SIDE // scale * scale)
    top, left = (h - th) // 2 // scale, (w - tw) // 2 // scale
    hr = hr[top * scale:top * scale + th, left * scale:left * scale + tw]
    if lr is not None:
        lr = lr[top:top + th // scale, left:left + tw // scale]
    return hr, lr


def _pair(name: str, hr: np.ndarray, lr: np.ndarray | None, scale: int, lr_path: Path | None = None) -> Pair:
    hr = modcrop(hr, scale)
    if lr is not None and (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape[:2]:
        raise DataError(f"{lr_path}: {lr.shape[1]}x{lr.shape[0]} is not 1/{scale} of its HR image "
                        f"({hr.shape[1]}x{hr.shape[0]}); the data was made for another scale: `cgdeploy data "
                        f"synth-sr OUT --scale {scale}`, or evaluate on test/hr alone (remove test/lr)")
    hr, lr = _bounded(hr, lr, scale)
    return Pair(name, _group(name), hr, bicubic_downscale(hr, scale) if lr is None else lr)


def sr_pairs(data: Path | None, scale: int) -> tuple[list[Pair], dict[str, Any]]:
    """(pairs, where they came from) for a x`scale` evaluation (module docstring)."""
    from cyclegan_deploy.train.data import list_images, load_rgb

    if data is None:
        pairs = [_pair(f"photo_{name}", photo(name), None, scale) for name in PHOTOS]
        return pairs, {"kind": "natural photographs (scikit-image)", "lr": "bicubic downscale of HR"}
    if not data.is_dir():
        raise DataError(f"{data}: data folder not found; pass --data with a folder of HR images or a data root "
                        "with test/hr/")
    if (data / "test" / "hr").is_dir():
        folder, kind = data / "test" / "hr", "held-out pairs"
        lr_dir: Path | None = data / "test" / "lr" if (data / "test" / "lr").is_dir() else None
    elif is_sr_root(data):
        return [], {"kind": f"unavailable: no test/hr/ in {data} (its train/ images are not held out)"}
    else:
        folder, kind, lr_dir = data, "folder of HR images", None
    paths = list_images(folder, "HR images to evaluate on")
    if len(paths) > MAX_IMAGES:
        kind += f", {MAX_IMAGES} of {len(paths)}"
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, MAX_IMAGES).round().astype(int)]
    pairs = []
    for path in paths:
        lr_path = lr_dir / path.name if lr_dir is not None else None
        if lr_path is not None and not lr_path.is_file():
            raise DataError(f"{lr_path}: missing LR image for {path}; add it, or remove {lr_dir} to downscale HR")
        lr = np.asarray(load_rgb(lr_path)) if lr_path is not None else None
        pairs.append(_pair(path.stem, np.asarray(load_rgb(path)), lr, scale, lr_path))
    lr_text = f"stored in {lr_dir}" if lr_dir is not None else "bicubic downscale of HR"
    return pairs, {"kind": kind, "folder": str(folder), "lr": lr_text}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else math.nan


def score(nets: dict[str, tuple[nn.Module, ModelMeta]], pairs: list[Pair], scale: int,
          device: str = "cpu") -> dict[str, Any]:
    """{"groups": {group: means per method and gain over bicubic}, "images": per-image numbers}; methods are
    "bicubic" and the keys of `nets`."""
    images: list[dict[str, Any]] = []
    for pair in pairs:
        h, w = pair.hr.shape[:2]
        outs = {BASELINE: bicubic_resize(pair.lr, h, w)}
        for label, (net, meta) in nets.items():
            outs[label] = translate_each(net, meta, [pair.lr], device)[0]
        images.append({"name": pair.name, "group": pair.group, "hr_size": [h, w],
                       "psnr_y_db": {k: round(psnr_y(pair.hr, v, scale), 3) for k, v in outs.items()},
                       "ssim_y": {k: round(ssim_y(pair.hr, v, scale), 4) for k, v in outs.items()}})
    groups: dict[str, Any] = {}
    present = sorted({p["group"] for p in images})
    for group in (["all"] + present if len(present) > 1 else ["all"]):
        rows = [r for r in images if group == "all" or r["group"] == group]
        methods = list(rows[0]["psnr_y_db"]) if rows else []
        psnr = {m: _mean([r["psnr_y_db"][m] for r in rows]) for m in methods}
        groups[group] = {"n_images": len(rows), "psnr_y_db": psnr,
                         "ssim_y": {m: _mean([r["ssim_y"][m] for r in rows]) for m in methods},
                         "gain_db": {m: round(psnr[m] - psnr[BASELINE], 3) for m in methods if m != BASELINE}}
    return {"groups": groups, "images": images}


def run_score(nets: dict[str, tuple[nn.Module, ModelMeta]], data: Path | None, scale: int,
              device: str) -> dict[str, Any]:
    """The SR part of an eval report: where the pairs came from and `score` on them (`cgdeploy eval` of an SR
    generator: evaluate.evaluate loads it and --against, then hands them here)."""
    pairs, where = sr_pairs(data, scale)
    report: dict[str, Any] = {"scale": scale, "crop_border": scale, "metric": METRIC, "data": where}
    return report | (score(nets, pairs, scale, device) if pairs else {"groups": {}, "images": []})


def evaluate_run(run_dir: Path, dataroot: str, device: str = "cpu") -> dict[str, Any]:
    """The end of an srgan run: its latest generator and, once the GAN stage ran, the pretrained one (pixel-MSE
    SRResNet stage) on the data root's held-out pairs."""
    from cyclegan_deploy.train.checkpoints import load_generator
    from cyclegan_deploy.train.srgan import PRETRAINED

    g_path = run_dir / "latest_net_G.pth"
    g_net, g_meta = load_generator(g_path)
    report: dict[str, Any] = {"task": "super-resolution", "generator": describe(g_path, g_meta)}
    nets = {"generator": (g_net.to(device), g_meta)}
    pretrained = run_dir / PRETRAINED
    if pretrained.is_file() and g_meta.extra.get("srgan", {}).get("stage") == "gan":
        p_net, p_meta = load_generator(pretrained)
        report["pretrained"] = describe(pretrained, p_meta)
        nets["pretrained"] = (p_net.to(device), p_meta)
    return report | run_score(nets, Path(dataroot), g_meta.scale, device)


def sr_summary_lines(report: dict[str, Any]) -> list[str]:
    """An SR report as a few plain lines (evaluate.summary_lines hands SR reports here)."""
    g, data = report["generator"], report["data"]
    lines = [f"generator {Path(g['file']).name}: {g['arch']} ngf {g['ngf']}, {g['n_blocks']} blocks"]
    if not report["groups"]:
        return lines + [f"SR quality: {data['kind']}"]
    where = data["kind"] + (f" {data['folder']}" if "folder" in data else "") + f", LR {data['lr']}"
    lines.append(f"vs HR on {report['groups']['all']['n_images']} images ({where}): PSNR/SSIM on Y (BT.601), "
                 f"crop_border {report['crop_border']}, means over images")
    for group, r in report["groups"].items():
        parts = [f"{m} {r['psnr_y_db'][m]:.2f} dB / SSIM {r['ssim_y'][m]:.4f}"
                 + (f" ({r['gain_db'][m]:+.2f} dB)" if m in r["gain_db"] else "") for m in r["psnr_y_db"]]
        lines.append(f"  {group} ({r['n_images']}): " + "; ".join(parts))
    return lines
