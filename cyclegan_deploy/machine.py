"""The one reader of /proc/cpuinfo, /proc/meminfo (and the cgroup memory limit) and installed package versions
(doctor, bench, backends, benchmarks; images and video size their batches by available_memory)."""

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


# /proc/cpuinfo flags that decide which precisions are fast, by label (doctor lists them all)
CPU_FLAGS = {"avx2": "AVX2", "avx_vnni": "AVX-VNNI", "avx512f": "AVX-512F", "avx512_vnni": "AVX512-VNNI",
             "avx512_bf16": "AVX512-BF16", "avx512_fp16": "AVX512-FP16", "amx_tile": "AMX", "amx_bf16": "AMX-BF16",
             "amx_int8": "AMX-INT8", "amx_fp16": "AMX-FP16"}
# the short summary bench prints (label -> any of these flags)
ISA = {"AVX2": ("avx2",), "AVX-512": ("avx512f",), "AVX512-VNNI": ("avx512_vnni",),
       "AVX512-BF16": ("avx512_bf16",), "AMX": ("amx_tile", "amx_bf16", "amx_int8")}


def isa(flags: set[str] | None = None) -> dict[str, bool]:
    """What this CPU can do: AVX2 / AVX-512 / AVX512-VNNI / AVX512-BF16 / AMX, each True/False."""
    flags = cpu_flags() if flags is None else flags
    return {label: any(f in flags for f in names) for label, names in ISA.items()}


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


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable from /proc/meminfo, lowered to what a cgroup
    (container) limit leaves; None when neither can be read (then callers skip their memory checks)."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # v2
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",  # v1
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 writes "no limit" as ~2**63
            found.append(max(0, limit - usage))
    return min(found) if found else None


GIB = 1 << 30


def gib(n: float) -> str:
    return f"{n / GIB:.1f}" if n >= GIB / 10 else f"{n / GIB:.2f}"
