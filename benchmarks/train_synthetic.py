#!/usr/bin/env python3
"""Train CycleGAN on the built-in synthetic data on the CPU for a fixed wall-clock budget, then score it.

    python benchmarks/train_synthetic.py                  # the real run: 600 s on 2 threads
    python benchmarks/train_synthetic.py --budget 30      # proves the script end to end (number meaningless)

Score: held-out PSNR of G_AtoB(a) against the true f(a) (testB_true), and of the identity mapping (a vs f(a))
as the baseline; target (issue 2): G_AtoB beats identity by >= 6 dB within 10 minutes on 2 CPU cores.

The loss settings are the reference's (LSGAN, pool 50, lambda 10, identity 0.5, Adam 2e-4 / beta1 0.5); only
the size of the problem is scaled to the budget: 64x64 images, ngf = ndf = 16, 3 ResNet blocks. The budget
covers everything training does (a short step-time calibration, the epochs, per-epoch checkpoints and
samples); generating the data and the final evaluation are outside it. The calibration picks the number of
epochs so that n_epochs constant + n_epochs_decay linear decay fill ~95% of the budget; --max-minutes is the
hard stop if the machine turns out slower than calibrated.
Writes benchmarks/results/train_synthetic.json, .md and _samples.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_GAIN_DB = 6.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=600.0, help="wall-clock seconds for training (default 600)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2: the target's cores)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=50)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--n-blocks", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fill", type=float, default=0.95, help="share of the budget the planned epochs should take")
    p.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--run-dir", type=Path, default=None, help="keep the run here (default: a temp dir, deleted)")
    args = p.parse_args(argv)

    import torch
    from _common import budget_schedule, seconds_per_step

    from cyclegan_deploy.machine import cpu_model
    from cyclegan_deploy.train.base import resolve_device
    from cyclegan_deploy.train.config import TrainConfig
    from cyclegan_deploy.train.cyclegan import CycleGAN
    from cyclegan_deploy.train.loop import train
    from cyclegan_deploy.train.synthetic import write_synthetic

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="cgd-train-bench-"))
    run_dir = args.run_dir or work / "run"
    if args.run_dir and run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        data = write_synthetic(work / "data", n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed)
        settings: dict[str, Any] = {"load_size": args.size, "crop_size": args.size, "ngf": args.ngf, "ndf": args.ngf,
                                    "netG": f"resnet_{args.n_blocks}blocks", "num_workers": 0, "seed": args.seed,
                                    "device": "cpu", "save_every": 1000}
        t0 = time.monotonic()
        calibration = TrainConfig.for_model("cyclegan", **settings)
        step_s = seconds_per_step(CycleGAN(calibration, resolve_device(calibration)), calibration, warmup=2, steps=6)
        left = args.budget - (time.monotonic() - t0)
        total_epochs, schedule = budget_schedule(step_s, left, args.n_train, args.fill)
        settings |= schedule
        cfg = TrainConfig.for_model("cyclegan", dataroot=str(data), run_dir=str(run_dir), **settings)
        print(f"calibrated {step_s:.3f} s/step on {args.threads} threads: {total_epochs} epochs x {args.n_train} "
              f"iterations planned in {left:.0f} s", file=sys.stderr)
        result = train(cfg, log=lambda m: print(m, file=sys.stderr))
        train_s = time.monotonic() - t0
        s = result.synthetic or {}
        report = {
            "benchmark": "train_synthetic", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "psnr_model_db": s.get("psnr_model_db"), "psnr_identity_db": s.get("psnr_identity_db"),
            "gain_db": s.get("gain_db"), "target_gain_db": TARGET_GAIN_DB,
            "target_met": bool(s and s["gain_db"] >= TARGET_GAIN_DB and train_s <= args.budget + 5),
            "test_images": s.get("n_images"), "budget_s": args.budget, "train_s": round(train_s, 1),
            "calibrated_step_s": round(step_s, 4), "epochs_planned": total_epochs, "epochs_done": result.epochs_done,
            "iterations": result.iterations, "stopped_by_budget": result.stopped_early,
            "settings": {**cfg.to_dict(), "dataroot": "<synthetic>", "run_dir": "<temp>"},
            "data": {"n_train": args.n_train, "n_test": args.n_test, "size": args.size, "seed": args.seed},
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "python": platform.python_version(),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_synthetic.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "train_synthetic.md").write_text(markdown(report))
        grids = sorted((run_dir / "samples").glob("epoch_*.png"))
        if grids:
            shutil.copyfile(grids[-1], args.out / "train_synthetic_samples.png")
        print(markdown(report))
        return 0 if report["target_met"] else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    st = r["settings"]
    verdict = "met" if r["target_met"] else "NOT met"
    return "\n".join([
        "# CycleGAN on the synthetic known-mapping data (CPU, fixed budget)",
        "",
        f"Target: G_AtoB beats the identity baseline by >= {r['target_gain_db']:.0f} dB within "
        f"{r['budget_s'] / 60:.0f} min — **{verdict}**.",
        "",
        "| held-out PSNR vs true f(a) | dB |",
        "|---|---|",
        f"| G_AtoB(a) | {r['psnr_model_db']:.2f} |",
        f"| identity (a) | {r['psnr_identity_db']:.2f} |",
        f"| **gain** | **{r['gain_db']:+.2f}** |",
        "",
        f"- {r['test_images']} held-out {r['data']['size']}x{r['data']['size']} pairs; {r['data']['n_train']} unpaired "
        "training images per domain (B made from other scenes than A).",
        f"- Trained {r['train_s']:.0f} s of a {r['budget_s']:.0f} s budget: {r['epochs_done']} of "
        f"{r['epochs_planned']} planned epochs, {r['iterations']} iterations "
        f"(calibrated {r['calibrated_step_s']:.3f} s/step)"
        + (", stopped by the budget." if r["stopped_by_budget"] else "."),
        f"- Model: {st['netG']}, ngf {st['ngf']}, ndf {st['ndf']}, {st['norm']} norm; losses as the reference: "
        f"{st['gan_mode']}, pool {st['pool_size']}, lambda_A/B {st['lambda_A']:g}/{st['lambda_B']:g}, identity "
        f"{st['lambda_identity']:g}, Adam lr {st['lr']:g} beta1 {st['beta1']:g}, {st['epochs']} + "
        f"{st['epochs_decay']} decay epochs, batch {st['batch_size']}.",
        f"- torch {r['torch']}, {r['threads']} threads, {r['cpu']}, Python {r['python']}, {r['date']}.",
        "",
        "Reproduce: `python benchmarks/train_synthetic.py` (samples: train_synthetic_samples.png, columns real_A, "
        "fake_B, rec_A, real_B, fake_A, rec_B).",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
