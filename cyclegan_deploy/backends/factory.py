"""load_backend: open an artifact with the backend that runs it (artifacts.KINDS says which), and what is
installed. Imports no inference library at top level: `import cyclegan_deploy.backends` stays light.

Adding a backend: its module (a Backend subclass + options dataclass), a row in _MODULES below, and its name in
the `readers` of the artifact kinds it runs (artifacts.KINDS).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from cyclegan_deploy.artifacts import backend_how_to, kind_of
from cyclegan_deploy.backends.base import UNAVAILABLE, Backend
from cyclegan_deploy.errors import ConfigError

# backend name -> (module, class); each class takes (path, device, precision, options: dict)
_MODULES = {"onnxruntime": ("cyclegan_deploy.backends.onnxruntime", "OrtBackend"),
            "openvino": ("cyclegan_deploy.backends.openvino", "OpenVinoBackend"),
            "torch": ("cyclegan_deploy.backends.torch", "TorchBackend"),
            "tensorrt": ("cyclegan_deploy.backends.tensorrt", "TensorRTBackend")}
BACKENDS = tuple(_MODULES)
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
    module, cls = _MODULES[name]
    backend_cls = getattr(importlib.import_module(module), cls)
    instance: Backend = backend_cls(path, device=device, precision=precision, options=options)
    return instance


def _import(module: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(module), None
    except Exception as e:  # ImportError, or a broken install raising anything at import time
        return None, f"{UNAVAILABLE}import {module} failed ({type(e).__name__}: {str(e)[:120]})"


def available_backends(names: list[str] | None = None) -> dict[str, str]:
    """name -> installed version, or "unavailable: <reason>" (values starting with UNAVAILABLE).

    Cheap static checks (imports, provider lists, device counts); `cgdeploy doctor` goes further and
    really creates a session per provider. Names: onnxruntime, onnxruntime-cuda, onnxruntime-trt, openvino,
    torch, torch-cuda, tensorrt.
    """
    wanted = names or ["onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "openvino", "torch", "torch-cuda",
                       "tensorrt"]
    return {name: _availability(name) for name in wanted}


def _availability(name: str) -> str:
    base, _, variant = name.partition("-")
    if base == "onnxruntime":
        ort, err = _import("onnxruntime")
        if ort is None:
            return err or UNAVAILABLE
        provider = {"": "CPUExecutionProvider", "cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "trt": "TensorrtExecutionProvider"}[variant]
        listed = ort.get_available_providers()
        return ort.__version__ if provider in listed else (
            f"{UNAVAILABLE}{provider} not in this onnxruntime build ({', '.join(listed)}); "
            "install onnxruntime-gpu instead of onnxruntime (never both)")
    if base == "openvino":
        ov, err = _import("openvino")
        return (err or UNAVAILABLE) if ov is None else str(ov.__version__).split("-")[0]
    if base == "torch":
        torch, err = _import("torch")
        if torch is None:
            return err or UNAVAILABLE
        if variant == "cuda" and not torch.cuda.is_available():
            return f"{UNAVAILABLE}torch {torch.__version__} sees no CUDA device (CPU build or no GPU)"
        return str(torch.__version__)
    if base == "tensorrt":
        trt, err = _import("tensorrt")
        # tensorrt-stubs alone makes `import tensorrt` succeed as an empty namespace package
        if trt is None or not hasattr(trt, "Runtime"):
            return err or f"{UNAVAILABLE}TensorRT is not installed (only type stubs, if any); " \
                          "install tensorrt on a machine with an NVIDIA GPU"
        _, cuda_err = _import("cuda.bindings.runtime")
        return f"{UNAVAILABLE}cuda-python is missing ({cuda_err}); pip install cuda-python" if cuda_err \
            else str(trt.__version__)
    raise ConfigError(f"unknown backend {name!r}")
