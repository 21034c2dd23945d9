"""Latency/throughput harness behind `cgdeploy bench`: every requested backend, size and batch on one model.

How it measures (results.md repeats it so the numbers carry their method):
- One seeded, image-like input per (size, batch); the same input for every backend. Sizes are raised to the
  model's smallest input and rounded up to its multiple (run_height/run_width) as the runtime pads frames.
- `warmup` untimed calls (the first, which includes lazy compilation/engine builds, is reported as
  first_call_ms), then timed calls until `repeats` samples or `max_seconds` (at least MIN_REPEATS samples).
- Wall clock, time.perf_counter around `backend(x)`. Every backend's __call__ returns host numpy, so a GPU
  call is synchronous and includes the host<->device copies (the cost the video pipeline pays). GPU backends
  that can (torch CUDA, TensorRT) also time the model itself with CUDA events on their stream (device_ms:
  no copies, no Python), reported beside the wall clock; ONNX Runtime's CUDA EP exposes no stream for it.
- fps = batch / p50; speedup = fps / fps of the baseline spec at the same size (same batch, else batch 1).
- Throughput: a backend with an async queue (max_inflight > 1: OpenVINO in THROUGHPUT mode, the -tput specs)
  is also fed through run_many with N batches in flight (N = --inflight, else its max_inflight): throughput_fps,
  and throughput_speedup against the baseline's latency fps. Backends without one are "sync": left blank,
  their fps is their throughput.
- % of peak: GFLOP/s (2 x MACs / p50) over the peak (GEMM/conv) measured on this machine through the case's library
  at its precision (bench/peaks.py; cfg.peaks), else the best measured at that precision, named in
  peak_source; GPU cases over the datasheet table. No cfg.peaks: no % of peak for CPU cases.
- Parity: frame 0 of every output against the reference spec (torch fp32 with a checkpoint, else
  onnxruntime cpu) on the same frame, on the card's output range. Statistics, MACs and peaks: see metrics.
A spec that cannot load or run stays in the results with status "unavailable: ..." or "failed: ...".
Before anything is allocated, limits.preflight refuses cases whose memory estimate exceeds what is available
and a --video clip that does not decode.
The artifacts come from the caller (BenchConfig): this module never exports a graph or builds an engine.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

import numpy as np

from cyclegan_deploy.bench.cases import MIN_REPEATS, SCHEMA, BenchConfig, CaseResult, Spec, parse_spec, status_of
from cyclegan_deploy.bench.limits import preflight, run_size
from cyclegan_deploy.bench.metrics import (
    count_macs_onnx,
    count_macs_torch,
    gpu_peak_gflops,
    latency_stats,
    machine_info,
    make_input,
    parity_record,
)
from cyclegan_deploy.bench.peaks import best_by_precision, peak_for
from cyclegan_deploy.bench.timing import (
    BenchBackend,
    Loader,
    Log,
    check_device,
    default_loader,
    timed,
    timed_throughput,
)
from cyclegan_deploy.bench.timing import run_size as backend_run_size
from cyclegan_deploy.errors import CgDeployError, ConfigError, ModelError
from cyclegan_deploy.metadata import ModelMeta, canonical_precision
from cyclegan_deploy.model_checks import all_finite


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Model:
    """Per-run-size caches shared by all cases: inputs, MAC counts, reference outputs."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.inputs: dict[tuple[int, int, int], np.ndarray] = {}
        self.macs: dict[tuple[int, int], dict[str, Any]] = {}
        self.reference: dict[tuple[int, int], np.ndarray] = {}  # run size -> frame 0 of the output, (C, sH, sW)
        self.reference_status = "not run"
        self.meta: dict[str, Any] | None = None

    def input(self, b: int, h: int, w: int, meta: ModelMeta) -> np.ndarray:
        """Seeded frames in the card's input range (one model per run: every backend's card says the same)."""
        if (b, h, w) not in self.inputs:
            self.inputs[(b, h, w)] = make_input(b, h, w, self.cfg.seed, meta.input_range)
        return self.inputs[(b, h, w)]

    def count(self, h: int, w: int) -> dict[str, Any]:
        """From the ONNX graph, else (no graph, or shapes it cannot infer statically) from the checkpoint."""
        if (h, w) in self.macs:
            return self.macs[(h, w)]
        onnx, checkpoint = self.cfg.onnx or self.cfg.onnx_int8, self.cfg.checkpoint  # a QDQ graph counts the same
        found: dict[str, Any] = {"macs": None, "macs_dense": None, "from": "unknown: needs --model or --checkpoint"}
        if onnx is not None:
            try:
                found = {**count_macs_onnx(onnx, h, w), "from": "onnx"}
            except Exception as e:
                found["from"] = status_of(e)
        if found["macs"] is None and checkpoint is not None:
            try:
                from cyclegan_deploy.train.checkpoints import load_generator  # torch only when counting needs it

                model, _ = load_generator(checkpoint)
                found = {**count_macs_torch(model, h, w), "from": "torch"}
            except Exception as e:
                found["from"] += f"; torch: {status_of(e)}"
        if found["macs"]:  # super-resolution models write scale^2 pixels per input pixel: compare per output pixel
            scale = self._scale
            found["output"] = f"{scale * h}x{scale * w}"
            found["macs_per_output_px"] = round(found["macs"] / (scale * scale * h * w))
        self.macs[(h, w)] = found
        return found

    @functools.cached_property
    def _scale(self) -> int:
        """The card's output scale (1 for CycleGAN/pix2pix), read once from whichever model file the run has."""
        from cyclegan_deploy.artifacts import read_card

        for path in (self.cfg.onnx, self.cfg.onnx_int8, self.cfg.checkpoint):
            if path is not None:
                try:
                    return int(read_card(path).scale)
                except Exception:  # noqa: BLE001 - an unreadable card was reported by the backends already
                    continue
        return 1

    def compute_reference(self, loader: Loader, name: str, sizes: list[tuple[int, int]], log: Log) -> None:
        try:
            spec = parse_spec(name)
            backend = loader(self.cfg.artifact(spec.artifact), spec, self.cfg.threads)
            try:
                for h, w in sizes:
                    rh, rw = backend_run_size(backend, h, w)
                    if (rh, rw) not in self.reference:
                        log(f"reference {name} at {rh}x{rw}")
                        out = np.asarray(backend(self.input(1, rh, rw, backend.meta)))[0]
                        if not all_finite(out):  # parity against NaN would "measure" nothing
                            raise ModelError(f"{self.cfg.artifact(spec.artifact)}: the reference ({name}) returned "
                                             "NaN/Inf values; the model is broken (damaged weights or overflow)")
                        self.reference[(rh, rw)] = out
            finally:
                backend.close()
            self.reference_status = f"ok: {getattr(backend, 'name', name)}"
        except Exception as e:
            self.reference_status = status_of(e)
            log(f"reference {name}: {self.reference_status}")


def _run_spec(cfg: BenchConfig, spec: Spec, cases: list[tuple[int, int, int]], model: _Model,
              machine: dict[str, Any], loader: Loader, log: Log) -> list[CaseResult]:
    records = [CaseResult.planned(spec, h, w, b) for h, w, b in cases]
    try:
        path = cfg.artifact(spec.artifact)
        t = time.perf_counter()
        backend = loader(path, spec, cfg.threads)
        load_s = time.perf_counter() - t
    except Exception as e:
        for r in records:
            r.status = status_of(e)
        log(f"{spec.name}: {records[0].status}")
        return records
    try:
        check_device(spec, backend)
        if model.meta is None and getattr(backend, "meta", None) is not None:
            model.meta = {k: v for k, v in vars(backend.meta).items() if k != "extra"}
        for r in records:
            _run_one(cfg, spec, backend, r, load_s, model, machine, log)
    except Exception as e:
        for r in records:
            if r.status == "not run":
                r.status = status_of(e)
    finally:
        backend.close()
    return records


def _run_one(cfg: BenchConfig, spec: Spec, backend: BenchBackend, r: CaseResult, load_s: float, model: _Model,
             machine: dict[str, Any], log: Log) -> None:
    rh, rw = backend_run_size(backend, r.height, r.width)
    b = r.batch
    r.backend_name, r.run_height, r.run_width, r.load_s = backend.name, rh, rw, round(load_s, 3)
    r.precision = str(getattr(backend, "precision", None) or spec.precision)
    log(f"{spec.name} {rh}x{rw} batch {b}")
    try:
        device: list[float] = []
        y, first_ms, samples, truncated = timed(backend, model.input(b, rh, rw, backend.meta), cfg, device)
    except Exception as e:
        r.status = status_of(e)
        log(f"  {r.status}")
        return
    stats = latency_stats(samples)
    threads = getattr(backend, "threads", None)
    if threads is None and spec.backend.startswith("torch") and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()  # a torch backend already imported it; never import here
    r.status, r.first_call_ms, r.samples_ms, r.stats_ms, r.budget_truncated = "ok", first_ms, samples, stats, truncated
    r.ms_per_frame, r.fps, r.threads = stats["p50"] / b, b * 1e3 / stats["p50"], threads or cfg.threads
    r.device_ms = latency_stats(device) if device else None
    macs = model.count(rh, rw)["macs"]
    if macs:
        r.macs_per_frame, r.gflops = macs, 2 * macs * b / (stats["p50"] * 1e-3) / 1e9
        r.peak_gflops, r.peak_source = case_peak(cfg, machine, spec, r.precision)
        r.pct_peak = 100 * r.gflops / r.peak_gflops if r.peak_gflops else None
    ref = model.reference.get((rh, rw))
    if ref is not None:
        fields = parity_record(ref, np.asarray(y)[0], backend.meta.output_range)
        r.max_abs, r.psnr_db, r.max_u8 = fields["max_abs"], fields["psnr_db"], fields["max_u8"]
    _throughput(cfg, backend, r, model.input(b, rh, rw, backend.meta), log)


def case_peak(cfg: BenchConfig, machine: dict[str, Any], spec: Spec, precision: str) -> tuple[float | None, str | None]:
    """(peak G(FL)OP/s, what it is) for a case: the measured peak of its library and precision on a CPU
    (bench.peaks.peak_for), the datasheet table on a GPU; (None, None) when unknown."""
    if spec.device == "cuda":
        value = gpu_peak_gflops(machine, precision)
        return value, ("GPU datasheet table (metrics.GPU_PEAKS)" if value else None)
    try:
        canon = canonical_precision(precision)
    except CgDeployError:  # "auto"/"engine" that the backend did not resolve
        return None, None
    found = peak_for(cfg.peaks, spec.backend.split("-")[0], canon)
    return found if found else (None, None)


def _throughput(cfg: BenchConfig, backend: BenchBackend, r: CaseResult, x: np.ndarray, log: Log) -> None:
    """Frames/s with N batches in flight for a backend with an async queue; "sync" (blank) for the others."""
    most = int(getattr(backend, "max_inflight", 1) or 1)
    if most <= 1 or not hasattr(backend, "run_many"):
        r.throughput_mode, r.throughput_inflight = "sync", 1
        return
    n = cfg.inflight or most
    log(f"  throughput with {n} in flight")
    try:
        r.throughput_fps = timed_throughput(backend, x, n, cfg)
        r.throughput_mode, r.throughput_inflight = "async", n
    except Exception as e:  # the latency numbers stand; the throughput cell says why it is empty
        r.throughput_mode = status_of(e)
        log(f"  throughput: {r.throughput_mode}")


def _speedups(records: list[CaseResult], baseline: str) -> None:
    ok = {(r.backend, r.size, r.batch): r for r in records if r.ok}
    for r in ok.values():
        base = ok.get((baseline, r.size, r.batch)) or ok.get((baseline, r.size, 1))
        if base is not None and r.fps is not None and base.fps:
            r.speedup = r.fps / base.fps
            if r.throughput_fps is not None:
                r.throughput_speedup = r.throughput_fps / base.fps


def run_bench(cfg: BenchConfig, loader: Loader | None = None, log: Log = _stderr) -> dict[str, Any]:
    """Run every (spec, size, batch) case; a spec that cannot load or run is reported with its status."""
    loader = loader or default_loader
    plan = cfg.plan()
    if not plan:
        raise ConfigError("nothing to benchmark: give at least one backend, size and batch size")
    specs = {name: parse_spec(name) for name in dict.fromkeys(c[0] for c in plan)}  # unknown names fail fast
    for _, h, w, b in plan:
        if h < 2 or w < 2 or b < 1:
            raise ConfigError(f"bad case {h}x{w} batch {b}: sizes must be at least 2x2 and batches at least 1")
    checked = preflight(cfg, plan)  # memory and the clip: refused before any allocation
    machine = machine_info()
    # the machine's peak per precision: the best measured here (cfg.peaks), in place of a per-cycle guess
    machine["cpu"]["peak_gflops"] = best_by_precision(cfg.peaks)
    model = _Model(cfg)
    reference = cfg.reference_spec
    model.compute_reference(loader, reference, sorted({(h, w) for _, h, w, _ in plan}), log)
    records: list[CaseResult] = []
    for name, spec in specs.items():
        cases = [(h, w, b) for s, h, w, b in plan if s == name]
        records += _run_spec(cfg, spec, cases, model, machine, loader, log)
    for h, w in dict.fromkeys((h, w) for _, h, w, _ in plan):  # MACs for every size, even if no case ran
        model.count(*run_size(checked["card"], h, w))
    baseline = cfg.baseline or reference
    _speedups(records, baseline)
    results: dict[str, Any] = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
        "machine": machine,
        "settings": {"warmup": cfg.warmup, "repeats": cfg.repeats, "max_seconds": cfg.max_seconds,
                     "min_repeats": MIN_REPEATS, "threads": cfg.threads, "seed": cfg.seed,
                     "percentiles": "numpy.percentile method=linear", "timer": "time.perf_counter per call; "
                     "host numpy in/out, so GPU calls are synchronous and include the copies"},
        "model": {"artifacts": {k: str(v) if v else None for k, v in cfg.artifact_paths().items()},
                  "card": model.meta, "macs": {f"{h}x{w}": v for (h, w), v in model.macs.items()}},
        "reference": {"spec": reference, "status": model.reference_status}, "baseline": baseline,
        "cases": [r.as_dict() for r in records], "video": None, "notes": [*cfg.notes, *checked["notes"]],
        "peaks": cfg.peaks,
    }
    if cfg.video is not None:
        results["video"] = run_video(cfg, records, loader, log)
    return results


class _Uint8Call:
    """A uint8-I/O backend's call as the video pipeline makes it (uint8 frames in and out, pre/post-processing
    on its device), shaped like a float call for timed(): the output is viewed as (N, C, H, W)."""

    def __init__(self, backend: Any, x: np.ndarray) -> None:
        from cyclegan_deploy.frames import from_model

        self.backend, self.meta = backend, backend.meta
        self.frames = from_model(x, backend.meta.input_range)  # the uint8 frames the batch was made from

    def __call__(self, _x: np.ndarray) -> np.ndarray:
        out, _ = self.backend.run_uint8(self.frames)
        return np.asarray(out).transpose(0, 3, 1, 2)


def run_video(cfg: BenchConfig, records: list[CaseResult], loader: Loader, log: Log) -> dict[str, Any]:
    """Whole-pipeline fps (decode -> model -> encode, cyclegan_deploy.video) vs inference-only fps of the
    same backend, batch and frame size measured in the same run, plus the per-stage busy times."""
    assert cfg.video is not None  # run_bench calls this only with a clip
    batch = cfg.batches[0]
    ok = [r for r in records if r.ok and r.batch == batch]
    # fastest = highest GFLOP/s, which compares cases measured at different sizes
    name = cfg.video_backend or (max(ok, key=lambda r: r.gflops or 0.0).backend if ok
                                 else cfg.reference or "onnxruntime")
    result: dict[str, Any] = {"backend": name, "video": str(cfg.video), "batch": batch, "status": "not run"}
    try:
        from cyclegan_deploy.video import VideoOptions, probe_video, translate_video

        spec = parse_spec(name)
        info = probe_video(cfg.video)
        backend = loader(cfg.artifact(spec.artifact), spec, cfg.threads)
        try:
            check_device(spec, backend)
            rh, rw = backend_run_size(backend, *info.display_size)
            log(f"video: inference-only {spec.name} {rh}x{rw} batch {batch}")
            x = make_input(batch, rh, rw, cfg.seed, backend.meta.input_range)
            # a uint8-I/O backend: the pipeline calls run_uint8, so inference-only is timed on that call too
            io = "uint8" if getattr(backend, "uint8_io", False) else "float32"
            _, _, samples, _ = timed(_Uint8Call(backend, x) if io == "uint8" else backend, x, cfg)
            stats = latency_stats(samples)
            # the same batches in flight on both sides: the pipeline keeps the backend's own count (OpenVINO
            # THROUGHPUT mode: several), so inference-only is then measured through run_many too
            # (the uint8 path runs one batch at a time)
            inflight = 1 if io == "uint8" else cfg.inflight or int(getattr(backend, "max_inflight", 1) or 1)
            tput = timed_throughput(backend, x, inflight, cfg) if inflight > 1 else None
            log(f"video: end-to-end {cfg.video}")
            dst = cfg.out_dir / "video_out.mp4"
            report = translate_video(cfg.video, dst, backend,  # type: ignore[arg-type]
                                     VideoOptions(batch=batch, progress=False, inflight=inflight))
        finally:
            backend.close()
        infer_fps = tput or batch * 1e3 / stats["p50"]
        busy_infer = report.busy_s.get("inference", 0.0)
        result.update(status="ok", backend_name=report.backend, frames=report.frames, size=list(report.size),
                      run_size=[rh, rw], output=str(dst), wall_s=report.wall_s, end_to_end_fps=report.fps,
                      inference_only_fps=infer_fps, inference_only_ms=stats, inflight=inflight, inference_io=io,
                      pipeline_inference_fps=report.frames / busy_infer if busy_infer else None,
                      end_to_end_vs_inference=report.fps / infer_fps, stage_busy_s=report.busy_s,
                      warnings=report.warnings)
    except Exception as e:
        result["status"] = status_of(e)
    log(f"video: {result['status']}")
    return result
