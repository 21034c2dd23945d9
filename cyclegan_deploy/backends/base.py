"""The Backend protocol and load_backend (dispatch by artifact and what is installed).

A backend maps float32 NCHW in [-1, 1] to the same. It does no resizing, padding or timing:
frames.py and bench.py do. Asking for CUDA/TensorRT and getting CPU raises BackendUnavailableError.
This module imports no inference library at top level: `import cyclegan_deploy.backends` stays light.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.metadata import ModelMeta


@runtime_checkable
class Backend(Protocol):
    name: str  # "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "openvino-f32", "torch-cpu"...
    meta: ModelMeta

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


BACKENDS = ("onnxruntime", "openvino", "torch", "tensorrt")
UNAVAILABLE = "unavailable: "  # prefix of available_backends() values that are reasons, not versions
ENGINE_SUFFIXES = (".plan", ".engine")
TORCH_SUFFIXES = (".pth", ".pt")
# which backends can read which artifact, first = the one "auto" prefers
READERS = {"onnx": ("onnxruntime", "openvino"), "xml": ("openvino",), "engine": ("tensorrt",),
           "torch": ("torch",)}
HOW_TO_MAKE = {
    "onnxruntime": "export an .onnx with `cgdeploy export CHECKPOINT -o OUT_DIR`",
    "openvino": "pass an .onnx or an OpenVINO .xml IR (`cgdeploy export --target openvino`)",
    "tensorrt": "build an engine with `cgdeploy export CHECKPOINT -o OUT_DIR --engine` on the GPU that runs it "
                "(or run the .onnx through TensorRT with --backend onnxruntime-trt)",
    "torch": "pass a generator .pth/.pt or a training run dir",
}


def artifact_kind(path: Path) -> str:
    """'onnx' | 'xml' | 'engine' | 'torch' from the suffix (a directory is a training run dir)."""
    if path.is_dir():
        return "torch"
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".xml":
        return "xml"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    raise ConfigError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; pass an .onnx, an OpenVINO "
                      ".xml, a TensorRT .plan/.engine, or a generator .pth/.pt / run dir")


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
            extra["device"] = {"gpu": "cuda", "trt": "tensorrt"}.get(part, part)
        elif part in ("f32", "fp32", "bf16", "f16", "fp16", "auto"):
            extra["precision"] = part
        else:
            raise ConfigError(f"unknown backend variant {part!r} in {spec!r}; use cpu, cuda, trt, f32, bf16 or fp16")
    return base, extra


def load_backend(artifact: str | Path, backend: str = "auto", device: str = "auto", **options: Any) -> Backend:
    """Open `artifact` (.onnx, .plan, .xml, .pth/run dir) with `backend` (auto|onnxruntime|openvino|torch|tensorrt).

    `backend` may carry a variant ("onnxruntime-cuda", "openvino-bf16", "torch-cuda"); options go to the
    backend (precision, threads, compile, channels_last, num_streams...). device "auto" takes CUDA when it
    really works and CPU otherwise; an explicit "cuda"/"tensorrt" never falls back.
    """
    path = Path(artifact)
    if not path.exists():
        raise ConfigError(f"{path}: no such file; check the path (export one with `cgdeploy export`)")
    kind = artifact_kind(path)
    name, variant = parse_backend_spec(backend)
    if "device" in variant:
        if device not in ("auto", variant["device"]):
            raise ConfigError(f"--backend {backend} and --device {device} disagree; give one of them")
        device = variant["device"]
    if "precision" in variant:
        if options.get("precision") not in (None, variant["precision"]):
            raise ConfigError(f"--backend {backend} and --precision {options['precision']} disagree; give one of them")
        options["precision"] = variant["precision"]
    device = {"gpu": "cuda", "trt": "tensorrt"}.get(device.lower(), device.lower())
    if device not in ("auto", "cpu", "cuda", "tensorrt"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    readers = READERS[kind]
    if name == "auto":
        name = next((b for b in readers if not available_backends([b])[b].startswith(UNAVAILABLE)), readers[0])
    elif name not in readers:
        raise ConfigError(f"{path}: the {name} backend cannot read a {path.suffix or 'run dir'} artifact "
                          f"(readers: {', '.join(readers)}); {HOW_TO_MAKE[name]}")
    if name == "onnxruntime":
        from cyclegan_deploy.backends.onnxruntime import OrtBackend

        return OrtBackend(path, device=device, **options)
    if name == "openvino":
        from cyclegan_deploy.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(path, device=device, **options)
    if name == "torch":
        from cyclegan_deploy.backends.torch import TorchBackend

        return TorchBackend(path, device=device, **options)
    from cyclegan_deploy.backends.tensorrt import TensorRTBackend

    if device == "cpu":
        raise ConfigError(f"{path}: a TensorRT engine runs on the GPU only; use the .onnx with --device cpu")
    return TensorRTBackend(path, **options)


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


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
    out: dict[str, str] = {}
    for name in wanted:
        base, _, variant = name.partition("-")
        if base == "onnxruntime":
            ort, err = _import("onnxruntime")
            if ort is None:
                out[name] = err or UNAVAILABLE
                continue
            provider = {"": "CPUExecutionProvider", "cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                        "trt": "TensorrtExecutionProvider"}[variant]
            listed = ort.get_available_providers()
            out[name] = ort.__version__ if provider in listed else (
                f"{UNAVAILABLE}{provider} not in this onnxruntime build ({', '.join(listed)}); "
                "install onnxruntime-gpu instead of onnxruntime (never both)")
        elif base == "openvino":
            ov, err = _import("openvino")
            out[name] = (err or UNAVAILABLE) if ov is None else str(ov.__version__).split("-")[0]
        elif base == "torch":
            torch, err = _import("torch")
            if torch is None:
                out[name] = err or UNAVAILABLE
            elif variant == "cuda" and not torch.cuda.is_available():
                out[name] = f"{UNAVAILABLE}torch {torch.__version__} sees no CUDA device (CPU build or no GPU)"
            else:
                out[name] = str(torch.__version__)
        elif base == "tensorrt":
            trt, err = _import("tensorrt")
            # tensorrt-stubs alone makes `import tensorrt` succeed as an empty namespace package
            if trt is None or not hasattr(trt, "Runtime"):
                out[name] = err or f"{UNAVAILABLE}TensorRT is not installed (only type stubs, if any); " \
                                   "install tensorrt on a machine with an NVIDIA GPU"
                continue
            _, cuda_err = _import("cuda.bindings.runtime")
            out[name] = (f"{UNAVAILABLE}cuda-python is missing ({cuda_err}); pip install cuda-python"
                         if cuda_err else str(trt.__version__))
        else:
            raise ConfigError(f"unknown backend {name!r}")
    return out


def require(name: str) -> str:
    """Version of an available backend, or BackendUnavailableError with the reason."""
    value = available_backends([name])[name]
    if value.startswith(UNAVAILABLE):
        raise BackendUnavailableError(f"backend {name} is {value}")
    return value


# ---- model cards -------------------------------------------------------------------------------------------

def _read_varint(f: Any) -> int | None:
    shift = result = 0
    while True:
        byte = f.read(1)
        if not byte:
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7


def _parse_entry(data: bytes) -> tuple[str, str]:
    import io

    fields: dict[int, str] = {}
    f = io.BytesIO(data)
    while (tag := _read_varint(f)) is not None:
        size = _read_varint(f) or 0
        fields[tag >> 3] = f.read(size).decode("utf-8", "replace")
    return fields.get(1, ""), fields.get(2, "")


def onnx_metadata(path: Path) -> dict[str, str]:
    """ModelProto.metadata_props (field 14) read straight from the protobuf, skipping the weights.

    The runtime must not need the `onnx` package (an export-time dependency) just to read the model card.
    """
    props: dict[str, str] = {}
    with open(path, "rb") as f:
        while (tag := _read_varint(f)) is not None:
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _read_varint(f)
            elif wire in (1, 5):
                f.seek(8 if wire == 1 else 4, 1)
            elif wire == 2:
                size = _read_varint(f) or 0
                if field == 14:
                    key, value = _parse_entry(f.read(size))
                    props[key] = value
                else:
                    f.seek(size, 1)
            else:
                raise ConfigError(f"{path}: not a valid ONNX file (protobuf wire type {wire}); re-export it")
    return props


def fallback_meta(path: Path, why: str) -> ModelMeta:
    """A card for artifacts without ours (foreign exports): reference ResNet defaults, marked as assumed."""
    return ModelMeta(model="unknown", source=path.name, extra={"card": f"assumed defaults: {why}"})


def read_sidecar(path: Path) -> ModelMeta | None:
    """The model card in `<artifact>.json` (engines, OpenVINO IR): either the card itself or {"model_card": ...}."""
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{sidecar}: unreadable sidecar ({e}); re-export {path.name}") from e
    card = data.get("model_card", data) if isinstance(data, dict) else None
    if isinstance(card, str):
        return ModelMeta.from_json(card)
    if not isinstance(card, dict):
        raise ConfigError(f"{sidecar}: no model card in the sidecar; re-export {path.name}")
    return ModelMeta.from_dict(card)


def read_onnx_meta(path: Path) -> ModelMeta:
    return ModelMeta.from_props(onnx_metadata(path)) or fallback_meta(path, "no cgdeploy model card in the ONNX")


def check_batch(batch: np.ndarray, meta: ModelMeta, name: str) -> np.ndarray:
    """Validate the protocol's input (float32 NCHW, channels, multiple) once for every backend."""
    from cyclegan_deploy.errors import ShapeError

    if batch.ndim != 4 or batch.shape[1] != meta.input_nc:
        raise ShapeError(f"{name}: expected a float32 (N,{meta.input_nc},H,W) batch, got {batch.shape}")
    h, w = batch.shape[2:]
    if h % meta.multiple or w % meta.multiple:
        raise ShapeError(f"{name}: {h}x{w} is not a multiple of {meta.multiple} ({meta.arch}); "
                         "pad with frames.pad_to_multiple first")
    return np.ascontiguousarray(batch, dtype=np.float32)


def reject_options(name: str, options: dict[str, Any]) -> None:
    """Options meant for another backend are fine when unset (None/False); set ones are a user mistake."""
    bad = {k: v for k, v in options.items() if v not in (None, False)}
    if bad:
        raise ConfigError(f"backend {name} does not take option(s) {', '.join(f'{k}={v!r}' for k, v in bad.items())}")


def physical_cores() -> int:
    """Physical cores (not SMT siblings) we may run on: the thread count CPU inference scales to."""
    import os

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        pairs, phys = set(), "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                phys = value.strip()
            elif key.strip() == "core id":
                pairs.add((phys, value.strip()))
        if pairs:
            return max(1, min(len(pairs), allowed))
    except OSError:
        pass
    return allowed
