"""Shared by benchmarks/cpu.py and benchmarks/gpu.py: run from a plain checkout, build the seeded model.

bootstrap() makes `cyclegan_deploy.train` / `cyclegan_deploy.export` importable without `pip install`:
pyproject maps the top-level train/ and export/ folders onto those names (setuptools package-dir), which
only an install applies. Appending the repo root to `cyclegan_deploy.__path__` gives the same mapping.
Nothing here imports av, rich or matplotlib; the harness imports rich/matplotlib only when present.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY_SIZES = [(32, 32), (36, 64)]  # --tiny: proves the script end to end in seconds, numbers meaningless


def bootstrap() -> str:
    """Import cyclegan_deploy from this checkout and map its stage folders; returns how it was found."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import cyclegan_deploy

    if importlib.util.find_spec("cyclegan_deploy.train") is not None:
        return f"installed ({Path(cyclegan_deploy.__file__).parent})"
    cyclegan_deploy.__path__.append(str(ROOT))  # cyclegan_deploy.train -> ROOT/train, .export -> ROOT/export
    if importlib.util.find_spec("cyclegan_deploy.train") is None:
        raise SystemExit(f"cannot map {ROOT}/train onto cyclegan_deploy.train; run from a full checkout")
    return f"checkout {ROOT} (package-dir mapped by benchmarks/_common.py, no install)"


def build_generator(tiny: bool, seed: int = 0) -> tuple[Any, Any]:
    """Seeded ResNet generator with instance norm: the full ResNet-9 ngf 64 (published CycleGAN models' shape)
    or, with tiny, 2 blocks ngf 8. Random weights run the same arithmetic as trained ones; non-zero biases
    keep every term of the graph in play."""

    from cyclegan_deploy.train.models import GeneratorConfig, seeded_generator

    cfg = GeneratorConfig(arch="resnet_2blocks", ngf=8) if tiny else GeneratorConfig(arch="resnet_9blocks", ngf=64)
    model = seeded_generator(cfg, seed=seed)
    return model, cfg.to_meta(source=f"seeded-{cfg.arch}-ngf{cfg.ngf}-seed{seed}", train_size=256)


def export_onnx_any(model: Any, meta: Any, path: Path, notes: list[str]) -> Path:
    """Our exporter (torch dynamo, needs onnxscript); if that is missing, the legacy TorchScript exporter with
    dynamic N/H/W and the same model card (FACTS.md: same numbers, more nodes)."""
    from cyclegan_deploy.export.onnx import export_onnx

    try:
        export_onnx(model, meta, path)
        return path
    except Exception as e:  # typically onnxscript missing on a bare GPU box
        notes.append(f"dynamo ONNX export failed ({type(e).__name__}: {str(e)[:160]}); used dynamo=False")
    import onnx
    import torch

    x = torch.zeros(1, meta.input_nc, 64, 64)
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": axes, "output": axes})
    proto = onnx.load(str(path))
    meta.exporter, meta.opset = f"torch {torch.__version__} (dynamo=False)", 17
    for key, value in meta.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def prepare(work: Path, tiny: bool, fp16: bool, notes: list[str], checkpoint: Path | None = None
            ) -> dict[str, Path | None]:
    """generator .pth + FP32 ONNX (+ FP16 graph) in `work`: of `checkpoint`, else of the seeded model.

    The graphs come from the export stage (export.pipeline.make_graphs), as `cgdeploy bench` makes them. Where
    that fails (typically onnxscript missing on a bare GPU box) this script falls back to its own export:
    export_onnx_any (legacy TorchScript exporter if need be) + to_fp16. Failures become notes (the backends
    needing the file then report why)."""
    from cyclegan_deploy.train.checkpoints import load_generator, save_generator

    work.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        model, meta = build_generator(tiny)
        checkpoint = work / "generator.pth"
        save_generator(model, meta, checkpoint)
    paths: dict[str, Path | None] = {"checkpoint": checkpoint, "onnx": None, "onnx_fp16": None}
    try:
        from cyclegan_deploy.export.pipeline import make_graphs

        graphs = make_graphs(checkpoint, work, fp16=fp16, echo=lambda text: print(text, file=sys.stderr, flush=True))
        paths["onnx"], paths["onnx_fp16"] = graphs.get("onnx"), graphs.get("onnx-fp16")
        return paths
    except Exception as e:
        notes.append(f"export.pipeline.make_graphs failed ({type(e).__name__}: {str(e)[:200]}); "
                     "used the script's fallback export")
    model, meta = load_generator(checkpoint)
    try:
        paths["onnx"] = export_onnx_any(model, meta, work / "model.onnx", notes)
    except Exception as e:
        notes.append(f"ONNX export failed ({type(e).__name__}: {str(e)[:200]}); ONNX backends will say so")
    if fp16 and paths["onnx"] is not None:
        try:
            from cyclegan_deploy.export.precision import to_fp16

            paths["onnx_fp16"] = to_fp16(paths["onnx"], work / "model.fp16.onnx")
        except Exception as e:
            notes.append(f"FP16 graph failed ({type(e).__name__}: {str(e)[:200]}); *-fp16 ONNX backends will say so")
    return paths


def command_output(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return f"({cmd[0]} not found)"
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"({' '.join(cmd)} failed: {e})"


def lscpu_summary() -> dict[str, str]:
    """The lscpu lines that explain CPU numbers: model, topology, clocks, and the matrix/vector flags."""
    out: dict[str, str] = {}
    for line in command_output(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Socket(s)", "CPU max MHz",
                   "CPU MHz", "L2 cache", "L3 cache", "Hypervisor vendor"):
            out[key] = value.strip()
        elif key == "Flags":
            wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16",
                      "amx_int8", "amx_fp16")
            out["Flags (relevant)"] = " ".join(f for f in value.split() if f in wanted) or "none of AVX2/AVX-512/AMX"
    return out


def parse_sizes(text: str) -> list[tuple[int, int]]:
    from cyclegan_deploy.frames import parse_size

    return [parse_size(s, option="--sizes") for s in text.split(",") if s.strip()]


def seconds_per_step(model: Any, cfg: Any, warmup: int, steps: int) -> float:
    """Seconds per training step of a trainer (train.base.GanModel) on random batches of cfg's training size
    (super-resolution: "A" the LR crop, crop/scale), after `warmup` untimed steps (the first few run slower and
    would shrink a planned schedule)."""
    import time

    import torch

    side = cfg.crop_size
    batch = {"A": torch.rand(cfg.batch_size, 3, side // cfg.scale, side // cfg.scale) * 2 - 1,
             "B": torch.rand(cfg.batch_size, 3, side, side) * 2 - 1}
    for _ in range(warmup):
        model.optimize(batch)
    start = time.perf_counter()
    for _ in range(steps):
        model.optimize(batch)
    return (time.perf_counter() - start) / steps


def budget_schedule(step_s: float, left_s: float, steps_per_epoch: int, fill: float) -> tuple[int, dict[str, Any]]:
    """(epochs, training options) that fill `fill` of `left_s` seconds at `step_s` per step, split as the
    reference does (half constant lr, half linear decay). ~5% per step goes to data loading, logging and the
    epoch-end checkpoint/samples; the hard stop (max_minutes) leaves room for the last ones."""
    import math

    planned = max(2, int(left_s * fill / (step_s * 1.05)))
    epochs = max(2, planned // steps_per_epoch)
    return epochs, {"epochs": math.ceil(epochs / 2), "epochs_decay": epochs // 2,
                    "max_minutes": max(left_s - 10.0, 0.9 * left_s) / 60.0}
