#!/usr/bin/env python3
"""CPU benchmark of the full-size ResNet-9 (ngf 64, instance norm, seeded weights) across CPU backends.

    python benchmarks/cpu.py                     # the real run: 256x256 and 720x1280 -> benchmarks/results/cpu/
    python benchmarks/cpu.py --tiny -o /tmp/cpu  # proves the script end to end in a minute (numbers meaningless)

One process, one run: torch eager fp32 (the baseline), torch bf16 (autocast + channels_last), torch.compile
fp32 and bf16, ONNX Runtime CPU, OpenVINO f32 and bf16 at batch 1 on both sizes, and the most promising
throughput variants at batch 4 on 256x256. Ratios are against torch eager fp32 measured in the same run.
Writes results.json/.csv/.md + latency.png (the harness), profile.json (per-op time of ONNX Runtime, OpenVINO
and torch eager at 256x256: where the time goes), summary.md (machine, target check, ratios, profile) and
lscpu.txt. Target (issue 5): best CPU backend >= 8x torch eager fp32 at 256x256 with PSNR >= 40 dB.
Not tried on purpose: ORT FP16 (ORT CPU has no FP16 conv kernels: it casts back to FP32, FACTS.md), ORT
bf16 (no CPU kernels), int8 (PSNR would have to be shown to hold; out of scope), OpenVINO THROUGHPUT hint
(it splits cores into streams that only pay off with several requests in flight; the Backend protocol is
one synchronous call).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, TINY_SIZES, bootstrap, command_output, lscpu_summary, parse_sizes, prepare  # noqa: E402

SPECS_B1 = ["torch", "torch-bf16", "torch-compile", "torch-compile-bf16", "onnxruntime", "openvino-f32",
            "openvino-bf16"]
SPECS_B4 = ["torch", "torch-compile-bf16", "onnxruntime", "openvino-bf16"]  # throughput at 256x256, batch 4


def _top(rows: dict[str, float], total: float, n: int = 12) -> list[dict[str, Any]]:
    return [{"op": k, "ms": round(v, 3), "share": round(v / total, 4) if total else None}
            for k, v in sorted(rows.items(), key=lambda kv: -kv[1])[:n]]


def profile_openvino(onnx: Path, precision: str, h: int, w: int, threads: int | None) -> dict[str, Any]:
    """OpenVINO perf counters of one inference (after warm-up): time by layer type and by kernel (exec type:
    shows whether AMX/AVX-512 bf16 kernels ran)."""
    import openvino as ov

    from cyclegan_deploy.bench.metrics import make_input

    core = ov.Core()
    model = core.read_model(str(onnx))
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


def profile_onnxruntime(onnx: Path, h: int, w: int, threads: int | None, work: Path) -> dict[str, Any]:
    """ONNX Runtime's profiler (kernel time per op type), averaged over 3 runs after one warm-up run."""
    import onnxruntime as ort

    from cyclegan_deploy.bench.metrics import make_input

    x = make_input(1, h, w)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: x})
    so.enable_profiling = True
    so.profile_file_prefix = str(work / "ort_profile")
    session = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
    runs = 3
    for _ in range(runs + 1):
        session.run(None, {name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e3 / (runs + 1)  # the first run includes no session init
    total = sum(by_op.values())
    return {"size": f"{h}x{w}", "total_ms": round(total, 3), "by_type": _top(by_op, total)}


def profile_torch(checkpoint: Path, h: int, w: int) -> dict[str, Any]:
    """torch.profiler self CPU time per aten op for one eager fp32 call (the baseline's own breakdown)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cyclegan_deploy.bench.metrics import make_input
    from cyclegan_deploy.train.checkpoints import load_generator

    model, _ = load_generator(checkpoint)
    x = torch.from_numpy(make_input(1, h, w))
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
    rows = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
    total = sum(rows.values())
    return {"size": f"{h}x{w}", "total_ms": round(total, 3), "by_type": _top(rows, total)}


def run_profiles(onnx: Path, checkpoint: Path, h: int, w: int, threads: int | None, work: Path,
                 bf16: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    jobs: list[tuple[str, Any]] = [
        ("openvino-bf16" if bf16 else "openvino-f32", lambda: profile_openvino(onnx, "bf16" if bf16 else "f32",
                                                                              h, w, threads)),
        ("onnxruntime-cpu", lambda: profile_onnxruntime(onnx, h, w, threads, work)),
        ("torch-cpu", lambda: profile_torch(checkpoint, h, w)),
    ]
    for name, job in jobs:
        try:
            out[name] = job()
        except Exception as e:  # a missing runtime must not lose the benchmark itself
            out[name] = {"status": f"failed: {type(e).__name__}: {str(e)[:200]}"}
    return out


def _best(results: dict[str, Any], size: str) -> dict[str, Any] | None:
    """The fastest ok case at `size` by frames/s (any batch) with PSNR >= 40 dB vs torch fp32 (or exact)."""
    good = [r for r in results["cases"] if r["status"] == "ok" and r["size"] == size
            and (r["max_abs"] == 0 or (r["psnr_db"] or 0) >= 40)]
    return max(good, key=lambda r: r["fps"]) if good else None


def summary_md(results: dict[str, Any], profiles: dict[str, Any], lscpu: dict[str, str], sizes: list[str],
               tiny: bool) -> str:
    from cyclegan_deploy.bench.report import TABLE_HEAD, table_rows

    m = results["machine"]
    lines = ["# CPU benchmark: ResNet-9 generator" + (" (--tiny smoke run: numbers are meaningless)" if tiny else ""),
             "", f"Created {results['created']} by `{results['command']}`.", "", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in lscpu.items()]
    cpu, threads = m["cpu"], results["settings"]["threads"] or "backend default (physical cores)"
    lines += [f"- Physical cores used: {cpu['physical_cores']}; threads: {threads}",
              f"- Peak (assumed, see bench/metrics.py cpu_flop_per_cycle): fp32 {cpu['peak_gflops']['fp32']} GFLOP/s, "
              f"bf16 {cpu['peak_gflops']['bf16']} GFLOP/s at {cpu['ghz']} GHz ({cpu['ghz_source']})",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v), ""]
    macs = results["model"]["macs"]
    lines += ["## Model", "", "Seeded ResNet generator, instance norm: " + "; ".join(
        f"{k}: {v['macs'] / 1e9:.2f} GMAC real ({v['macs_dense'] / 1e9:.2f} dense-equivalent)" if v.get("macs")
        else f"{k}: {v.get('from')}" for k, v in macs.items()), ""]
    lines += ["## Target: best CPU backend >= 8x torch eager fp32 at 256x256 with PSNR >= 40 dB", ""]
    base = {(r["size"], r["batch"]): r for r in results["cases"] if r["backend"] == "torch" and r["status"] == "ok"}
    for size in sizes:
        best, b1 = _best(results, size), base.get((size, 1))
        if best and b1:
            ratio = best["fps"] / b1["fps"]
            psnr = "inf" if best["max_abs"] == 0 else f"{best['psnr_db']:.1f}"
            verdict = ("target met" if ratio >= 8 else "target NOT met") if size == "256x256" else "for reference"
            lines.append(f"- {size}: best `{best['backend']}` ({best['backend_name']}) batch {best['batch']}: "
                         f"{best['fps']:.3f} frames/s = **{ratio:.2f}x** torch eager fp32 batch 1 "
                         f"({b1['fps']:.3f} frames/s), PSNR {psnr} dB -> {verdict}")
        else:
            lines.append(f"- {size}: no comparison (torch eager or every fast backend failed; see results.md)")
    lines += ["", "## All cases (speedup = vs torch eager fp32, same size and batch)", "",
              "| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(results)]
    lines += ["", f"## Where the time goes (one {sizes[0]} call per runtime, per-op profilers)", ""]
    for name, prof in profiles.items():
        if "status" in prof:
            lines.append(f"- {name}: {prof['status']}")
            continue
        extra = f", precision used {prof['precision_used']}" if "precision_used" in prof else ""
        lines.append(f"- **{name}** {prof['size']}, total {prof['total_ms']:.1f} ms{extra}: " + ", ".join(
            f"{t['op']} {100 * (t['share'] or 0):.0f}%" for t in prof["by_type"][:8]))
        if "by_kernel" in prof:
            lines.append("  - kernels: " + ", ".join(f"{t['op']} {100 * (t['share'] or 0):.0f}%"
                                                     for t in prof["by_kernel"][:6]))
    lines += ["", "Full per-case samples, environment and settings: results.json; plot: latency.png.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny model and sizes: checks the script, not the CPU")
    ap.add_argument("--sizes", default=None, help="HxW list (default 256x256,720x1280; tiny: 32x32,36x64)")
    ap.add_argument("--specs", default=None, help="comma-separated bench specs for batch 1 (default: all CPU ones)")
    ap.add_argument("--batch4-specs", default=None, help="specs also run at batch 4 on the first size")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None, help="per case (default 60; tiny 2)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: each backend's, = cores)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-freezing", action="store_true",
                    help="leave TorchInductor freezing off (on by default: it constant-folds the weights and lets "
                         "oneDNN prepack them for its bf16/AMX convolutions, the main CPU lever of torch.compile)")
    args = ap.parse_args(argv)
    if not args.no_freezing:  # read when torch._inductor.config is first imported, i.e. at the first compile
        os.environ.setdefault("TORCHINDUCTOR_FREEZING", "1")
    how = bootstrap()
    from cyclegan_deploy.artifacts import write_json, write_text
    from cyclegan_deploy.bench import BenchConfig, print_table, run_bench, write_outputs

    sizes = parse_sizes(args.sizes) if args.sizes else (TINY_SIZES if args.tiny else [(256, 256), (720, 1280)])
    specs = args.specs.split(",") if args.specs else SPECS_B1
    b4 = args.batch4_specs.split(",") if args.batch4_specs is not None else SPECS_B4
    cases = [(s, h, w, 1) for (h, w) in sizes for s in specs] + [(s, *sizes[0], 4) for s in b4 if s]
    notes: list[str] = [f"cyclegan_deploy imported from {how}",
                        f"TORCHINDUCTOR_FREEZING={os.environ.get('TORCHINDUCTOR_FREEZING', '0')} for torch-compile*"]
    work = Path(tempfile.mkdtemp(prefix="cgdeploy-cpu-bench-"))
    try:
        t0 = time.time()
        paths = prepare(work, args.tiny, fp16=False, notes=notes)
        cfg = BenchConfig(out_dir=args.out, checkpoint=paths["checkpoint"], onnx=paths["onnx"], cases=cases,
                          reference="torch", baseline="torch", threads=args.threads,
                          repeats=args.repeats or (3 if args.tiny else 20),
                          warmup=args.warmup or (1 if args.tiny else 3),
                          max_seconds=args.max_seconds or (2.0 if args.tiny else 60.0), notes=notes)
        results = run_bench(cfg)
        profiles: dict[str, Any] = {}
        onnx, checkpoint = paths["onnx"], paths["checkpoint"]
        if not args.no_profile and onnx is not None and checkpoint is not None:
            bf16 = bool({"amx_bf16", "avx512_bf16"} & set(results["machine"]["cpu"]["flags"]))
            profiles = run_profiles(onnx, checkpoint, *sizes[0], args.threads, work, bf16)
        results["notes"].append(f"whole script took {time.time() - t0:.0f} s")
        results["profile"] = profiles
        write_outputs(results, args.out)
        summary = summary_md(results, profiles, lscpu_summary(), [f"{h}x{w}" for h, w in sizes], args.tiny)
        write_json(args.out / "profile.json", profiles)
        write_text(args.out / "lscpu.txt", command_output(["lscpu"]) + "\n")
        write_text(args.out / "summary.md", summary)
        print_table(results)
        print(f"wrote {args.out}/summary.md, results.json/.csv/.md, latency.png, profile.json, lscpu.txt")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
