#!/usr/bin/env python3
"""A trained full-size generator to measure reduced models with: ResNet-9, ngf 64 (the published CycleGAN
models' shape), trained as a CycleGAN on the built-in known-mapping data for a fixed CPU budget.

    python benchmarks/teacher.py                 # train (or reuse the cached run) and print where it is
    python benchmarks/teacher.py --budget 60     # a quick, weaker teacher under its own cache key

INT8 quality depends on trained weights (FACTS.md: random-init ResNet-9 gives 26 dB vs fp32, trained small
generators 42-44 dB), so benchmarks/cpu.py measures on this. Crop 64 keeps training affordable on 2 cores;
the fully convolutional generator then runs at any size. The run is cached outside the repository
(default ~/.cache/cgdeploy/teachers/<key>/, override with CGDEPLOY_CACHE) and never committed: the key
covers every setting, so another budget or seed trains another teacher. Training itself is
benchmarks/train_synthetic.py (same data, reference losses, held-out task PSNR vs the true mapping).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cache_root() -> Path:
    return Path(os.environ.get("CGDEPLOY_CACHE") or Path.home() / ".cache" / "cgdeploy") / "teachers"


def teacher_key(budget: float, size: int, ngf: int, n_blocks: int, seed: int) -> str:
    text = json.dumps({"budget": budget, "size": size, "ngf": ngf, "n_blocks": n_blocks, "seed": seed, "v": 1})
    return f"resnet{n_blocks}-ngf{ngf}-crop{size}-{int(budget)}s-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def ensure_teacher(budget: float = 1200.0, size: int = 64, ngf: int = 64, n_blocks: int = 9, seed: int = 0,
                   threads: int = 2) -> Path:
    """Run dir of the cached teacher (latest_net_G_A.pth, train_synthetic.json); trains it first if missing.
    The run dir only appears under its final name once training finished (a half-trained teacher is never
    mistaken for the real one)."""
    final = cache_root() / teacher_key(budget, size, ngf, n_blocks, seed)
    if (final / "train_synthetic.json").is_file() and (final / "run" / "latest_net_G_A.pth").is_file():
        return final
    sys.path.insert(0, str(HERE))
    from _common import bootstrap

    bootstrap()
    import shutil

    import train_synthetic

    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"training the teacher for {budget:.0f} s (cached at {final})", file=sys.stderr)
    code = train_synthetic.main(["--budget", str(budget), "--size", str(size), "--ngf", str(ngf), "--n-blocks",
                                 str(n_blocks), "--seed", str(seed), "--threads", str(threads), "-o", str(partial),
                                 "--run-dir", str(partial / "run")])
    report = json.loads((partial / "train_synthetic.json").read_text())
    if not report.get("gain_db") or report["gain_db"] <= 0:
        raise SystemExit(f"teacher did not learn (gain {report.get('gain_db')} dB, exit {code}); see {partial}")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=1200.0, help="training seconds (default 1200)")
    p.add_argument("--size", type=int, default=64, help="crop size (default 64)")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--n-blocks", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    run = ensure_teacher(args.budget, args.size, args.ngf, args.n_blocks, args.seed, args.threads)
    report = json.loads((run / "train_synthetic.json").read_text())
    print(f"{run / 'run'}: task PSNR {report['psnr_model_db']:.2f} dB vs identity {report['psnr_identity_db']:.2f} "
          f"dB ({report['gain_db']:+.2f} dB), {report['iterations']} iterations in {report['train_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
