"""The one reader of /proc/cpuinfo and installed package versions (doctor, bench, backends, benchmarks)."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpuinfo() -> dict[str, str]:
    """Key -> value of the first processor's block (model name, flags, cpu MHz, siblings, cpu cores...)."""
    info: dict[str, str] = {}
    for line in _cpuinfo_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_model() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    return set(cpuinfo().get("flags", "").split())


def allowed_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def physical_cores() -> int:
    """Physical cores (not SMT siblings) we may run on: the thread count CPU inference scales to."""
    pairs, phys = set(), "0"
    for line in _cpuinfo_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            phys = value.strip()
        elif key.strip() == "core id":
            pairs.add((phys, value.strip()))
    allowed = allowed_cpus()
    return max(1, min(len(pairs), allowed)) if pairs else allowed


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
