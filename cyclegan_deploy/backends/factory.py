"""load_backend: open an artifact with the backend that runs it (artifacts.KINDS says which), and what is
installed (each backend module's `availability`). Imports no inference library at top level.

Adding a backend touches its module and artifacts.py (BACKEND_MODULES, the readers of its kinds), not this file.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from cyclegan_deploy.artifacts import BACKEND_MODULES, backend_how_to, kind_of
from cyclegan_deploy.backends.base import UNAVAILABLE, Backend
from cyclegan_deploy.errors import ConfigError

BACKENDS = tuple(BACKEND_MODULES)
DEVICES = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "gpu": "cuda", "tensorrt": "tensorrt", "trt": "tensorrt"}


def parse_backend_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'onnxruntime-cuda' -> ('onnxruntime', {'device': 'cuda'}); 'openvino-bf16' -> precision; 'torch' alone.

    Lets bench and the CLI name a backend the way its .name reports it.
    """
    base, _, variant = spec.strip().lower().partition("-")
    if base == "ort":
        base = "onnxruntime"
    if base not in (*BACKENDS, "auto"):
        raise ConfigError(f"unknown backend {spec!r}; use auto, {', '.join(BACKENDS)} "
                          "(optionally with -cpu/-cuda/-trt or -f32/-bf16/-fp16, e.g. onnxruntime-cuda)")
    extra: dict[str, str] = {}
    for part in filter(None, variant.split("-")):
        if part in ("cpu", "cuda", "gpu", "trt", "tensorrt"):
            extra["device"] = DEVICES[part]
        elif part in ("f32", "fp32", "bf16", "f16", "fp16", "auto"):
            extra["precision"] = part
        else:
            raise ConfigError(f"unknown backend variant {part!r} in {spec!r}; use cpu, cuda, trt, f32, bf16 or fp16")
    return base, extra


def load_backend(artifact: str | Path, backend: str = "auto", device: str = "auto", precision: str | None = None,
                 **options: Any) -> Backend:
    """Open `artifact` (.onnx, .plan/.engine, .xml, .pth/run dir) with `backend` (auto|onnxruntime|openvino|torch|
    tensorrt, optionally with a variant: "onnxruntime-cuda", "openvino-bf16", "torch-cuda").

    `options` become the backend's typed options (threads, compile, channels_last, num_streams...); an option
    another backend takes is refused when set. device "auto" takes CUDA when it really works and CPU otherwise;
    an explicit "cuda"/"tensorrt" never falls back.
    """
    path = Path(artifact)
    if not path.exists():
        raise ConfigError(f"{path}: no such file; check the path (export one with `cgdeploy export`)")
    kind = kind_of(path)
    name, variant = parse_backend_spec(backend)
    if "device" in variant:
        if device not in ("auto", variant["device"]):
            raise ConfigError(f"--backend {backend} and --device {device} disagree; give one of them")
        device = variant["device"]
    if "precision" in variant:
        if precision not in (None, variant["precision"]):
            raise ConfigError(f"--backend {backend} and --precision {precision} disagree; give one of them")
        precision = variant["precision"]
    if device.lower() not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    device = DEVICES[device.lower()]
    if name == "auto":
        name = next((b for b in kind.readers if not available_backends([b])[b].startswith(UNAVAILABLE)),
                    kind.readers[0])
    elif name not in kind.readers:
        raise ConfigError(f"{path}: the {name} backend cannot read a {path.suffix or 'run dir'} artifact "
                          f"(readers: {', '.join(kind.readers)}); {backend_how_to(name)}")
    module, cls = BACKEND_MODULES[name]
    backend_cls = getattr(importlib.import_module(module), cls)
    instance: Backend = backend_cls(path, device=device, precision=precision, options=options)
    return instance


def available_backends(names: list[str] | None = None) -> dict[str, str]:
    """name -> installed version, or "unavailable: <reason>" (values starting with UNAVAILABLE).

    Cheap static checks (imports, provider lists, device counts); `cgdeploy doctor` goes further and
    really creates a session per provider. Names: a backend with an optional variant (onnxruntime-cuda...);
    default: every backend and its device variants.
    """
    wanted = names or ["onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "openvino", "torch", "torch-cuda",
                       "tensorrt"]
    out = {}
    for name in wanted:
        base, _, variant = name.partition("-")
        if base not in BACKEND_MODULES:
            raise ConfigError(f"unknown backend {name!r}")
        out[name] = importlib.import_module(BACKEND_MODULES[base][0]).availability(variant)
    return out

