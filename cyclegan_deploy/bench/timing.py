"""Timing one backend on one input: the Backend shape the harness relies on, the loader, the timed loops.

Latency (timed): the method results.md describes (run.py's docstring): untimed warm-up, then perf_counter around
each synchronous call until `repeats` samples or `max_seconds`; the output is checked once, after timing.
Throughput (timed_throughput): the same input fed through backend.run_many with N batches in flight; one
untimed pass of N batches (every infer request compiled and warm), then at least 2N batches (up to
max(2N, repeats) within `max_seconds`) timed from the first batch in to the last batch out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from cyclegan_deploy.bench import limits
from cyclegan_deploy.bench.cases import MIN_REPEATS, BenchConfig, Spec
from cyclegan_deploy.errors import BackendUnavailableError, CgDeployError
from cyclegan_deploy.metadata import ModelMeta

Log = Callable[[str], None]


class BenchBackend(Protocol):
    """What the harness needs of a backend (backends.Backend has it; the tests' fakes too)."""

    name: str
    meta: ModelMeta

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


Loader = Callable[[Path, Spec, "int | None"], BenchBackend]


def default_loader(path: Path, spec: Spec, threads: int | None) -> BenchBackend:
    from cyclegan_deploy.backends import load_backend

    options = dict(spec.options)
    if threads and spec.device == "cpu":
        options.setdefault("threads", threads)
    return load_backend(path, spec.backend, **options)


def check_device(spec: Spec, backend: BenchBackend) -> None:
    """The backends refuse a CUDA->CPU fallback themselves; this catches one that does not."""
    name = str(getattr(backend, "name", "")).lower()
    if spec.device == "cuda" and ("cpu" in name or not any(k in name for k in ("cuda", "trt", "tensorrt", "gpu"))):
        raise BackendUnavailableError(f"{spec.name} asked for a GPU but the backend reports {name!r}; "
                                      "not reporting a CPU run as a GPU result")


def run_size(backend: BenchBackend, h: int, w: int) -> tuple[int, int]:
    """The size an (H, W) case runs at on this backend's model (limits.run_size)."""
    meta = getattr(backend, "meta", None)
    return (h, w) if meta is None else limits.run_size(meta, h, w)


def timed(backend: BenchBackend, x: np.ndarray, cfg: BenchConfig, device: list[float] | None = None
          ) -> tuple[np.ndarray, float, list[float], bool]:
    """(last output, first-call ms, timed samples ms, stopped by the time budget). `device` collects the
    backend's device_ms after each timed call (CUDA events; GPU backends that measure it)."""
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
        if device is not None and (ms := getattr(backend, "device_ms", None)) is not None:
            device.append(float(ms))
    y = np.asarray(y)
    _check_output(y, x, backend)
    return y, first_ms, samples, len(samples) < cfg.repeats


def _check_output(y: np.ndarray, x: np.ndarray, backend: BenchBackend) -> None:
    scale = int(getattr(getattr(backend, "meta", None), "scale", 1) or 1)  # super-resolution: s x the input
    n, _, h, w = x.shape  # (N, C, H, W)
    if y.ndim != 4 or y.shape[0] != n or y.shape[2:] != (scale * h, scale * w) or not np.all(np.isfinite(y)):
        raise CgDeployError(f"bad output: shape {y.shape} for input {x.shape} at scale {scale} (expected "
                            f"({n}, C, {scale * h}, {scale * w})), finite={bool(np.isfinite(y).all())}")


def timed_throughput(backend: BenchBackend, x: np.ndarray, inflight: int, cfg: BenchConfig) -> float:
    """Frames/s of `x` batches through backend.run_many(batches, inflight) (see the module docstring)."""
    run_many = backend.run_many  # type: ignore[attr-defined]  # Backend has it; the protocol's fakes may not
    warm = list(run_many([x] * inflight, inflight=inflight))
    if len(warm) != inflight:
        raise CgDeployError(f"run_many returned {len(warm)} outputs for {inflight} batches")
    target, least = max(2 * inflight, cfg.repeats), 2 * inflight
    fed = 0
    start = time.perf_counter()

    def feed() -> Iterator[np.ndarray]:
        nonlocal fed
        while fed < target and (fed < least or time.perf_counter() - start < cfg.max_seconds):
            fed += 1
            yield x

    got, last = 0, warm[-1]
    for last in run_many(feed(), inflight=inflight):  # noqa: B007 - the last output is checked below
        got += 1
    elapsed = time.perf_counter() - start
    if got != fed:
        raise CgDeployError(f"run_many returned {got} outputs for {fed} batches")
    _check_output(np.asarray(last), x, backend)
    return fed * x.shape[0] / elapsed
