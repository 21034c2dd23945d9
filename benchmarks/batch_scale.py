#!/usr/bin/env python3
"""`cgdeploy batch` with 1 and 2 Ray workers next to plain `cgdeploy video`, on this machine.

    python benchmarks/batch_scale.py                        # seeded ResNet-9 ngf 64 ONNX, 2 clips 256x256
    python benchmarks/batch_scale.py --model g_AtoB.int8.onnx --backend openvino --size 256x256
    python benchmarks/batch_scale.py --tiny --frames 24 -o /tmp/bs    # proves the script runs (seconds)

The same clips (procedural frames + AAC audio, keyframe every second) go through, in this order per round:
- `video`: translate_video on each clip in turn, one backend with all the machine's threads;
- `batch` with 1 worker (all threads) and with 2 workers (half the threads each), cut into --segment-seconds
  segments. Each batch run starts its own local Ray instance, as the command does.
Reported per configuration: end-to-end frames/s (the wall time a user waits, Ray start-up and model loads
included) and steady frames/s (from the first segment handed out to the last output joined), medians over
--rounds, and the ratio to `video`. Every batch output is checked against the `video` output of the same clip
(frame count, and pixels within codec tolerance: PSNR) so a fast wrong answer cannot count.
Writes OUT/batch_scale.json and OUT/batch_scale.md with the machine, versions and settings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, bootstrap, build_generator, export_onnx_any, lscpu_summary  # noqa: E402


def _frames(path: Path) -> Any:
    import av
    import numpy as np

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)


def _psnr(a: Any, b: Any) -> float:
    import numpy as np

    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def run_video(clips: list[Path], out: Path, model: Path, backend: str, threads: int) -> float:
    from cyclegan_deploy.backends import load_backend
    from cyclegan_deploy.video import VideoOptions, translate_video

    t0 = time.perf_counter()
    with load_backend(model, backend=backend, threads=threads) as be:
        for clip in clips:
            translate_video(clip, out / clip.name, be, VideoOptions(progress=False))
    return time.perf_counter() - t0


def run_batch_once(clips: list[Path], out: Path, model: Path, backend: str, workers: int, seconds: float
                   ) -> tuple[float, float, int]:
    from cyclegan_deploy.scale.batch import BatchOptions, run_batch

    t0 = time.perf_counter()
    report = run_batch(clips, out, model, BatchOptions(workers=workers, segment_seconds=seconds, progress=False,
                                                       force=True, load={"backend": backend}))
    wall = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"batch failed: {report.failed[0].error}")
    return wall, report.wall_s, report.worker_restarts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ONNX / OpenVINO model (default: seeded ResNet-9 ngf 64 ONNX)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--size", default="256x256", help="HxW of the generated clips")
    ap.add_argument("--frames", type=int, default=90, help="frames per clip")
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--segment-seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny model: proves the script runs, numbers meaningless")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale")
    args = ap.parse_args()
    found = bootstrap()
    from cyclegan_deploy.frames import parse_size
    from cyclegan_deploy.sample_media import make_sample_video

    size, cpus = parse_size(args.size), os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="batch-scale-"))
    notes: list[str] = []
    model = args.model
    if model is None:
        gen, meta = build_generator(args.tiny)
        model = export_onnx_any(gen, meta, work / "model.onnx", notes)
    fps = 30
    clips = [make_sample_video(work / "in" / f"clip{i}.mp4", frames=args.frames, size=size, fps=fps, gop=fps, seed=i)
             for i in range(args.clips)]
    total = args.frames * args.clips
    rows: dict[str, dict[str, list[float]]] = {"video": {"e2e": []}, "batch 1 worker": {"e2e": [], "steady": []},
                                               "batch 2 workers": {"e2e": [], "steady": []}}
    checks: list[dict[str, Any]] = []
    for r in range(args.rounds):
        wall = run_video(clips, work / "video", model, args.backend, cpus)
        rows["video"]["e2e"].append(total / wall)
        for workers in (1, 2):
            name = f"batch {workers} worker{'s' if workers > 1 else ''}"
            out = work / f"batch{workers}"
            e2e, steady, restarts = run_batch_once(clips, out, model, args.backend, workers, args.segment_seconds)
            rows[name]["e2e"].append(total / e2e)
            rows[name]["steady"].append(total / steady)
            if r == 0:
                for clip in clips:
                    a, b = _frames(out / clip.name), _frames(work / "video" / clip.name)
                    checks.append({"config": name, "clip": clip.name, "frames": [len(a), len(b)],
                                   "psnr_vs_video_db": round(_psnr(a, b), 2) if len(a) == len(b) else None,
                                   "worker_restarts": restarts})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v['e2e'][-1]:.2f} fps" for k, v in rows.items()),
              file=sys.stderr, flush=True)
    base = statistics.median(rows["video"]["e2e"])
    summary = {k: {m: round(statistics.median(v), 3) for m, v in d.items()} for k, d in rows.items()}
    for d in summary.values():
        d["vs_video"] = round(d["e2e"] / base, 3)
    import numpy
    import ray

    from cyclegan_deploy.backends import load_backend

    with load_backend(model, backend=args.backend) as be:
        backend_name = be.name
    result = {"machine": lscpu_summary(), "cpus": cpus, "model": str(model) if args.model else "seeded ResNet-9 ngf 64 "
              "(ONNX fp32)" + (" tiny" if args.tiny else ""), "backend": backend_name, "clip": {
                  "size": args.size, "frames": args.frames, "clips": args.clips, "fps": fps, "keyframe_every_s": 1},
              "segment_seconds": args.segment_seconds, "rounds": args.rounds, "summary": summary, "raw": rows,
              "checks": checks, "versions": {"ray": ray.__version__, "numpy": numpy.__version__, "python":
                                             sys.version.split()[0]}, "cyclegan_deploy": found, "notes": notes,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# `cgdeploy batch` vs `cgdeploy video` ({result['date']})", "",
             f"{result['machine'].get('Model name', '?')}, {cpus} CPUs ({result['machine'].get('Flags (relevant)')}); "
             f"{result['model']} on {backend_name}; {args.clips} clips x {args.frames} frames {args.size} @ {fps} fps "
             f"(keyframe every 1 s), segments of {args.segment_seconds} s; medians of {args.rounds} rounds.", "",
             "| configuration | end-to-end fps | steady fps | end-to-end vs video |", "|---|---|---|---|"]
    for k, d in summary.items():
        lines.append(f"| {k} | {d['e2e']:.2f} | {d.get('steady', d['e2e']):.2f} | {d['vs_video']:.2f}x |")
    lines += ["", "End-to-end: frames / wall time the caller waits (batch: Ray start-up and one model load per worker "
              "included). Steady: frames / time from the first segment handed out to the last output joined.",
              "Checks (batch output vs video output of the same clip): " + "; ".join(
                  f"{c['config']} {c['clip']}: {c['frames'][0]}/{c['frames'][1]} frames, {c['psnr_vs_video_db']} dB"
                  for c in checks)]
    (args.out / "batch_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
