#!/usr/bin/env python3
"""Generate the README "Performance" section from the committed benchmark results.

    python benchmarks/make_readme_perf.py        # reads benchmarks/results/{cpu,gpu}/results.json
                                                 # writes benchmarks/results/PERFORMANCE.md

Per machine: one table (rows = backend and batch, columns = p50 latency and speedup per size, parity at the
first size, % of peak), the model's MAC count, the machine's peak and how it was assumed, the plot, and the
command that reproduces it. Image links are relative to the repository root (where README.md lives).
Needs only the standard library and this checkout's cyclegan_deploy/artifacts.py (its atomic writer, itself
standard library only); no install needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MACHINES = (("cpu", "CPU", "python benchmarks/cpu.py"), ("gpu", "GPU", "benchmarks/gpu.sh"))


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _speed(r: dict[str, Any]) -> str:
    return f"{r['speedup']:.2f}x" if r.get("speedup") else "-"


def _psnr(r: dict[str, Any]) -> str:
    if r.get("max_abs") == 0:
        return "exact"
    return f"{r['psnr_db']:.1f}" if r.get("psnr_db") is not None else "-"


def machine_line(res: dict[str, Any], kind: str) -> str:
    m = res["machine"]
    cpu = m["cpu"]
    isa = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in (cpu.get("isa") or {}).items())
    entries = (res.get("peaks") or {}).get("entries") or {}
    peaks = ", ".join(f"{name} {e['gflops']:.4g}" for name, e in entries.items() if e["status"] == "ok")
    cpu_text = (f"{cpu['model']}, {cpu['physical_cores']} physical cores at {cpu['ghz']} GHz; ISA: {isa or 'unknown'}; "
                f"GEMM/conv peaks measured here, G(FL)OP/s (int8: GOP/s): {peaks or 'not measured'}")
    if kind == "gpu" and m["gpus"]:
        g = m["gpus"][0]
        peak = (f"; peak {g['peak_fp32_tflops']} TFLOP/s fp32, {g['peak_fp16_tflops']} TFLOP/s fp16/bf16 tensor "
                "(dense, datasheet)" if g.get("peak_fp32_tflops") else "; peak unknown (not in the table)")
        return f"{g['name']} (driver {g.get('driver', '?')}){peak}. Host CPU: {cpu_text}."
    return cpu_text + "."


def macs_line(res: dict[str, Any]) -> str:
    card = res["model"].get("card") or {}
    name = f"{card.get('arch', 'generator')} ngf {card.get('ngf', '?')}, {card.get('norm', '?')} norm"
    parts = [f"{size}: {v['macs'] / 1e9:.2f} GMAC" for size, v in res["model"]["macs"].items() if v.get("macs")]
    dense = next((v for v in res["model"]["macs"].values() if v.get("macs_dense")), None)
    note = (" (ConvTranspose counted as real multiply-adds; counted as a dense conv over the zero-stuffed output, "
            f"as thop-style tools do, the first is {dense['macs_dense'] / 1e9:.2f} GMAC)") if dense else ""
    return f"Model: {name}; MACs per frame {', '.join(parts) or 'unknown'}{note}. 1 MAC = 2 FLOP."


def table(res: dict[str, Any]) -> list[str]:
    cases = res["cases"]
    sizes = list(dict.fromkeys(r["size"] for r in cases))
    rows = list(dict.fromkeys((r["backend"], r["batch"]) for r in cases))
    by = {(r["backend"], r["batch"], r["size"]): r for r in cases}
    head = ["backend", "batch", "precision"] + [f"{s} {c}" for s in sizes for c in ("p50 ms", "vs base")] + \
           [f"tput fps ({sizes[0]})", f"PSNR dB ({sizes[0]})", f"% peak ({sizes[0]})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backend, batch in rows:
        cells = [by.get((backend, batch, s)) for s in sizes]
        ok = [c for c in cells if c and c["status"] == "ok"]
        if not ok:
            status = next(c["status"] for c in cells if c)
            short = status if len(status) < 90 else status[:87] + "..."
            lines.append(f"| {backend} | {batch} | - | " + f"{short.replace('|', '/')} |" + " |" * (len(head) - 4))
            continue
        first = cells[0] if cells[0] and cells[0]["status"] == "ok" else None
        label = ok[0]["backend_name"] or backend
        spec, _, options = backend.partition(":")  # openvino-int8:space_to_depth=false: an A/B row, named so
        label += (" (throughput mode)" if spec.endswith("-tput") else "") + (f" ({options})" if options else "")
        row = [label, str(batch), ok[0]["precision"]]
        for c in cells:
            row += [_ms(c["stats_ms"]["p50"]), _speed(c)] if c and c["status"] == "ok" else \
                   [c["status"].split(":")[0] if c else "-", "-"]
        tput = first.get("throughput_fps") if first else None
        row += [f"{tput:.2f} ({first['throughput_inflight']} in flight)" if tput else "-",
                _psnr(first) if first else "-",
                f"{first['pct_peak']:.1f}" if first and first.get("pct_peak") is not None else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def best_line(res: dict[str, Any]) -> list[str]:
    """The fastest case at the first size with PSNR >= 40 dB, against the baseline at batch 1 (the target)."""
    size = res["cases"][0]["size"] if res["cases"] else None
    good = [r for r in res["cases"] if r["status"] == "ok" and r["size"] == size
            and (r["max_abs"] == 0 or (r["psnr_db"] or 0) >= 40)]
    base = next((r for r in res["cases"] if r["status"] == "ok" and r["size"] == size and r["batch"] == 1
                 and r["backend"] == res["baseline"]), None)
    if not good or base is None:
        return []
    best = max(good, key=lambda r: r["fps"])
    return ["", f"Fastest at {size} with PSNR >= 40 dB on the bench's seeded frame: `{best['backend_name']}` batch "
                f"{best['batch']}, {best['fps']:.2f} frames/s = **{best['fps'] / base['fps']:.2f}x** "
                f"`{base['backend_name']}` batch 1 (reduced precisions: see their quality on photographs below)."]


def profile_lines(res: dict[str, Any]) -> list[str]:
    out = []
    for name, prof in (res.get("profile") or {}).items():
        if "by_type" in prof:
            out.append(f"- {name} at {prof['size']}: " + ", ".join(
                f"{t['op']} {100 * (t['share'] or 0):.0f}%" for t in prof["by_type"][:5]))
    return ["", "Where the time goes (per-op profilers, share of one call):", *out] if out else []


def section(res: dict[str, Any], kind: str, title: str, command: str, folder: Path, link_root: Path) -> list[str]:
    s = res["settings"]
    lines = [f"### {title}: {machine_line(res, kind)}", "", macs_line(res), "", *table(res), ""]
    lines.append(f"p50 of up to {s['repeats']} timed calls after {s['warmup']} warm-up calls (wall clock per call, "
                 f"host arrays in and out); `vs base` = frames/s against `{res['baseline']}` at the same size and "
                 f"batch; PSNR vs `{res['reference']['spec']}` fp32 on the same seeded frame ([-1, 1] outputs; int8 "
                 "is calibrated for images, not that noise-like frame: its quality on photographs is below); "
                 f"threads: {s['threads'] or 'each backend default (physical cores)'}. Created {res['created']}.")
    lines += best_line(res) + profile_lines(res)
    summary = res.get("summary") or {}  # written by benchmarks/cpu.py: its target checks and quality table
    if summary.get("targets"):
        lines += ["", "Targets:", *summary["targets"]]
    if summary.get("quality"):
        lines += ["", *summary["quality"]]
    video = res.get("video")
    if video and video.get("status") == "ok":
        lines.append(f"Video end-to-end ({video['backend_name']}, batch {video['batch']}): "
                     f"{video['end_to_end_fps']:.2f} fps vs {video['inference_only_fps']:.2f} fps inference-only.")
    plot = folder / "latency.png"
    if plot.is_file():
        lines += ["", f"![{title} latency per frame]({os.path.relpath(plot, link_root)})"]
    versions = ", ".join(f"{k} {v}" for k, v in res["machine"]["versions"].items() if v and k != "cyclegan-deploy")
    lines += ["", f"Reproduce: `{command}` (full results: `{os.path.relpath(folder, link_root)}/`). Versions: "
              f"{versions}.", ""]
    return lines


def build(results_dir: Path, link_root: Path) -> str:
    out = ["## Performance", "",
           "<!-- generated by benchmarks/make_readme_perf.py from benchmarks/results/*/results.json -->", ""]
    for kind, title, command in MACHINES:
        path = results_dir / kind / "results.json"
        if not path.is_file():
            out += [f"### {title}", "", f"Not measured yet: no `{os.path.relpath(path, link_root)}`"
                    + (" (no NVIDIA GPU was available when these results were made); run `benchmarks/gpu.sh` on one."
                       if kind == "gpu" else f"; run `{command}`."), ""]
            continue
        out += section(json.loads(path.read_text()), kind, title, command, path.parent, link_root)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("-o", "--out", type=Path, default=None, help="default: RESULTS/PERFORMANCE.md")
    ap.add_argument("--link-root", type=Path, default=ROOT, help="links are relative to this (README's folder)")
    args = ap.parse_args(argv)
    out = args.out or args.results / "PERFORMANCE.md"
    text = build(args.results.resolve(), args.link_root.resolve())
    if str(ROOT) not in sys.path:  # a plain checkout: no install puts cyclegan_deploy on the path
        sys.path.insert(0, str(ROOT))
    from cyclegan_deploy.artifacts import write_text

    write_text(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
