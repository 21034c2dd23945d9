#!/usr/bin/env python3
"""`cgdeploy serve` under load: throughput and p50/p99 latency at 1, 4 and 16 concurrent clients, with and without
batching, every response checked against the model's own output for its input.

    python benchmarks/serve_load.py                    # seeded ResNet-9 ngf 64 (ONNX Runtime CPU), 256x256 PNGs
    python benchmarks/serve_load.py --model g_AtoB.onnx --size 512x512
    python benchmarks/serve_load.py --tiny -o /tmp/serve_load   # proves it runs (seconds), numbers meaningless

Loopback only, bounded: each cell sends a fixed number of requests (max(--min-requests, 3 x clients)) and stops
issuing after --cell-seconds. For each mode the server is started in-process (scale.serve.start_server: a local
Ray instance, one replica with all the CPUs Ray has), warmed up, then driven by client threads (http.client, one
connection per request as a plain client would). The expected outputs come from a direct backend call (batch 1,
the server's pre/post-processing) made before the server starts; a response counts as right when its PNG
decodes to the expected size and within 1 uint8 level of it (batched and single calls may round differently).
Anything but 200 counts as dropped. Writes OUT/results.json and OUT/summary.md (machine, lscpu, versions, threads).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, bootstrap, build_generator, export_onnx_any, lscpu_summary  # noqa: E402

CONCURRENCY = (1, 4, 16)
MODES = {"batching": 8, "no batching": 1}  # mode -> --max-batch
SHARED = 0.05  # a cell during which other processes used more of the CPUs than this is measured again


@dataclass
class Cell:
    mode: str
    clients: int
    requests: int = 0
    ok: int = 0
    wrong: int = 0
    dropped: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    max_level_diff: int = 0
    batches: dict[str, int] = field(default_factory=dict)  # server's batch-size histogram for this cell
    loadavg_1m: float = 0.0  # after the cell
    others_cpu: float = 0.0  # share of all cores that processes outside this benchmark's tree used during the cell
    attempts: int = 1
    errors: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        import numpy as np

        lat = np.asarray(self.latencies_ms or [float("nan")])
        n_batches = sum(self.batches.values())
        return {"mode": self.mode, "clients": self.clients, "requests": self.requests, "ok": self.ok,
                "wrong": self.wrong, "dropped": self.dropped, "seconds": round(self.seconds, 2),
                "throughput_rps": round(self.ok / self.seconds, 3) if self.seconds else 0.0,
                "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
                "mean_batch": round(sum(int(k) * v for k, v in self.batches.items()) / n_batches, 2)
                if n_batches else None, "batches": self.batches, "max_level_diff": self.max_level_diff,
                "loadavg_1m_after": self.loadavg_1m, "others_cpu": round(self.others_cpu, 3),
                "attempts": self.attempts, "errors": self.errors[:5]}


def inputs(n: int, size: tuple[int, int], seed: int = 0) -> list[Any]:
    """n distinct smooth images with texture (PNG sizes like photos', not like noise)."""
    import numpy as np

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = rng.uniform(0.01, 0.08, 3)
        ph = rng.uniform(0, 6.3, 3)
        img = np.stack([np.sin(xx * f[c] + yy * f[(c + 1) % 3] + ph[c]) for c in range(3)], axis=-1) * 100 + 128
        img += rng.normal(0, 6, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def png(rgb: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def expected_outputs(artifact: Path, images: list[Any], threads: int) -> list[Any]:
    """The model's output for each image from one direct backend call each (the server's pre/post-processing)."""
    import numpy as np

    from cyclegan_deploy.backends import load_backend
    from cyclegan_deploy.frames import crop, from_model, model_size, pad_to_model, to_model

    with load_backend(artifact, backend="onnxruntime", device="cpu", threads=threads) as be:
        meta, out = be.meta, []
        for rgb in images:
            h, w = rgb.shape[:2]
            y = be(pad_to_model(to_model(rgb, meta.input_range), model_size(h, w, meta)))
            out.append(from_model(crop(y, h, w, meta.scale), meta.output_range)[0])
    return [np.ascontiguousarray(o) for o in out]


def post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/translate", body=body, headers={"Content-Type": "image/png"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return dict(json.loads(conn.getresponse().read()))
    finally:
        conn.close()


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of `root` and its descendants: this process, and Ray's GCS, raylet, proxy and
    replica, which the driver started."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:  # exited meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces; fields after it: state, ppid, ...
        children.setdefault(int(fields[1]), []).append(int(name))
        ticks[int(name)] = int(fields[11]) + int(fields[12])
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def busy_cpu_s() -> float:
    """CPU seconds all processes on the machine have used (/proc/stat, all but idle and iowait)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def run_cell(cell: Cell, port: int, bodies: list[bytes], want: list[Any], n: int, limit_s: float) -> None:
    """n requests from cell.clients threads (each takes the next index), none issued after limit_s; measures
    the CPU other processes took meanwhile (the machine may be shared)."""
    import numpy as np
    from PIL import Image

    lock, counter = threading.Lock(), iter(range(n))
    before = get_json(port, "/stats")["batches"]
    busy0, ours0 = busy_cpu_s(), tree_cpu_s(os.getpid())
    start = time.perf_counter()

    def client() -> None:
        while time.perf_counter() - start < limit_s:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                status, body = post(port, bodies[i % len(bodies)])
            except OSError as e:
                status, body = 0, str(e).encode()
            ms = (time.perf_counter() - t) * 1000
            with lock:
                cell.requests += 1
                if status != 200:
                    cell.dropped += 1
                    cell.errors.append(f"{status}: {body[:120]!r}")
                    continue
            got = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
            ref = want[i % len(want)]
            diff = int(np.abs(got.astype(np.int16) - ref).max()) if got.shape == ref.shape else 255
            with lock:
                cell.max_level_diff = max(cell.max_level_diff, diff)
                if diff <= 1:
                    cell.ok += 1
                    cell.latencies_ms.append(ms)
                else:
                    cell.wrong += 1

    threads = [threading.Thread(target=client) for _ in range(cell.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    cell.seconds = time.perf_counter() - start
    others = (busy_cpu_s() - busy0) - (tree_cpu_s(os.getpid()) - ours0)
    cell.others_cpu = max(0.0, others) / (cell.seconds * (os.cpu_count() or 1))
    cell.loadavg_1m = round(os.getloadavg()[0], 2)
    after = get_json(port, "/stats")["batches"]
    cell.batches = {k: v - before.get(k, 0) for k, v in sorted(after.items(), key=lambda kv: int(kv[0]))
                    if v - before.get(k, 0)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="ONNX model to serve (default: the seeded ResNet-9 ngf 64, exported)")
    p.add_argument("--tiny", action="store_true", help="2-block ngf-8 model, 64x64 images: proves the script runs")
    p.add_argument("--size", default=None, help="HEIGHTxWIDTH of the request images (default 256x256; --tiny 64x64)")
    p.add_argument("--images", type=int, default=8, help="distinct request images, cycled")
    p.add_argument("--min-requests", type=int, default=12, help="requests per cell at least (3 x clients if more)")
    p.add_argument("--cell-seconds", type=float, default=60.0, help="no request issued after this, per cell")
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=None, help="backend threads (default: the server's default)")
    p.add_argument("--retries", type=int, default=2, help=f"re-measure a cell while other processes used more than "
                                                          f"{SHARED:.0%} of the CPUs during it (this many times)")
    p.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve")
    args = p.parse_args(argv)

    found = bootstrap()
    from cyclegan_deploy.artifacts import write_json, write_text
    from cyclegan_deploy.bench.metrics import machine_info
    from cyclegan_deploy.frames import parse_size
    from cyclegan_deploy.machine import package_version
    from cyclegan_deploy.scale.serve import ServeOptions, start_server, stop_server

    size = parse_size(args.size or ("64x64" if args.tiny else "256x256"), "--size")
    notes: list[str] = []
    cells: list[Cell] = []
    servers: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        artifact = args.model
        if artifact is None:
            model, meta = build_generator(args.tiny)
            artifact = export_onnx_any(model, meta, Path(tmp) / "model.onnx", notes)
            del model
        images = inputs(args.images, size)
        bodies = [png(im) for im in images]
        t = time.perf_counter()
        want = expected_outputs(artifact, images, args.threads or 2)
        notes.append(f"expected outputs: {len(images)} direct backend calls in {time.perf_counter() - t:.1f}s")
        for mode, max_batch in MODES.items():
            port = free_port()
            opts = ServeOptions(port=port, max_batch=max_batch, batch_wait_ms=args.batch_wait_ms,
                                threads=args.threads, backend="onnxruntime", device="cpu")
            t = time.perf_counter()
            server = start_server(artifact, opts)
            try:
                started = time.perf_counter() - t
                for body in bodies[:2]:  # warm-up: ORT's first runs allocate and pick kernels
                    post(port, body)
                servers[mode] = {"backend": server.backend, "threads": server.threads, "replicas": server.replicas,
                                 "max_batch": max_batch, "max_ongoing": opts.ongoing, "max_queued": opts.max_queued,
                                 "batch_wait_ms": args.batch_wait_ms, "start_s": round(started, 1),
                                 "loadavg_1m_before": round(os.getloadavg()[0], 2)}
                for clients in CONCURRENCY:
                    for attempt in range(1, args.retries + 2):  # again when other work took the cores meanwhile
                        cell = Cell(mode, clients, attempts=attempt)
                        run_cell(cell, port, bodies, want, max(args.min_requests, 3 * clients), args.cell_seconds)
                        if cell.others_cpu <= SHARED or attempt > args.retries:
                            break
                        print(f"{mode} c={clients}: other processes took {cell.others_cpu:.0%} of the CPUs; "
                              "measuring again", flush=True)
                    cells.append(cell)
                    r = cell.row()
                    print(f"{mode:12s} c={clients:<3d} {r['throughput_rps']:.2f} req/s  p50 {r['p50_ms']:.0f} ms  "
                          f"p99 {r['p99_ms']:.0f} ms  ok {cell.ok}/{cell.requests}  mean batch {r['mean_batch']}",
                          flush=True)
            finally:
                stop_server()

    info = machine_info()
    info["versions"].update({d: package_version(d) for d in ("ray", "pillow", "starlette", "uvicorn")})
    result: dict[str, Any] = {"benchmark": "serve_load", "model": str(artifact) if args.model else
              ("seeded resnet_2blocks ngf 8" if args.tiny else "seeded resnet_9blocks ngf 64") + " (ONNX fp32)",
              "image_size": f"{size[0]}x{size[1]}", "format": "PNG", "servers": servers,
              "cells": [c.row() for c in cells], "machine": info, "lscpu": lscpu_summary(), "import": found,
              "notes": notes}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", result)
    write_text(args.out / "summary.md", summary_md(result))
    print(table(result["cells"]))
    bad = sum(c["wrong"] + c["dropped"] for c in result["cells"])
    print(f"wrote {args.out}/results.json and summary.md; {bad} wrong or dropped")
    return 1 if bad else 0


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| mode | clients | requests | ok | wrong | dropped | req/s | p50 ms | p99 ms | mean batch | others' CPU "
             "|",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['ok']} | {r['wrong']} | {r['dropped']} | "
              f"{r['throughput_rps']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_batch'] or '-'} | "
              f"{r['others_cpu']:.0%} |" for r in rows]
    return "\n".join(lines)


def summary_md(r: dict[str, Any]) -> str:
    m, cpu = r["machine"], r["machine"]["cpu"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lscpu = "; ".join(f"{k}: {v}" for k, v in r["lscpu"].items())
    servers = "; ".join(f"{mode}: {s['backend']}, {s['replicas']} replica x {s['threads']} threads, "
                        + (f"max batch {s['max_batch']} ({s['batch_wait_ms']:g} ms wait)" if s["max_batch"] > 1
                           else "--no-batching")
                        + f", max ongoing {s['max_ongoing']}" for mode, s in r["servers"].items())
    rps = {(c["mode"], c["clients"]): c["throughput_rps"] for c in r["cells"]}
    ratios = ", ".join(f"{n} client(s) {rps[('batching', n)] / rps[('no batching', n)]:.2f}x" for n in CONCURRENCY
                       if rps.get(("no batching", n)) and ("batching", n) in rps)
    return "\n".join([
        "# `cgdeploy serve` under load (Ray Serve, loopback)", "",
        f"- Model: {r['model']}; requests: {r['image_size']} {r['format']} images, every response checked against "
        "a direct backend call (within 1 uint8 level)",
        f"- Servers: {servers}",
        f"- CPU: {cpu['model']}, {cpu['physical_cores']} physical / {cpu['logical_cpus']} logical; "
        f"flags {', '.join(cpu['flags']) or 'none of AVX2/AVX-512/AMX'}",
        f"- lscpu: {lscpu}",
        f"- Versions: {versions}", "",
        table(r["cells"]), "",
        f"Throughput with batching / without: {ratios or 'n/a'}.", "",
        "Latency is the client's (connect, upload, queue, batch wait, model, encode, download); p99 of a cell with "
        "fewer than 100 requests is close to its slowest request. The clients run on the same cores as the server. "
        f"Others' CPU: the share of the cores that processes outside the benchmark (server included) used during "
        f"the cell, from /proc; a cell above {SHARED:.0%} was measured again (up to --retries times).",
        "", "Notes:", *[f"- {n}" for n in r["notes"]], ""])


if __name__ == "__main__":
    sys.exit(main())
