"""Outputs of `cgdeploy bench`: results.json (full samples + environment), results.csv, results.md and
latency.png (matplotlib Agg, skipped with a note when matplotlib is missing), written as one set through
cyclegan_deploy.artifacts' atomic writer; the rows of the printed table (table.py prints it).

Everything here reads the results dict run_bench returns (cases as CaseResult.as_dict() rows): the scripts
add their own keys to it and the files must stay readable by make_readme_perf.py without this package.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Any, BinaryIO

from cyclegan_deploy.artifacts import atomic_output
from cyclegan_deploy.artifacts import json_safe as strict_json  # the one inf/NaN -> null rule of write_json
from cyclegan_deploy.errors import CgDeployError, OutputError
from cyclegan_deploy.outputs import os_error_message

CSV_FIELDS = ("backend", "backend_name", "device", "precision", "size", "run_height", "run_width", "batch",
              "status", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "n", "ms_per_frame", "fps",
              "speedup", "macs_per_frame", "gflops", "peak_gflops", "pct_peak", "psnr_db", "max_abs", "max_u8",
              "first_call_ms", "load_s", "budget_truncated", "peak_source", "throughput_fps", "throughput_inflight",
              "throughput_mode", "throughput_speedup", "device_p50_ms")
TABLE_HEAD = ("backend", "size", "batch", "status", "p50 ms", "p90 ms", "p99 ms", "fps", "speedup", "tput fps",
              "GFLOP/s", "% peak", "PSNR dB", "max abs")


def _row(r: dict[str, Any]) -> dict[str, Any]:
    stats = r.get("stats_ms") or {}
    row = {k: r.get(k) for k in CSV_FIELDS}
    row.update({f"{k}_ms": stats.get(k) for k in ("p50", "p90", "p99", "mean", "min")}, n=stats.get("n"),
               device_p50_ms=(r.get("device_ms") or {}).get("p50"))
    return row


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def _sig(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def size_label(r: dict[str, Any]) -> str:
    """The size as asked, and the size that ran when padding to the model's multiple changed it."""
    ran = (r.get("run_height"), r.get("run_width"))
    if ran[0] is None or ran == (r.get("height"), r.get("width")):
        return str(r["size"])
    return f"{r['size']} (run {ran[0]}x{ran[1]})"


def case_label(r: dict[str, Any]) -> str:
    """A row's name: what the backend reports running (the spec as asked when it did not run), plus what that
    name leaves out: -int8 for an int8 graph on a runtime whose name has no precision (onnxruntime-cpu-int8),
    -tput for a THROUGHPUT-mode spec, and the spec's options (openvino-int8:space_to_depth=false), so no two
    specs share a row name."""
    if r["status"] != "ok" or not r.get("backend_name"):
        return str(r["backend"])
    name = str(r["backend_name"])
    if r.get("precision") == "int8" and "int8" not in name:
        name += "-int8"
    spec, _, options = str(r["backend"]).partition(":")
    return name + ("-tput" if spec.endswith("-tput") else "") + (f":{options}" if options else "")


def _tput(r: dict[str, Any]) -> str:
    """'41.20 (4)': frames/s with 4 batches in flight; '-' for sync backends; the error's kind if it broke."""
    mode = r.get("throughput_mode") or ""
    if r.get("throughput_fps") is not None:
        return f"{r['throughput_fps']:.2f} ({r.get('throughput_inflight')})"
    return mode.split(":")[0] if ":" in mode else "-"


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in results["cases"]:
        s = r.get("stats_ms") or {}
        psnr = "inf" if r.get("max_abs") == 0 else _fmt(r.get("psnr_db"))
        rows.append([case_label(r), size_label(r), str(r["batch"]), r["status"], _fmt(s.get("p50")), _fmt(s.get("p90")),
                     _fmt(s.get("p99")), _fmt(r.get("fps"), 2), _fmt(r.get("speedup"), 2) + ("x" if r.get("speedup")
                     else ""), _tput(r), _sig(r.get("gflops")), _fmt(r.get("pct_peak")), psnr,
                     _fmt(r.get("max_abs"), 6) if r.get("max_abs") is not None else "-"])
    return rows


def isa_line(results: dict[str, Any]) -> str:
    """What the CPU can do (/proc/cpuinfo flags): 'AVX2 yes, AVX-512 yes, ..., AMX no'."""
    found = results["machine"]["cpu"].get("isa") or {}
    return "CPU ISA: " + (", ".join(f"{k} {'yes' if v else 'no'}" for k, v in found.items()) or "unknown")


def ran_line(results: dict[str, Any]) -> str | None:
    """What each spec reported running (OpenVINO's from its runtime model): 'openvino-int8 -> openvino-int8 (int8)'."""
    seen = {r["backend"]: f"{r['backend']} -> {r.get('backend_name')} ({r['precision']})"
            for r in results["cases"] if r["status"] == "ok"}
    return "Ran (as each backend reports it): " + ", ".join(seen.values()) if seen else None


def _peak_used_for(results: dict[str, Any], name: str) -> str:
    used = dict.fromkeys(r["backend"] for r in results["cases"] if (r.get("peak_source") or "").startswith(name + " "))
    return ", ".join(used) or "-"


def peaks_lines(results: dict[str, Any]) -> list[str]:
    """The measured peaks as a markdown table (entry, rate, how, which cases divided by it)."""
    peaks = results.get("peaks")
    if not peaks:
        return ["No measured CPU peaks in this run (bench.peaks.machine_peaks() gives them): no % of peak on CPU."]
    lines = [f"Measured peaks (bench/peaks.py: a GEMM and a 3x3 conv per library and precision, the faster one's best "
             f"call; cached in "
             f"{peaks.get('cache', '?')}, measured {peaks.get('measured', '?')}; int8 in GOP/s):", "",
             "| peak | GFLOP/s | median | op | ran as | threads | status | % of peak for |", "|" + "---|" * 8]
    for name, e in peaks["entries"].items():
        ok = e["status"] == "ok"
        rate, median = (_fmt(e.get("gflops")), _fmt(e.get("median_gflops"))) if ok else ("-", "-")
        lines.append(f"| {name} | {rate} | {median} | {e.get('op', '-')} | {e.get('ran', '-')} | "
                     f"{e.get('threads', '-')} | {e['status'].replace('|', '/')} | {_peak_used_for(results, name)} |")
    return lines


def peaks_summary(results: dict[str, Any]) -> str:
    """One line for the terminal: 'Measured peaks G(FL)OP/s: torch-fp32 224, openvino-int8 661, ...'."""
    peaks = results.get("peaks")
    if not peaks:
        return "No measured CPU peaks: no % of peak on CPU."
    parts = [f"{n} {_sig(e['gflops'])}" if e["status"] == "ok" else f"{n} {e['status'].split(':')[0]}"
             for n, e in peaks["entries"].items()]
    return f"Measured peaks, G(FL)OP/s ({peaks.get('cache', '?')}): " + ", ".join(parts)


def to_markdown(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    cpu = m["cpu"]
    gpus = ", ".join(g["name"] for g in m["gpus"]) or "none"
    macs = "; ".join(f"{k}: {v['macs'] / 1e9:.2f} GMAC ({v['macs_dense'] / 1e9:.2f} dense-equivalent)"
                     + (f", {v['macs_per_output_px']} MAC per output pixel ({v['output']})"
                        if v.get("macs_per_output_px") else "")
                     if v.get("macs") else f"{k}: {v.get('from')}" for k, v in results["model"]["macs"].items())
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [
        "| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD),
        *("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(results)),
        "",
        f"- CPU: {cpu['model']}, {cpu['physical_cores']} physical cores ({cpu['logical_cpus']} logical) at "
        f"{cpu['ghz']} GHz ({cpu['ghz_source']}), flags {' '.join(cpu['flags']) or 'none'}. GPU: {gpus}.",
        f"- {isa_line(results)}.",
        f"- Model MACs per frame: {macs or 'unknown'}. 1 MAC = 2 FLOP; GFLOP/s uses the real count.",
        f"- Timing: {s['warmup']} warm-up calls, up to {s['repeats']} timed calls or {s['max_seconds']} s per case "
        f"(at least {s['min_repeats']}); {s['timer']}; {s['percentiles']}. fps = batch / p50.",
        "- tput fps: frames/s with N batches in flight (N in parentheses) through the backend's async queue "
        "(OpenVINO THROUGHPUT mode: the -tput specs), first batch in to last out; '-' for backends without one "
        "(sync: their fps is their throughput). throughput_speedup (results.json/.csv) is against the baseline's "
        "fps.",
        "- % peak: GFLOP/s over the peak measured here through the case's library at its precision (else the "
        "best measured at that precision, named so; GPU: datasheet table); per case in results.json peak_source.",
        f"- Parity: frame 0 vs reference `{results['reference']['spec']}` ({results['reference']['status']}); "
        f"PSNR on {_output_range(results)}. Speedup vs `{results['baseline']}` at the same size. Threads: "
        f"{s['threads'] or 'backend default'}.",
        f"- Versions: {versions}.",
    ]
    ran = ran_line(results)
    lines += [f"- {ran}."] if ran else []
    lines += [f"- {note}" for note in results.get("notes", [])]
    device = [f"{c['backend']} {c['size']} batch {c['batch']}: {c['device_ms']['p50']:.2f} ms "
              f"(wall {c['stats_ms']['p50']:.2f})" for c in results["cases"] if c.get("device_ms")]
    if device:
        lines.append("- Device time p50 (CUDA events around the model on its stream: no host copies, no Python), "
                     "wall clock in parentheses: " + "; ".join(device) + ".")
    lines += ["", *peaks_lines(results)]
    if results.get("video"):
        lines += ["", video_line(results["video"])]
    return "\n".join(lines) + "\n"


def _output_range(results: dict[str, Any]) -> str:
    """The range parity's PSNR is taken on: the card's output range ([-1,1] for CycleGAN/pix2pix)."""
    lo, hi = (results["model"].get("card") or {}).get("output_range") or (-1, 1)
    return f"[{float(lo):g},{float(hi):g}]"


def video_line(video: dict[str, Any]) -> str:
    if video["status"] != "ok":
        return f"Video end-to-end ({video['video']}): {video['status']}"
    return (f"Video end-to-end ({video['video']}, {video['backend_name']}, batch {video['batch']}, {video['frames']} "
            f"frames {video['size'][1]}x{video['size'][0]}): **{video['end_to_end_fps']:.2f} fps** end-to-end vs "
            f"{video['inference_only_fps']:.2f} fps inference-only ({100 * video['end_to_end_vs_inference']:.0f}%"
            + (", both with uint8 frames in and out, pre/post-processing on the device"
               if video.get("inference_io") == "uint8" else "") + "); "
            "busy seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in video["stage_busy_s"].items()) + ".")


def plot_latency(results: dict[str, Any], path: Path | BinaryIO) -> None:
    """Horizontal bars: p50 ms per frame by backend, one panel per size, log scale, p90 as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results["cases"] if r["status"] == "ok"]
    sizes = list(dict.fromkeys(r["size"] for r in ok))
    if not sizes:
        raise CgDeployError("no successful case to plot")
    bars = max(len([r for r in ok if r["size"] == s]) for s in sizes)
    # each panel needs room for its title and axis label (~1 inch) besides its bars, or tight_layout gives up
    fig, axes = plt.subplots(len(sizes), 1, figsize=(8, (1.0 + 0.38 * bars) * len(sizes)), squeeze=False)
    for ax, size in zip(axes[:, 0], sizes, strict=True):
        rows = sorted((r for r in ok if r["size"] == size), key=lambda r: -r["ms_per_frame"])
        labels = [f"{case_label(r)} b{r['batch']}" for r in rows]
        p50 = [r["ms_per_frame"] for r in rows]
        p90 = [r["stats_ms"]["p90"] / r["batch"] for r in rows]
        ax.barh(labels, p50, color="tab:blue")
        ax.plot(p90, labels, "k|", markersize=10, label="p90")
        for i, (v, tick) in enumerate(zip(p50, p90, strict=True)):
            ax.text(max(v, tick) * 1.08, i, f"{v:.4g}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(right=max(p90 + p50) * 3)  # room for the value labels
        ax.set_xlabel("ms per frame (log scale)", fontsize=8)
        ax.set_title(f"{size_label(rows[0])}: latency per frame (ms, p50 bar, p90 tick)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_outputs(results: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """results.json/.csv/.md and latency.png (skipped with a note when matplotlib is missing), as one set:
    every file is written to its temp name first and all are renamed only when all were written, so a full
    disk or a Ctrl-C leaves no partial set (nor temp files) beside an older complete one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bodies: dict[str, bytes] = {}
    png = io.BytesIO()
    try:
        plot_latency(results, png)
        bodies["latency.png"] = png.getvalue()
    except ImportError as e:
        results["notes"].append(f"latency.png not written: matplotlib is missing ({e})")
    except CgDeployError as e:
        results["notes"].append(f"latency.png not written: {e}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_row(r) for r in results["cases"])
    bodies["results.csv"] = buf.getvalue().encode()
    bodies["results.md"] = to_markdown(results).encode()
    # the round trip turns what scripts may add (Paths, numpy scalars) into text as before; then strict JSON
    # (inf/NaN as null), as artifacts.write_json writes it
    data = strict_json(json.loads(json.dumps(results, default=str)))
    bodies["results.json"] = (json.dumps(data, indent=2, allow_nan=False) + "\n").encode()
    name = ""
    try:
        with contextlib.ExitStack() as stack:  # leaving it renames every temp file onto its name
            for name, body in bodies.items():
                stack.enter_context(atomic_output(out_dir / name)).write_bytes(body)
    except OSError as e:  # name the file the user asked for, not its temp name
        final = e.filename2 if e.filename2 else out_dir / name
        raise OutputError(os_error_message(OSError(e.errno, e.strerror, str(final)))) from e
    if "latency.png" not in bodies:  # a --force run must not leave the previous run's plot beside its results
        (out_dir / "latency.png").unlink(missing_ok=True)
    return {name: str(out_dir / name) for name in bodies}
