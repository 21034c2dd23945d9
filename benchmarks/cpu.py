#!/usr/bin/env python3
"""CPU benchmark of a *trained* full-size ResNet-9 (ngf 64, instance norm) across CPU backends and precisions.

    python benchmarks/cpu.py                     # the real run: 256x256 and 720x1280 -> benchmarks/results/cpu/
    python benchmarks/cpu.py --tiny -o /tmp/cpu  # proves the script end to end in a minute (numbers meaningless)

The model is benchmarks/teacher.py's teacher (trained on the built-in data, cached outside the repo; the
first run trains it: ~20 min), exported by `cgdeploy export --int8` (FP32 graph + guarded INT8 QDQ graph,
both parity-gated; calibration: the built-in data the teacher was trained on). One process, one run: torch
eager fp32 (the baseline), ONNX Runtime fp32 and int8, OpenVINO f32 / bf16 / int8 at batch 1 on both sizes,
then OpenVINO's throughput mode (THROUGHPUT hint, N infer requests in flight) for the same three. Ratios are
against torch eager fp32 batch 1 in the same run. Quality (benchmarks/cpu_quality.py): PSNR vs fp32 on real
photographs (scikit-image) and task PSNR on the built-in held-out pairs. The measured GEMM peaks per library
and precision come from the bench (cached per machine). A precision the CPU cannot run (bf16 without
AVX512-BF16/AMX) is reported unavailable, never measured as something else.
Writes results.json/.csv/.md + latency.png (the harness), quality.json, profile.json (OpenVINO per-kernel time
of the int8 and f32 graphs: shows which kernels really ran), summary.md and lscpu.txt.
Targets (issue 10), on a CPU with AVX512-VNNI: OpenVINO int8 >= 5x torch eager at 256x256 (stretch: >= 8x in
throughput mode), >= 40 dB vs fp32 on the photos, <= 0.3 dB task-PSNR loss.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, TINY_SIZES, bootstrap, command_output, lscpu_summary, parse_sizes  # noqa: E402

# the last one is openvino-int8 without the backend's space-to-depth rewrite of the output conv: what it buys
SPECS_B1 = ["torch", "onnxruntime", "onnxruntime-int8", "openvino-f32", "openvino-bf16", "openvino-int8",
            "openvino-int8-bf16", "openvino-int8:space_to_depth=false"]
SPECS_TPUT = ["openvino-f32-tput", "openvino-bf16-tput", "openvino-int8-tput", "openvino-int8-bf16-tput"]
TARGET_B1, TARGET_TPUT, TARGET_PSNR, TARGET_TASK_LOSS = 5.0, 8.0, 40.0, 0.3


def _top(rows: dict[str, float], total: float, n: int = 12) -> list[dict[str, Any]]:
    return [{"op": k, "ms": round(v, 3), "share": round(v / total, 4) if total else None}
            for k, v in sorted(rows.items(), key=lambda kv: -kv[1])[:n]]


def profile_openvino(onnx: Path, precision: str, h: int, w: int, threads: int | None) -> dict[str, Any]:
    """OpenVINO perf counters of one inference (after warm-up): time by layer type and by kernel (exec type:
    shows whether AMX/AVX-512 bf16 kernels ran). The model is rewritten as the backend does (openvino_rewrite)."""

    from cyclegan_deploy.backends.openvino import shared_core
    from cyclegan_deploy.backends.openvino_rewrite import space_to_depth_narrow_convs
    from cyclegan_deploy.bench.metrics import make_input

    core = shared_core()
    model = core.read_model(str(onnx))
    space_to_depth_narrow_convs(model)
    model.reshape([1, 3, h, w])
    config: dict[str, Any] = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    x = make_input(1, h, w)
    for _ in range(3):
        request.infer({0: x})
    by_type: dict[str, float] = {}
    by_exec: dict[str, float] = {}
    for info in request.profiling_info:
        ms = info.real_time.total_seconds() * 1e3
        by_type[info.node_type] = by_type.get(info.node_type, 0.0) + ms
        by_exec[f"{info.node_type}/{info.exec_type}"] = by_exec.get(f"{info.node_type}/{info.exec_type}", 0.0) + ms
    total = sum(by_type.values())
    return {"precision_asked": precision,
            "precision_used": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "size": f"{h}x{w}", "total_ms": round(total, 3), "by_type": _top(by_type, total),
            "by_kernel": _top(by_exec, total)}



def run_profiles(graphs: dict[str, Path], h: int, w: int, threads: int | None) -> dict[str, Any]:
    """Where the time goes in OpenVINO, per kernel: the int8 graph (int8 kernels, e.g. brgconv_avx512_I8, or
    not) and the FP32 graph at f32."""
    out: dict[str, Any] = {}
    for name, path, precision in (("openvino-int8", graphs.get("int8"), "f32"), ("openvino-f32", graphs.get("onnx"),
                                                                                 "f32")):
        if path is None:
            out[name] = {"status": "no graph"}
            continue
        try:
            out[name] = profile_openvino(path, precision, h, w, threads)
        except Exception as e:  # a missing runtime must not lose the benchmark itself
            out[name] = {"status": f"failed: {type(e).__name__}: {str(e)[:200]}"}
    return out


def prepare(work: Path, tiny: bool, budget: float, notes: list[str]) -> dict[str, Path]:
    """The trained teacher (tiny: a seeded tiny generator, untrained) and its FP32 + INT8 graphs, made by the
    export pipeline with its parity gates."""
    from cyclegan_deploy.export.pipeline import ExportOptions, run_export

    if tiny:
        from _common import build_generator

        from cyclegan_deploy.train.checkpoints import save_generator

        model, meta = build_generator(True)
        checkpoint = work / "latest_net_G_A.pth"
        save_generator(model, meta, checkpoint)
        notes.append("--tiny: seeded untrained ResNet-2 ngf 8; int8 floor lowered to 20 dB (random weights)")
    else:
        from teacher import ensure_teacher

        teacher = ensure_teacher(budget)
        checkpoint = teacher / "run" / "latest_net_G_A.pth"
        report = json.loads((teacher / "train_synthetic.json").read_text())
        notes.append(f"teacher {teacher.name}: {report['iterations']} iterations in {report['train_s']:.0f} s, task "
                     f"PSNR {report['psnr_model_db']:.2f} dB vs identity {report['psnr_identity_db']:.2f} dB")
    log: list[str] = []
    opts = ExportOptions(checkpoint=checkpoint, out_dir=work / "export", direction="AtoB", int8=True, force=True,
                         calib_size=16 if tiny else 64, int8_min_psnr=20.0 if tiny else 40.0)
    run_export(opts, echo=lambda text: (log.append(text), print(text, file=sys.stderr, flush=True)))
    notes += [line for line in log if line.startswith(("int8", "parity"))]
    return {"checkpoint": checkpoint, "onnx": work / "export" / "g_AtoB.onnx",
            "int8": work / "export" / "g_AtoB.int8.onnx"}


def _cases(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results["cases"] if r["status"] == "ok"]


def _p50(r: dict[str, Any]) -> float:
    return float(r["stats_ms"]["p50"])


def _find(results: dict[str, Any], spec: str, size: str) -> dict[str, Any] | None:
    return next((r for r in _cases(results) if r["backend"] == spec and r["size"] == size and r["batch"] == 1), None)


INT8_VARIANTS = (("openvino-int8", "openvino int8", "OpenVINO int8"),
                 ("openvino-int8-bf16", "openvino int8 + bf16 float ops", "OpenVINO int8 + bf16 float ops"))


def targets(results: dict[str, Any], quality: dict[str, Any], size: str) -> list[str]:
    """The issue's targets, each with its measured number, for each int8 variant, and what the ISA explains."""
    flags = set(results["machine"]["cpu"]["flags"])
    base = _find(results, "torch", size)
    lines = []
    for spec, variant, label in INT8_VARIANTS:
        b1, tput = _find(results, spec, size), _find(results, f"{spec}-tput", size)
        row = next((r for r in quality["rows"] if r["variant"] == variant and r.get("status") == "ok"), None)
        parts = []
        if base and b1:
            ratio = _p50(base) / _p50(b1)
            parts.append(f"batch 1 {_p50(b1):.1f} ms vs torch eager {_p50(base):.1f} ms = **{ratio:.2f}x** (>= "
                         f"{TARGET_B1:g}x: {'met' if ratio >= TARGET_B1 else 'NOT met'})")
        if base and tput and tput.get("throughput_fps"):
            ratio = tput["throughput_fps"] * _p50(base) / 1000
            parts.append(f"throughput mode {tput['throughput_fps']:.2f} frames/s with {tput.get('throughput_inflight')}"
                         f" in flight = **{ratio:.2f}x** (stretch >= {TARGET_TPUT:g}x: "
                         f"{'met' if ratio >= TARGET_TPUT else 'NOT met'})")
        if row:
            psnr, loss = row["photo_psnr_min_db"], row["task_loss_db"]
            parts.append(f"worst photo {psnr:.1f} dB vs fp32 (>= {TARGET_PSNR:g}: "
                         f"{'met' if psnr is None or psnr >= TARGET_PSNR else 'NOT met'}), task-PSNR loss "
                         f"{loss:+.3f} dB (<= {TARGET_TASK_LOSS:g}: "
                         f"{'met' if loss <= TARGET_TASK_LOSS else 'NOT met'})")
        if parts:
            lines.append(f"- {label} at {size}: " + "; ".join(parts))
    if "avx512_vnni" not in flags and "amx_int8" not in flags:
        lines.append("- This CPU has no AVX512-VNNI/AMX-INT8: OpenVINO's int8 convolutions run on AVX2 "
                     "(vpmaddubsw + vpmaddwd, no single-instruction int8 dot product), so int8 gains less here; "
                     "the targets are for VNNI CPUs")
    return lines or ["- no comparison (torch eager or OpenVINO int8 failed; see the table)"]


def summary_md(results: dict[str, Any], quality: dict[str, Any], profiles: dict[str, Any], lscpu: dict[str, str],
               sizes: list[str], tiny: bool) -> str:
    from cpu_quality import markdown as quality_md

    from cyclegan_deploy.bench.report import to_markdown

    m = results["machine"]
    lines = ["# CPU benchmark: trained ResNet-9 generator, fp32 / bf16 / int8"
             + (" (--tiny smoke run: numbers are meaningless)" if tiny else ""), "",
             f"Created {results['created']} by `{results['command']}`.", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in lscpu.items()]
    lines += [f"- Physical cores: {m['cpu']['physical_cores']}; threads: "
              f"{results['settings']['threads'] or 'backend default (physical cores)'}",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v), ""]
    lines += ["## Targets (issue 10)", ""] + targets(results, quality, sizes[0]) + [""]
    lines += ["## Quality", ""] + quality_md(quality) + [""]
    lines += ["## Speed (the bench's own report: latency, throughput, % of the measured peaks)", ""]
    lines += [line.replace("# ", "### ", 1) if line.startswith("# ") else line
              for line in to_markdown(results).splitlines()]
    lines += ["", f"## Where the time goes in OpenVINO ({sizes[0]}, one call, per kernel)", ""]
    for name, prof in profiles.items():
        if "status" in prof:
            lines.append(f"- {name}: {prof['status']}")
            continue
        lines.append(f"- **{name}** total {prof['total_ms']:.1f} ms: " + ", ".join(
            f"{t['op']} {100 * (t['share'] or 0):.0f}%" for t in prof["by_kernel"][:6]))
    lines += ["", "Per-case samples, environment and settings: results.json; quality.json; plot: latency.png.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny untrained model and sizes: checks the script only")
    ap.add_argument("--sizes", default=None, help="HxW list (default 256x256,720x1280; tiny: 32x32,36x64)")
    ap.add_argument("--specs", default=None, help="comma-separated bench specs at batch 1 (default: " +
                    ",".join(SPECS_B1) + ")")
    ap.add_argument("--tput-specs", default=None, help="throughput-mode specs (default: " + ",".join(SPECS_TPUT) + ")")
    ap.add_argument("--teacher-budget", type=float, default=1200.0, help="teacher training seconds (cache key)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None, help="per case (default 45; tiny 2)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: each backend's, = cores)")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args(argv)
    how = bootstrap()
    from cpu_quality import markdown as quality_md
    from cpu_quality import measure

    from cyclegan_deploy.artifacts import write_json, write_text
    from cyclegan_deploy.bench import BenchConfig, print_table, run_bench, write_outputs
    from cyclegan_deploy.bench.peaks import machine_peaks

    sizes = parse_sizes(args.sizes) if args.sizes else (TINY_SIZES if args.tiny else [(256, 256), (720, 1280)])
    specs = args.specs.split(",") if args.specs else SPECS_B1
    tput = args.tput_specs.split(",") if args.tput_specs is not None else SPECS_TPUT
    cases = [(s, h, w, 1) for (h, w) in sizes for s in specs + [t for t in tput if t]]
    notes: list[str] = [f"cyclegan_deploy imported from {how}"]
    work = Path(tempfile.mkdtemp(prefix="cgdeploy-cpu-bench-"))
    try:
        t0 = time.time()
        paths = prepare(work, args.tiny, args.teacher_budget, notes)
        cfg = BenchConfig(out_dir=args.out, checkpoint=paths["checkpoint"], onnx=paths["onnx"],
                          onnx_int8=paths["int8"], cases=cases, reference="torch", baseline="torch",
                          threads=args.threads, repeats=args.repeats or (3 if args.tiny else 15),
                          warmup=args.warmup or (1 if args.tiny else 2),
                          max_seconds=args.max_seconds or (2.0 if args.tiny else 45.0), notes=notes,
                          peaks=machine_peaks(log=print))
        results = run_bench(cfg)
        quality = measure(paths["checkpoint"], {"onnx": paths["onnx"], "int8": paths["int8"]},
                          side=sizes[0][0] if not args.tiny else 32)
        profiles = {} if args.no_profile else run_profiles(paths, *sizes[0], args.threads)
        results["notes"].append(f"whole script took {time.time() - t0:.0f} s")
        results["quality"], results["profile"] = quality, profiles
        results["summary"] = {"targets": targets(results, quality, f"{sizes[0][0]}x{sizes[0][1]}"),
                              "quality": quality_md(quality)}
        write_outputs(results, args.out)
        summary = summary_md(results, quality, profiles, lscpu_summary(), [f"{h}x{w}" for h, w in sizes], args.tiny)
        write_json(args.out / "quality.json", quality)
        write_json(args.out / "profile.json", profiles)
        write_text(args.out / "lscpu.txt", command_output(["lscpu"]) + "\n")
        write_text(args.out / "summary.md", summary)
        print_table(results)
        print("\n".join(targets(results, quality, f"{sizes[0][0]}x{sizes[0][1]}")))
        print(f"wrote {args.out}/summary.md, results.json/.csv/.md, quality.json, latency.png, profile.json, lscpu.txt")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
