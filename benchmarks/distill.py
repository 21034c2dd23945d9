#!/usr/bin/env python3
"""Distilled students of the trained ResNet-9 teacher: how much cheaper, how close, how fast — in one run.

    python benchmarks/distill.py                  # the full benchmark (students cached after their first run)
    python benchmarks/distill.py --tiny           # checks the script end to end in about a minute

The teacher is benchmarks/teacher.py's (ResNet-9 ngf 64, CycleGAN on the built-in known-mapping data,
1200 s). Each student (default ngf 16 / 6 blocks, ngf 24 / 9 blocks — the issue's pair — and ngf 8 / 9 blocks,
the one small enough for 10 fps at 720p on 2 Zen 4 cores) is distilled from it with `cgdeploy distill`'s
machinery on the same built-in data for a fixed CPU budget (the schedule — half constant lr, half linear decay
— is sized to the budget from a measured step time), then exported to FP32 and INT8 ONNX
by `cgdeploy export` (parity gates and the int8 accuracy guard included). Reported:
- MACs at 256x256 and 720x1280 (convolutions, GAN Compression's count) and the ratio to the teacher's;
- student vs teacher PSNR/SSIM on the 50 held-out built-in images and on scikit-image's photographs;
- task PSNR vs the true mapping on the held-out pairs, teacher vs student;
- frames/s at 256x256 and 720x1280, batch 1 (and OpenVINO throughput mode), through `cgdeploy bench`'s harness:
  teacher torch eager fp32, teacher best, student best — with every spec's row kept in results.json.
The GAN term's weight defaults to 0 here (`--lambda-gan`; `cgdeploy distill`'s default is the paper's 1): the
targets are PSNR to the teacher, which the GAN term costs — same teacher, ngf 8 / 9-block student, 1000 steps,
same seed: 28.2 dB with weight 1, 31.0 dB with 0 (results/distill_fast_1800 is the weight-1 run at 1800 s).
Students are cached outside the repository (~/.cache/cgdeploy/students/<key>, CGDEPLOY_CACHE) under a key
covering the teacher's hash and every setting; timings are always measured afresh.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import ROOT, bootstrap, budget_schedule, command_output, seconds_per_step  # noqa: E402

SIZES = [(256, 256), (720, 1280)]
TEACHER_SPECS = ["torch", "openvino-bf16", "openvino-int8", "openvino-int8-bf16"]
STUDENT_SPECS = ["torch", "onnxruntime", "openvino-f32", "openvino-bf16", "openvino-int8", "openvino-int8-bf16",
                 "openvino-int8-tput", "openvino-int8-bf16:space_to_depth=false"]  # the last: without the rewrite
DATA = {"n_train": 400, "n_test": 50, "size": 64, "seed": 0}  # the teacher's data (benchmarks/train_synthetic.py)
TARGETS = {"mac_ratio": 10.0, "task_loss_db": 0.5, "held_out_psnr_db": 30.0, "fps_720p": 10.0, "fps_720p_stretch": 15.0}


def student_key(teacher_sha: str, ngf: int, n_blocks: int, budget: float, batch: int, seed: int,
                lambda_gan: float = 1.0) -> str:
    key: dict[str, Any] = {"teacher": teacher_sha, "ngf": ngf, "n_blocks": n_blocks, "budget": budget, "batch": batch,
                           "seed": seed, "data": DATA, "v": 1}
    if lambda_gan != 1.0:  # the keys of students distilled before the option existed (GAN x 1) stay valid
        key["lambda_gan"] = lambda_gan
    text = json.dumps(key)
    gan = "" if lambda_gan == 1.0 else f"-gan{lambda_gan:g}"
    return f"ngf{ngf}-{n_blocks}blocks-{int(budget)}s-b{batch}{gan}-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def ensure_student(teacher: Path, data: Path, ngf: int, n_blocks: int, budget: float, batch: int, seed: int,
                   tiny: bool, lambda_gan: float = 1.0) -> tuple[Path, dict[str, Any]]:
    """(run dir, training record) of a cached student; distills it first when missing. The run appears under its
    final name only once finished."""
    import torch

    from cyclegan_deploy.metadata import sha256_file
    from cyclegan_deploy.train.distill import Distiller, distill_config
    from cyclegan_deploy.train.loop import train

    root = Path(os.environ.get("CGDEPLOY_CACHE") or Path.home() / ".cache" / "cgdeploy") / "students"
    final = root / student_key(sha256_file(teacher), ngf, n_blocks, budget, batch, seed + (1000 if tiny else 0),
                               lambda_gan)
    record_path = final / "distill_run.json"
    if record_path.is_file() and (final / "latest_net_G.pth").is_file():
        return final, json.loads(record_path.read_text())
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    settings: dict[str, Any] = {"ngf": ngf, "n_blocks": n_blocks, "batch_size": batch, "crop_size": DATA["size"],
                                "load_size": DATA["size"], "num_workers": 0, "seed": seed, "device": "cpu",
                                "save_every": 1000, "lambda_gan": lambda_gan}
    t0 = time.monotonic()
    calibration = distill_config(teacher, partial, data, **settings)
    step_s = seconds_per_step(Distiller(calibration, torch.device("cpu")), calibration, warmup=5, steps=10)
    left = budget - (time.monotonic() - t0)
    per_epoch = math.ceil(DATA["n_train"] / batch)
    epochs, schedule = budget_schedule(step_s, left, per_epoch, fill=0.93)
    settings |= schedule
    cfg = distill_config(teacher, partial, data, **settings)
    print(f"distilling ngf {ngf} / {n_blocks} blocks: {step_s:.3f} s/step, {epochs} epochs x {per_epoch} steps "
          f"planned in {left:.0f} s -> {final}", file=sys.stderr)
    result = train(cfg, log=lambda m: print(m, file=sys.stderr))
    record = {"budget_s": budget, "train_s": round(time.monotonic() - t0, 1), "step_s": round(step_s, 4),
              "epochs_planned": epochs, "epochs_done": result.epochs_done, "iterations": result.iterations,
              "stopped_by_budget": result.stopped_early, "batch_size": batch, "last_losses": result.last_losses,
              "settings": {**cfg.to_dict(), "dataroot": "<built-in data>", "run_dir": "<cache>",
                           "teacher": teacher.name}}
    (partial / "distill_run.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final, record


def export(checkpoint: Path, out: Path, tiny: bool) -> dict[str, Path]:
    """FP32 + INT8 graphs through `cgdeploy export` (parity gates, the int8 accuracy guard)."""
    from cyclegan_deploy.export.pipeline import ExportOptions, run_export

    opts = ExportOptions(checkpoint=checkpoint, out_dir=out, direction="AtoB", int8=True, force=True,
                         calib_size=16 if tiny else 64, int8_min_psnr=20.0 if tiny else 40.0)
    run_export(opts, echo=lambda text: print(text, file=sys.stderr, flush=True))
    return {"onnx": out / "g_AtoB.onnx", "int8": out / "g_AtoB.int8.onnx"}


def bench(name: str, checkpoint: Path, graphs: dict[str, Path], specs: list[str], sizes: list[tuple[int, int]],
          args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from cyclegan_deploy.bench import BenchConfig, run_bench
    from cyclegan_deploy.bench.peaks import machine_peaks

    cfg = BenchConfig(out_dir=out, checkpoint=checkpoint, onnx=graphs["onnx"], onnx_int8=graphs["int8"],
                      cases=[(s, h, w, 1) for (h, w) in sizes for s in specs], reference="torch", baseline="torch",
                      repeats=3 if args.tiny else 15, warmup=1 if args.tiny else 2,
                      max_seconds=2.0 if args.tiny else 40.0, notes=[f"{name}"], peaks=machine_peaks())
    return run_bench(cfg)


def fps_of(row: dict[str, Any]) -> float:
    """Frames/s of a case: the better of batch-1 latency and throughput mode (both measured)."""
    return max(row.get("fps") or 0.0, row.get("throughput_fps") or 0.0)


def best(results: dict[str, Any], size: str, exclude: tuple[str, ...] = ()) -> dict[str, Any] | None:
    rows = [r for r in results["cases"] if r["status"] == "ok" and r["size"] == size and r["backend"] not in exclude]
    return max(rows, key=fps_of, default=None)


def speed_table(models: dict[str, dict[str, Any]], sizes: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows: teacher torch eager fp32, teacher best, each student's torch eager and best, per size."""
    rows: list[dict[str, Any]] = []
    for size in sizes:
        base = next((r for r in models["teacher"]["cases"] if r["status"] == "ok" and r["size"] == size
                     and r["backend"] == "torch"), None)
        base_fps = fps_of(base) if base else None
        for label, results, pick in [("teacher torch eager fp32", models["teacher"], "torch"),
                                     ("teacher best", models["teacher"], None)] + \
                [(f"{name} torch eager fp32", r, "torch") for name, r in models.items() if name != "teacher"] + \
                [(f"{name} best", r, None) for name, r in models.items() if name != "teacher"]:
            row = (next((r for r in results["cases"] if r["status"] == "ok" and r["size"] == size
                         and r["backend"] == pick), None) if pick else best(results, size))
            if row is None:
                rows.append({"size": size, "model": label, "status": "no successful case"})
                continue
            fps = fps_of(row)
            rows.append({"size": size, "model": label, "spec": row["backend"], "ran_as": row.get("backend_name"),
                         "p50_ms": row["stats_ms"]["p50"], "fps": round(fps, 2),
                         "mode": "throughput" if (row.get("throughput_fps") or 0) > (row.get("fps") or 0) else
                         "batch 1", "x_teacher_torch": round(fps / base_fps, 2) if base_fps else None})
    lines = ["| size | model | spec (ran as) | mode | p50 ms (batch 1) | frames/s | x teacher torch fp32 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "fps" not in r:
            lines.append(f"| {r['size']} | {r['model']} | {r['status']} | | | | |")
            continue
        lines.append(f"| {r['size']} | {r['model']} | {r['spec']} ({r['ran_as']}) | {r['mode']} | {r['p50_ms']:.1f} | "
                     f"{r['fps']:.2f} | {r['x_teacher_torch']}x |")
    return rows, lines


def targets(students: dict[str, dict[str, Any]], speed: list[dict[str, Any]], vnni: bool) -> list[str]:
    out = []
    for name, s in students.items():
        ev = s["eval"]
        ratio, task = ev["macs"]["256x256"]["ratio"], ev.get("task", {})
        loss = -task["delta_db"] if "delta_db" in task else None
        held = ev.get("held_out", {}).get("psnr_db_mean")
        int8 = next((r for r in speed if r["model"] == f"{name} best" and r["size"] == "720x1280" and "fps" in r), None)
        int8_fps = s.get("int8_720p_fps")
        checks = [(f"MACs {ratio:.1f}x fewer", ratio >= TARGETS["mac_ratio"], f">= {TARGETS['mac_ratio']:.0f}x"),
                  (f"task PSNR {'n/a' if loss is None else f'{-loss:+.2f} dB'} vs teacher",
                   loss is not None and loss <= TARGETS["task_loss_db"], f"within {TARGETS['task_loss_db']} dB"),
                  (f"held-out PSNR vs teacher {held} dB", held is not None and held >= TARGETS["held_out_psnr_db"],
                   f">= {TARGETS['held_out_psnr_db']:.0f} dB"),
                  (f"INT8 at {speed[-1]['size']} {int8_fps if int8_fps is not None else 'n/a'} fps",
                   int8_fps is not None and int8_fps >= TARGETS["fps_720p"],
                   f">= {TARGETS['fps_720p']:.0f} fps{'' if vnni else ' (this CPU has no VNNI: target not applicable)'}"
                   f", stretch {TARGETS['fps_720p_stretch']:.0f}")]
        met = all(ok for _, ok, _ in checks)
        verdicts = "; ".join(f"{what} ({goal}: {'met' if ok else 'NOT met'})" for what, ok, goal in checks)
        out.append(f"- **{name}**: {verdicts} — {'all met' if met else 'not all met'}"
                   + (f"; best at 720p: {int8['spec']} {int8['fps']} fps" if int8 else ""))
    return out


def picture(teacher: Path, students: dict[str, Path], out: Path, side: int = 384) -> str:
    """input | teacher | student... on a natural photograph (scikit-image's chelsea), one row."""
    from cyclegan_deploy.quality import natural_photos
    from cyclegan_deploy.train.checkpoints import load_generator
    from cyclegan_deploy.train.runlog import save_grid
    from cyclegan_deploy.train.synthetic import translate_uint8

    names, photos = natural_photos(side)
    photo = photos[names.index("chelsea")][None]
    row = [photo[0]]
    for path in [teacher, *students.values()]:
        net, meta = load_generator(path)
        row.append(translate_uint8(net, photo, multiple=meta.multiple)[0])
    save_grid([row], out)
    return "input | teacher | " + " | ".join(students)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks" / "results" / "distill")
    ap.add_argument("--tiny", action="store_true", help="tiny teacher, students and sizes: checks the script only")
    ap.add_argument("--students", default="16x6,24x9,8x9", help="ngf x blocks list (default 16x6,24x9,8x9)")
    ap.add_argument("--budget", type=float, default=900.0, help="distillation seconds per student (default 900)")
    ap.add_argument("--batch-size", type=int, default=4, help="distillation batch (default 4: 2x the images/s of "
                                                              "batch 1 on 2 cores)")
    ap.add_argument("--lambda-gan", type=float, default=0.0,
                    help="weight of the GAN term (default 0: distillation + feature terms only; see the docstring)")
    ap.add_argument("--teacher-budget", type=float, default=1200.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    how = bootstrap()
    import torch
    from cpu import profile_openvino
    from teacher import ensure_teacher

    from cyclegan_deploy.artifacts import write_json, write_text
    from cyclegan_deploy.machine import isa
    from cyclegan_deploy.train.evaluate import evaluate
    from cyclegan_deploy.train.synthetic import write_synthetic

    torch.set_num_threads(2)
    t0 = time.time()
    if args.tiny:
        teacher_run = ensure_teacher(20.0, size=32, ngf=8, n_blocks=2)
        students = [(4, 1), (6, 2)]
        budget, sizes = 15.0, [(32, 32), (36, 64)]
        DATA.update(size=32, n_train=40, n_test=8)
    else:
        teacher_run = ensure_teacher(args.teacher_budget)
        students = [tuple(int(v) for v in s.split("x")) for s in args.students.split(",")]
        budget, sizes = args.budget, SIZES
    teacher = teacher_run / "run" / "latest_net_G_A.pth"
    teacher_record = json.loads((teacher_run / "train_synthetic.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="cgdeploy-distill-bench-"))
    try:
        data = write_synthetic(work / "data", n_train=DATA["n_train"], n_test=DATA["n_test"], size=DATA["size"],
                               seed=DATA["seed"])
        student_runs: dict[str, Path] = {}
        records: dict[str, dict[str, Any]] = {}
        for ngf, n_blocks in students:
            name = f"student ngf{ngf}-{n_blocks}blocks"
            run, record = ensure_student(teacher, data, ngf, n_blocks, budget, args.batch_size, args.seed, args.tiny,
                                         args.lambda_gan)
            student_runs[name] = run / "latest_net_G.pth"
            records[name] = {"run": run.name, "training": record}
        for name, path in student_runs.items():
            print(f"evaluating {name} against the teacher", file=sys.stderr)
            records[name]["eval"] = evaluate(path, teacher, data, photo_side=32 if args.tiny else 256)
        args.out.mkdir(parents=True, exist_ok=True)
        shown = picture(teacher, student_runs, args.out / "side_by_side.png", 64 if args.tiny else 384)
        graphs = {"teacher": export(teacher, work / "export" / "teacher", args.tiny)}
        for i, (name, path) in enumerate(student_runs.items()):
            graphs[name] = export(path, work / "export" / f"student{i}", args.tiny)
            parity = json.loads(graphs[name]["int8"].with_suffix(".parity.json").read_text())
            records[name]["int8_gate"] = {"ran_as": parity["candidate"],
                                          "worst_psnr_db": round(min(c["psnr_db"] for c in parity["cases"]), 2)}
        # timings last, back to back, with nothing else running in this process
        size_names = [f"{h}x{w}" for h, w in sizes]
        models = {"teacher": bench("teacher", teacher, graphs["teacher"], TEACHER_SPECS, sizes, args, work / "b0")}
        for i, (name, path) in enumerate(student_runs.items()):
            models[name] = bench(name, path, graphs[name], STUDENT_SPECS, sizes, args, work / f"b{i + 1}")
        for name in student_runs:
            int8 = [r for r in models[name]["cases"] if r["status"] == "ok" and r["size"] == size_names[-1]
                    and r["backend"].startswith("openvino-int8")]
            records[name]["int8_720p_fps"] = round(max(map(fps_of, int8)), 2) if int8 else None
        speed, speed_md = speed_table(models, size_names)
        first = next(iter(student_runs))
        profile = {prec: profile_openvino(graphs[first]["int8"], prec, *sizes[-1], None) for prec in ("f32", "bf16")}
        flags = isa()
        vnni = any(ok for label, ok in flags.items() if "VNNI" in label.upper())
        lines = targets({k: v for k, v in records.items()}, speed, vnni)
        command = " ".join(["python benchmarks/distill.py", *(sys.argv[1:] if argv is None else argv)])
        results = {"benchmark": "distill", "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                   "tiny": args.tiny,
                   "isa": flags, "threads": torch.get_num_threads(), "torch": torch.__version__, "imported": how,
                   "teacher": {"file": str(teacher.relative_to(teacher_run.parent)), "training": teacher_record},
                   "data": DATA, "budget_s_per_student": budget, "lambda_gan": args.lambda_gan,
                   "students": records, "speed": speed,
                   "targets": TARGETS, "summary": lines, "bench": models, "picture": shown,
                   "profile": {"student": first, "graph": "int8", "size": size_names[-1], "by_float_ops": profile},
                   "script_s": round(time.time() - t0, 1)}
        write_json(args.out / "results.json", results)
        write_text(args.out / "summary.md", summary_md(results, speed_md))
        write_text(args.out / "lscpu.txt", command_output(["lscpu"]) + "\n")
        print(summary_md(results, speed_md))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def profile_md(r: dict[str, Any]) -> list[str]:
    """Where the student's int8 inference spends its time (OpenVINO perf counters, one inference after warm-up)."""
    p = r["profile"]
    lines = [f"## Where the time goes: {p['student']} int8 graph at {p['size']} (OpenVINO perf counters)", "",
             "| float ops run as | total ms | top kernels (share of time) |", "|---|---|---|"]
    for prec, prof in p["by_float_ops"].items():
        top = ", ".join(f"{k['op']} {k['ms']:.0f} ms ({100 * k['share']:.0f}%)" for k in prof["by_kernel"][:5])
        lines.append(f"| {prec} | {prof['total_ms']:.0f} | {top} |")
    lines += ["", "The float convolution is the output conv (7x7, ngf -> 3 channels, full resolution; kept float by "
              "design, like InstanceNormalization = MVN). Its 3 output channels would fill a 16-lane AVX-512 "
              "register only 3/16 full, so the OpenVINO backend runs its exact space-to-depth form (4x4, 4 ngf -> 12 "
              "channels at half resolution, between SpaceToDepth and DepthToSpace; backends/openvino_rewrite.py): "
              "the `:space_to_depth=false` rows of the speed table are without it. % of the measured int8 peak "
              "per case is in results.json (bench rows, pct_peak)."]
    return lines


def summary_md(r: dict[str, Any], speed_md: list[str]) -> str:
    t = r["teacher"]["training"]
    flags = ", ".join(k for k, v in r["isa"].items() if v) or "none of AVX2/AVX-512"
    lines = [f"# Distilled students ({'--tiny: script check, numbers meaningless' if r['tiny'] else 'full run'})", "",
             f"{r['date']}; CPU ISA: {flags}; {r['threads']} threads; torch {r['torch']}. Command: "
             f"`{r.get('command') or 'python benchmarks/distill.py'}`.", "",
             f"Teacher: ResNet-9 ngf 64 CycleGAN, {t['iterations']} iterations in {t['train_s']:.0f} s on the built-in "
             f"data (task PSNR {t['psnr_model_db']:.2f} dB vs identity {t['psnr_identity_db']:.2f} dB). Students "
             f"distilled with `cgdeploy distill`'s trainer for {r['budget_s_per_student']:.0f} s each on "
             f"{r['data']['n_train']} built-in {r['data']['size']}x{r['data']['size']} images (losses: L1 to the "
             f"teacher x 10, features x 0.01, GAN x {r.get('lambda_gan', 1.0):g}).", "",
             "## Targets", "", *r["summary"], "",
             "## Size and quality", "",
             "| student | MACs 256x256 (teacher) | MACs 720x1280 | ratio | iterations | vs teacher, held-out "
             "(mean / worst) | SSIM held-out | vs teacher, photos (mean / worst) | SSIM photos | task PSNR (teacher) | "
             "INT8 parity gate vs fp32, worst |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["students"].items():
        ev, m = s["eval"], s["eval"]["macs"]
        h, p, task = ev.get("held_out", {}), ev.get("photos", {}), ev.get("task", {})
        lines.append(f"| {name} | {m['256x256']['generator'] / 1e9:.2f} G ({m['256x256']['against'] / 1e9:.2f} G) | "
                     f"{m['720x1280']['generator'] / 1e9:.1f} G | {m['256x256']['ratio']}x | "
                     f"{s['training']['iterations']} | {h.get('psnr_db_mean')} / {h.get('psnr_db_min')} dB | "
                     f"{h.get('ssim_mean')} | {p.get('psnr_db_mean')} / {p.get('psnr_db_min')} dB | "
                     f"{p.get('ssim_mean')} | {task.get('generator_psnr_db')} ({task.get('against_psnr_db')}) dB | "
                     f"{s['int8_gate']['worst_psnr_db']} dB ({s['int8_gate']['ran_as']}) |")
    lines += ["", "## Speed (medians; frames/s is the better of batch-1 latency and OpenVINO throughput mode)", "",
              *speed_md, "", *profile_md(r), "",
              f"Picture (`side_by_side.png`): {r['picture']} on scikit-image's `chelsea`.", "",
              f"Whole script: {r['script_s']:.0f} s (students cached after their first distillation)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
