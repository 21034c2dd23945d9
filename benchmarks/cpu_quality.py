"""Quality of the reduced CPU variants of a *trained* generator, for benchmarks/cpu.py.

Two measures per variant (OpenVINO bf16/int8, ONNX Runtime int8, ...), each against torch eager fp32:
- PSNR vs fp32 on real photographs: the ones scikit-image ships in its wheel (no download), centre-cropped
  and resized to the benchmark size: a held-out natural-image set the generator never saw in training or
  calibration.
- Task PSNR on the built-in known-mapping test pairs (testA -> true f(testA), regenerated from the seed the
  teacher was trained with): what the variant costs in the quality the user trained for.
Every variant runs through the runtime's own backend (load_backend), so its name is what really ran (an
OpenVINO int8 graph whose convolutions ran in float is refused there, not measured here).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.quality import natural_photos

# (label, backend, artifact kind, precision): the variants whose quality is reported
VARIANTS = (("onnxruntime fp32", "onnxruntime", "onnx", None), ("onnxruntime int8", "onnxruntime", "int8", None),
            ("openvino f32", "openvino", "onnx", "f32"), ("openvino bf16", "openvino", "onnx", "bf16"),
            ("openvino int8", "openvino", "int8", "f32"),
            ("openvino int8 + bf16 float ops", "openvino", "int8", "bf16"))


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float | None:
    """quality.psnr rounded for the report; None (JSON null) for identical outputs."""
    from cyclegan_deploy.quality import psnr

    value = psnr(a, b, peak)
    return round(value, 2) if math.isfinite(value) else None


def _translate(run: Any, images: np.ndarray, meta: Any) -> np.ndarray:
    """uint8 NHWC -> model output in [-1, 1] NCHW, one image at a time (batch 1, as the latency cases)."""
    from cyclegan_deploy.frames import crop, pad_to_multiple, to_model

    h, w = images.shape[1:3]
    return np.concatenate([crop(run(pad_to_multiple(to_model(img[None], meta.input_range), meta.multiple)), h, w)
                           for img in images])


def measure(checkpoint: Path, graphs: dict[str, Path | None], side: int, data_seed: int = 0,
            n_test: int = 50, data_size: int = 64) -> dict[str, Any]:
    """{"photos": [...], "rows": [{"variant", "backend_name", "photo_psnr_db": {name: dB}, "photo_psnr_min_db",
    "task_psnr_db", "task_loss_db"}], "fp32": {...}} — or a row's "status" saying why it could not run."""
    import torch

    from cyclegan_deploy.backends import load_backend
    from cyclegan_deploy.frames import from_model
    from cyclegan_deploy.train.checkpoints import load_generator
    from cyclegan_deploy.train.synthetic import apply_mapping, scene

    model, meta = load_generator(checkpoint)
    model.eval()
    names, photos = natural_photos(side)
    test_a = np.stack([scene(data_seed, "testA", i, data_size) for i in range(n_test)])
    test_b = apply_mapping(test_a)

    def torch_run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    ref_photos = _translate(torch_run, photos, meta)
    fp32_task = _psnr(from_model(_translate(torch_run, test_a, meta)), test_b, 255.0)
    identity = _psnr(test_a, test_b, 255.0)
    rows = []
    for label, backend, kind, precision in VARIANTS:
        path = graphs.get(kind)
        row: dict[str, Any] = {"variant": label}
        if path is None:
            row["status"] = f"no {kind} graph"
            rows.append(row)
            continue
        try:
            with load_backend(path, backend=backend, device="cpu", precision=precision) as b:
                row["backend_name"] = b.name
                out = _translate(b, photos, meta)
                task = _psnr(from_model(_translate(b, test_a, meta)), test_b, 255.0)
        except Exception as e:  # an unavailable precision (bf16 without AVX512-BF16) is a row, not a crash
            row["status"] = f"unavailable: {type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
            continue
        per = {n: _psnr(ref_photos[i], out[i], 2.0) for i, n in enumerate(names)}
        finite = [v for v in per.values() if v is not None]
        row |= {"status": "ok", "photo_psnr_db": per, "photo_psnr_min_db": min(finite) if finite else None,
                "task_psnr_db": task,
                "task_loss_db": None if task is None or fp32_task is None else round(fp32_task - task, 3)}
        rows.append(row)
    return {"photos": names, "photo_size": side, "task": {"pairs": n_test, "size": data_size, "seed": data_seed,
            "fp32_psnr_db": fp32_task, "identity_psnr_db": identity}, "rows": rows}


def markdown(q: dict[str, Any]) -> list[str]:
    t = q["task"]
    lines = [f"Quality vs torch eager fp32 (trained teacher): PSNR on {len(q['photos'])} real photographs from "
             f"scikit-image ({', '.join(q['photos'])}) at {q['photo_size']}x{q['photo_size']}, worst photo; task "
             f"PSNR vs the true mapping on {t['pairs']} held-out built-in pairs ({t['size']}x{t['size']}): fp32 "
             f"{t['fp32_psnr_db']} dB, identity {t['identity_psnr_db']} dB.", "",
             "| variant | ran as | PSNR vs fp32, photos (worst) | task PSNR | task loss vs fp32 |",
             "|---|---|---|---|---|"]
    for r in q["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['variant']} | {r.get('status', '-')} | - | - | - |")
            continue
        worst = "exact" if r["photo_psnr_min_db"] is None else f"{r['photo_psnr_min_db']:.1f} dB"
        lines.append(f"| {r['variant']} | {r['backend_name']} | {worst} | {r['task_psnr_db']} dB | "
                     f"{r['task_loss_db']:+.3f} dB |")
    return lines
