"""Latency/throughput harness behind `cgdeploy bench`: every requested backend, size and batch on one model.

How it measures (results.md repeats it so the numbers carry their method):
- One seeded, image-like input per (size, batch); the same input for every backend. Sizes are rounded up
  to the model's multiple (run_height/run_width) as the runtime's padding would.
- `warmup` untimed calls (the first, which includes lazy compilation/engine builds, is reported as
  first_call_ms), then timed calls until `repeats` samples or `max_seconds` (at least MIN_REPEATS samples).
- Wall clock, time.perf_counter around `backend(x)`. Every backend's __call__ returns host numpy, so a GPU
  call is synchronous and includes the host<->device copies (the cost the video pipeline pays); CUDA events
  could not be taken through the Backend protocol and are not needed for that.
- fps = batch / p50; speedup = fps / fps of the baseline spec at the same size (same batch, else batch 1).
- Parity: frame 0 of every output against the reference spec (torch fp32 with a checkpoint, else
  onnxruntime cpu) on the same frame. Statistics, MACs and peaks: see bench_metrics.
A spec that cannot load or run stays in the results with status "unavailable: ..." or "failed: ...".
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.bench_metrics import (
    count_macs_onnx,
    count_macs_torch,
    latency_stats,
    machine_info,
    make_input,
    parity,
    peak_gflops,
)
from cyclegan_deploy.bench_report import print_table, write_outputs  # noqa: F401  (the harness's API)
from cyclegan_deploy.errors import BackendUnavailableError, CgDeployError, ConfigError

SCHEMA = "cgdeploy-bench/1"
MIN_REPEATS = 3  # a percentile from fewer samples says nothing; a 720p CPU case still ends near max_seconds


@dataclass(frozen=True)
class Spec:
    """A benchmark case's backend: what load_backend gets and which artifact it reads."""

    name: str
    backend: str  # load_backend's backend argument (with its -cpu/-cuda/-trt variant)
    artifact: str  # checkpoint | onnx | onnx-fp16 | engine
    device: str  # cpu | cuda: a cuda spec whose backend reports a CPU name is a failure, never a result
    precision: str
    options: dict[str, Any] = field(default_factory=dict)


_CL = {"channels_last": True}  # channels_last lets oneDNN/cuDNN pick their fast NHWC kernels
SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("torch", "torch-cpu", "checkpoint", "cpu", "fp32"),
    Spec("torch-bf16", "torch-cpu", "checkpoint", "cpu", "bf16", {"precision": "bf16", **_CL}),
    Spec("torch-compile", "torch-cpu", "checkpoint", "cpu", "fp32", {"compile": True}),
    Spec("torch-compile-bf16", "torch-cpu", "checkpoint", "cpu", "bf16",
         {"compile": True, "precision": "bf16", **_CL}),
    Spec("torch-cuda", "torch-cuda", "checkpoint", "cuda", "fp32"),
    Spec("torch-cuda-fp16", "torch-cuda", "checkpoint", "cuda", "fp16", {"precision": "fp16", **_CL}),
    Spec("torch-cuda-bf16", "torch-cuda", "checkpoint", "cuda", "bf16", {"precision": "bf16", **_CL}),
    Spec("torch-cuda-compile-fp16", "torch-cuda", "checkpoint", "cuda", "fp16",
         {"compile": True, "precision": "fp16", **_CL}),
    Spec("onnxruntime", "onnxruntime-cpu", "onnx", "cpu", "fp32"),
    Spec("onnxruntime-cuda", "onnxruntime-cuda", "onnx", "cuda", "fp32"),
    Spec("onnxruntime-cuda-fp16", "onnxruntime-cuda", "onnx-fp16", "cuda", "fp16"),
    Spec("onnxruntime-trt", "onnxruntime-trt", "onnx", "cuda", "fp32"),
    Spec("onnxruntime-trt-fp16", "onnxruntime-trt", "onnx-fp16", "cuda", "fp16"),
    Spec("openvino-f32", "openvino-cpu", "onnx", "cpu", "fp32", {"precision": "f32"}),
    Spec("openvino-bf16", "openvino-cpu", "onnx", "cpu", "bf16", {"precision": "bf16"}),
    Spec("tensorrt", "tensorrt", "engine", "cuda", "engine"),
)}
CPU_SPECS = ("torch", "torch-bf16", "onnxruntime", "openvino-f32", "openvino-bf16")
GPU_SPECS = ("torch-cuda", "torch-cuda-fp16", "onnxruntime-cuda", "onnxruntime-cuda-fp16", "tensorrt")


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_spec(text: str) -> Spec:
    """'openvino-bf16' or with extra backend options 'openvino-bf16:num_streams=2:performance_hint=THROUGHPUT'.

    Options after ':' go to the backend as keyword arguments (see the backend's constructor)."""
    name, *extra = text.strip().split(":")
    if name not in SPECS:
        raise ConfigError(f"unknown bench backend {name!r}; use one of {', '.join(SPECS)} "
                          "(options as name:key=value, e.g. openvino-bf16:num_streams=2)")
    options = dict(SPECS[name].options)
    for item in extra:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"bad option {item!r} in {text!r}; write key=value, e.g. torch:compile=true")
        options[key] = _value(value)
    precision = str(options.get("precision", SPECS[name].precision)).replace("f32", "fp32").replace("fpfp", "fp")
    return replace(SPECS[name], name=text.strip(), options=options, precision=precision)


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 2 or int(m[2]) < 2:
        raise ConfigError(f"bad size {text!r}; write HEIGHTxWIDTH, e.g. 256x256 or 720x1280")
    return int(m[1]), int(m[2])


# ---- the run ---------------------------------------------------------------------------------------------

@dataclass
class BenchConfig:
    out_dir: Path
    specs: list[str] = field(default_factory=lambda: list(CPU_SPECS))
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(256, 256), (720, 1280)])
    batches: list[int] = field(default_factory=lambda: [1])
    checkpoint: Path | None = None
    onnx: Path | None = None
    onnx_fp16: Path | None = None
    engine: Path | None = None
    warmup: int = 3
    repeats: int = 20
    max_seconds: float = 30.0  # per case: a 720p torch-eager CPU case takes seconds per call
    threads: int | None = None
    reference: str | None = None  # default: torch (fp32) with a checkpoint, else onnxruntime (cpu, fp32)
    baseline: str | None = None  # speedup denominator; default: the reference spec
    seed: int = 0
    cases: list[tuple[str, int, int, int]] | None = None  # explicit (spec, h, w, batch); else the product
    video: Path | None = None
    video_backend: str | None = None  # default: the fastest ok spec at batch 1
    missing: dict[str, str] = field(default_factory=dict)  # artifact kind -> why a script could not make it

    def plan(self) -> list[tuple[str, int, int, int]]:
        if self.cases is not None:
            return list(self.cases)
        return [(s, h, w, b) for s in self.specs for (h, w) in self.sizes for b in self.batches]


Loader = Callable[[Path, Spec, "int | None"], Any]
_NEEDS = {"checkpoint": "--checkpoint X.pth", "onnx": "--model X.onnx (or --checkpoint to export one)",
          "onnx-fp16": "an FP16 graph (--model X.fp16.onnx, or --checkpoint/--model to convert one)",
          "engine": "--engine X.plan (build it with `cgdeploy export --engine` on this GPU)"}


def default_loader(path: Path, spec: Spec, threads: int | None) -> Any:
    from cyclegan_deploy.backends.base import load_backend

    options = dict(spec.options)
    if threads and spec.device == "cpu":
        options.setdefault("threads", threads)
    return load_backend(path, spec.backend, **options)


class Artifacts:
    """The model files each spec reads; a missing ONNX/FP16 graph is made once into out_dir/artifacts."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.paths: dict[str, Path | None] = {"checkpoint": cfg.checkpoint, "onnx": cfg.onnx,
                                              "onnx-fp16": cfg.onnx_fp16, "engine": cfg.engine}
        self.errors: dict[str, CgDeployError] = {}
        self.missing = cfg.missing
        self.work = cfg.out_dir / "artifacts"
        self.notes: list[str] = []

    def get(self, kind: str) -> Path:
        path = self.paths.get(kind)
        if path is not None:
            return path
        if kind not in self.errors:
            try:
                self.paths[kind] = path = self._make(kind)
                return path
            except CgDeployError as e:
                self.errors[kind] = e
            except ImportError as e:  # the exporter's stack (onnxscript, onnxconverter-common) is not installed
                self.errors[kind] = BackendUnavailableError(f"making the {kind} artifact needs {e}")
            except Exception as e:  # an exporter bug must not end the whole benchmark
                self.errors[kind] = CgDeployError(f"making the {kind} artifact failed: {type(e).__name__}: {e}")
            if self.work.is_dir() and not any(self.work.iterdir()):
                self.work.rmdir()
        raise self.errors[kind]

    def _make(self, kind: str) -> Path:
        if kind == "onnx" and self.paths["checkpoint"] is not None:
            from cyclegan_deploy.export.onnx import export_onnx
            from cyclegan_deploy.train.checkpoints import load_generator

            model, meta = load_generator(self.paths["checkpoint"])
            self.work.mkdir(parents=True, exist_ok=True)
            path = self.work / "model.onnx"
            export_onnx(model, meta, path)
            self.notes.append(f"exported {path} from {self.paths['checkpoint']} for the ONNX-based backends")
            return path
        if kind == "onnx-fp16" and (self.paths["onnx"] is not None or self.paths["checkpoint"] is not None):
            from cyclegan_deploy.export.precision import to_fp16

            source = self.get("onnx")
            self.work.mkdir(parents=True, exist_ok=True)
            path = self.work / "model.fp16.onnx"
            to_fp16(source, path)
            self.notes.append(f"converted {path} (FP16 convs, FP32 instance norm) for the FP16 ONNX backends")
            return path
        raise BackendUnavailableError(self.missing.get(kind) or f"needs {_NEEDS[kind]}")


def _status(e: BaseException) -> str:
    text = " ".join(str(e).split())[:300] or type(e).__name__
    if isinstance(e, (BackendUnavailableError, ImportError)):
        return f"unavailable: {text}"
    return f"failed: {text}" if isinstance(e, CgDeployError) else f"failed: {type(e).__name__}: {text}"


def _check_device(spec: Spec, backend: Any) -> None:
    """The backends refuse a CUDA->CPU fallback themselves; this catches one that does not."""
    name = str(getattr(backend, "name", "")).lower()
    if spec.device == "cuda" and ("cpu" in name or not any(k in name for k in ("cuda", "trt", "tensorrt", "gpu"))):
        raise BackendUnavailableError(f"{spec.name} asked for a GPU but the backend reports {name!r}; "
                                      "not reporting a CPU run as a GPU result")


def _timed(backend: Any, x: np.ndarray, cfg: BenchConfig) -> tuple[np.ndarray, float, list[float], bool]:
    """(last output, first-call ms, timed samples ms, stopped by the time budget)."""
    t = time.perf_counter()
    y = backend(x)
    first_ms = (time.perf_counter() - t) * 1e3
    start = time.perf_counter()
    for _ in range(cfg.warmup - 1):
        if time.perf_counter() - start > cfg.max_seconds / 2:
            break
        backend(x)
    samples: list[float] = []
    min_n = min(MIN_REPEATS, cfg.repeats)
    start = time.perf_counter()
    while len(samples) < cfg.repeats:
        if len(samples) >= min_n and time.perf_counter() - start >= cfg.max_seconds:
            break
        t = time.perf_counter()
        y = backend(x)
        samples.append((time.perf_counter() - t) * 1e3)
    y = np.asarray(y)
    if y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:] or not np.all(np.isfinite(y)):
        raise CgDeployError(f"bad output: shape {y.shape} for input {x.shape}, finite={bool(np.isfinite(y).all())}")
    return y, first_ms, samples, len(samples) < cfg.repeats


def _record(spec: Spec, h: int, w: int, b: int) -> dict[str, Any]:
    return {"backend": spec.name, "backend_name": None, "device": spec.device, "precision": spec.precision,
            "options": {k: v for k, v in spec.options.items()}, "height": h, "width": w, "size": f"{h}x{w}",
            "run_height": None, "run_width": None, "batch": b, "status": "not run", "threads": None,
            "load_s": None, "first_call_ms": None, "samples_ms": [], "stats_ms": None, "budget_truncated": None,
            "ms_per_frame": None, "fps": None, "speedup": None, "macs_per_frame": None, "gflops": None,
            "peak_gflops": None, "pct_peak": None, "max_abs": None, "psnr_db": None, "max_u8": None}


class _Model:
    """Per-run-size caches shared by all cases: inputs, MAC counts, reference outputs."""

    def __init__(self, cfg: BenchConfig, arts: Artifacts) -> None:
        self.cfg, self.arts = cfg, arts
        self.inputs: dict[tuple[int, int, int], np.ndarray] = {}
        self.macs: dict[tuple[int, int], dict[str, Any]] = {}
        self.reference: dict[tuple[int, int], np.ndarray] = {}
        self.reference_status = "not run"
        self.meta: dict[str, Any] | None = None

    def input(self, b: int, h: int, w: int) -> np.ndarray:
        if (b, h, w) not in self.inputs:
            self.inputs[(b, h, w)] = make_input(b, h, w, self.cfg.seed)
        return self.inputs[(b, h, w)]

    def count(self, h: int, w: int) -> dict[str, Any]:
        """From the ONNX graph, else (no graph, or shapes it cannot infer statically) from the checkpoint."""
        if (h, w) in self.macs:
            return self.macs[(h, w)]
        onnx, checkpoint = self.arts.paths["onnx"], self.arts.paths["checkpoint"]
        found: dict[str, Any] = {"macs": None, "macs_dense": None, "from": "unknown: needs --model or --checkpoint"}
        if onnx is not None:
            try:
                found = {**count_macs_onnx(onnx, h, w), "from": "onnx"}
            except Exception as e:
                found["from"] = _status(e)
        if found["macs"] is None and checkpoint is not None:
            try:
                from cyclegan_deploy.train.checkpoints import load_generator

                model, _ = load_generator(checkpoint)
                found = {**count_macs_torch(model, h, w), "from": "torch"}
            except Exception as e:
                found["from"] += f"; torch: {_status(e)}"
        self.macs[(h, w)] = found
        return found


def _run_size(backend: Any, h: int, w: int) -> tuple[int, int]:
    multiple = int(getattr(getattr(backend, "meta", None), "multiple", 1) or 1)
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def _compute_reference(cfg: BenchConfig, arts: Artifacts, model: _Model, loader: Loader, name: str,
                       sizes: list[tuple[int, int]], log: Callable[[str], None]) -> None:
    try:
        spec = parse_spec(name)
        backend = loader(arts.get(spec.artifact), spec, cfg.threads)
        try:
            for h, w in sizes:
                rh, rw = _run_size(backend, h, w)
                if (rh, rw) not in model.reference:
                    log(f"reference {name} at {rh}x{rw}")
                    model.reference[(rh, rw)] = np.asarray(backend(model.input(1, rh, rw)))[0]
        finally:
            backend.close()
        model.reference_status = f"ok: {getattr(backend, 'name', name)}"
    except Exception as e:
        model.reference_status = _status(e)
        log(f"reference {name}: {model.reference_status}")


def _run_spec(cfg: BenchConfig, spec: Spec, cases: list[tuple[int, int, int]], arts: Artifacts, model: _Model,
              machine: dict[str, Any], loader: Loader, log: Callable[[str], None]) -> list[dict[str, Any]]:
    records = [_record(spec, h, w, b) for h, w, b in cases]
    try:
        path = arts.get(spec.artifact)
        t = time.perf_counter()
        backend = loader(path, spec, cfg.threads)
        load_s = time.perf_counter() - t
    except Exception as e:
        for r in records:
            r["status"] = _status(e)
        log(f"{spec.name}: {records[0]['status']}")
        return records
    try:
        _check_device(spec, backend)
        if model.meta is None and getattr(backend, "meta", None) is not None:
            model.meta = {k: v for k, v in vars(backend.meta).items() if k != "extra"}
        for r in records:
            _run_one(cfg, spec, backend, r, load_s, model, machine, log)
    except Exception as e:
        for r in records:
            if r["status"] == "not run":
                r["status"] = _status(e)
    finally:
        backend.close()
    return records


def _run_one(cfg: BenchConfig, spec: Spec, backend: Any, r: dict[str, Any], load_s: float, model: _Model,
             machine: dict[str, Any], log: Callable[[str], None]) -> None:
    h, w, b = r["height"], r["width"], r["batch"]
    rh, rw = _run_size(backend, h, w)
    r.update(backend_name=backend.name, run_height=rh, run_width=rw, load_s=round(load_s, 3),
             precision=str(getattr(backend, "precision", None) or spec.precision))
    log(f"{spec.name} {rh}x{rw} batch {b}")
    try:
        y, first_ms, samples, truncated = _timed(backend, model.input(b, rh, rw), cfg)
    except Exception as e:
        r["status"] = _status(e)
        log(f"  {r['status']}")
        return
    stats = latency_stats(samples)
    threads = getattr(backend, "threads", None)
    if threads is None and spec.backend.startswith("torch") and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    r.update(status="ok", first_call_ms=first_ms, samples_ms=samples, stats_ms=stats, budget_truncated=truncated,
             ms_per_frame=stats["p50"] / b, fps=b * 1e3 / stats["p50"], threads=threads or cfg.threads)
    macs = model.count(rh, rw)["macs"]
    if macs:
        gflops = 2 * macs * b / (stats["p50"] * 1e-3) / 1e9
        peak = peak_gflops(machine, spec.device, r["precision"])
        r.update(macs_per_frame=macs, gflops=gflops, peak_gflops=peak, pct_peak=100 * gflops / peak if peak else None)
    ref = model.reference.get((rh, rw))
    if ref is not None:
        r.update(parity(ref, np.asarray(y)[0]))


def _speedups(records: list[dict[str, Any]], baseline: str) -> None:
    ok = {(r["backend"], r["size"], r["batch"]): r for r in records if r["status"] == "ok"}
    for r in ok.values():
        base = ok.get((baseline, r["size"], r["batch"])) or ok.get((baseline, r["size"], 1))
        if base is not None:
            r["speedup"] = r["fps"] / base["fps"]


def _card_multiple(onnx: Path | None) -> int:
    """The model's size multiple from the ONNX card; 4 (ResNet's) without one. Only names MAC-count sizes."""
    from cyclegan_deploy.backends.base import read_onnx_meta

    try:
        return read_onnx_meta(onnx).multiple if onnx is not None else 4
    except CgDeployError:
        return 4


def run_bench(cfg: BenchConfig, loader: Loader | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Run every (spec, size, batch) case; a spec that cannot load or run is reported with its status."""
    loader = loader or default_loader
    plan = cfg.plan()
    if not plan:
        raise ConfigError("nothing to benchmark: give at least one backend, size and batch size")
    specs = {name: parse_spec(name) for name in dict.fromkeys(c[0] for c in plan)}  # unknown names fail fast
    for _, h, w, b in plan:
        if h < 2 or w < 2 or b < 1:
            raise ConfigError(f"bad case {h}x{w} batch {b}: sizes must be at least 2x2 and batches at least 1")
    machine = machine_info()
    arts = Artifacts(cfg)
    model = _Model(cfg, arts)
    reference = cfg.reference or ("torch" if cfg.checkpoint else "onnxruntime")
    _compute_reference(cfg, arts, model, loader, reference, sorted({(h, w) for _, h, w, _ in plan}), log)
    records: list[dict[str, Any]] = []
    for name, spec in specs.items():
        cases = [(h, w, b) for s, h, w, b in plan if s == name]
        records += _run_spec(cfg, spec, cases, arts, model, machine, loader, log)
    multiple = int((model.meta or {}).get("multiple") or _card_multiple(arts.paths["onnx"]))
    for h, w in dict.fromkeys((h, w) for _, h, w, _ in plan):  # MACs for every size, even if no case ran
        model.count(-(-h // multiple) * multiple, -(-w // multiple) * multiple)
    baseline = cfg.baseline or reference
    _speedups(records, baseline)
    results: dict[str, Any] = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv),
        "machine": machine,
        "settings": {"warmup": cfg.warmup, "repeats": cfg.repeats, "max_seconds": cfg.max_seconds,
                     "min_repeats": MIN_REPEATS, "threads": cfg.threads, "seed": cfg.seed,
                     "percentiles": "numpy.percentile method=linear", "timer": "time.perf_counter per call; "
                     "host numpy in/out, so GPU calls are synchronous and include the copies"},
        "model": {"artifacts": {k: str(v) if v else None for k, v in arts.paths.items()}, "card": model.meta,
                  "macs": {f"{h}x{w}": v for (h, w), v in model.macs.items()}},
        "reference": {"spec": reference, "status": model.reference_status}, "baseline": baseline,
        "cases": records, "video": None, "notes": arts.notes,
    }
    if cfg.video is not None:
        results["video"] = run_video(cfg, arts, records, loader, log)
    return results




def run_video(cfg: BenchConfig, arts: Artifacts, records: list[dict[str, Any]], loader: Loader,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Whole-pipeline fps (decode -> model -> encode, cyclegan_deploy.video) vs inference-only fps of the
    same backend, batch and frame size measured in the same run, plus the per-stage busy times."""
    batch = cfg.batches[0]
    ok = [r for r in records if r["status"] == "ok" and r["batch"] == batch]
    # fastest = highest GFLOP/s, which compares cases measured at different sizes
    name = cfg.video_backend or (max(ok, key=lambda r: r["gflops"] or 0.0)["backend"] if ok
                                 else cfg.reference or "onnxruntime")
    result: dict[str, Any] = {"backend": name, "video": str(cfg.video), "batch": batch, "status": "not run"}
    try:
        from cyclegan_deploy.video import VideoOptions, probe_video, translate_video

        spec = parse_spec(name)
        info = probe_video(cfg.video)  # type: ignore[arg-type]
        backend = loader(arts.get(spec.artifact), spec, cfg.threads)
        try:
            _check_device(spec, backend)
            rh, rw = _run_size(backend, *info.display_size)
            log(f"video: inference-only {spec.name} {rh}x{rw} batch {batch}")
            _, _, samples, _ = _timed(backend, make_input(batch, rh, rw, cfg.seed), cfg)
            stats = latency_stats(samples)
            log(f"video: end-to-end {cfg.video}")
            dst = cfg.out_dir / "video_out.mp4"
            report = translate_video(cfg.video, dst, backend,  # type: ignore[arg-type]
                                     VideoOptions(batch=batch, progress=False))
        finally:
            backend.close()
        infer_fps = batch * 1e3 / stats["p50"]
        busy_infer = report.busy_s.get("inference", 0.0)
        result.update(status="ok", backend_name=report.backend, frames=report.frames, size=list(report.size),
                      run_size=[rh, rw], output=str(dst), wall_s=report.wall_s, end_to_end_fps=report.fps,
                      inference_only_fps=infer_fps, inference_only_ms=stats,
                      pipeline_inference_fps=report.frames / busy_infer if busy_infer else None,
                      end_to_end_vs_inference=report.fps / infer_fps, stage_busy_s=report.busy_s,
                      warnings=report.warnings)
    except Exception as e:
        result["status"] = _status(e)
    log(f"video: {result['status']}")
    return result


def default_specs(checkpoint: Path | None, onnx: Path | None, engine: Path | None, gpu: bool) -> list[str]:
    """What `--backends auto` runs: every CPU spec the given artifacts feed (+ GPU specs when nvidia-smi
    sees a GPU). Specs named explicitly always run and are reported, available or not."""
    specs = [s for s in CPU_SPECS if checkpoint or SPECS[s].artifact != "checkpoint"]
    if gpu:
        specs += [s for s in GPU_SPECS if SPECS[s].artifact != "engine"
                  and (checkpoint or SPECS[s].artifact != "checkpoint")]
    if engine:
        specs.append("tensorrt")
    if not checkpoint and not onnx:
        specs = [s for s in specs if SPECS[s].artifact == "engine"]
    return specs
