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
    """Physical cores (not SMT siblings) among the CPUs we may run on: the thread count CPU inference scales
    to. Counts distinct (physical id, core id) of the allowed processors; without those fields, allowed CPUs."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cores: set[tuple[str, str]] = set()
    for block in _cpuinfo_text().split("\n\n"):
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        if "core id" not in fields or not fields.get("processor", "").isdigit():
            continue
        if allowed is None or int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return max(1, len(cores)) if cores else allowed_cpus()


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
