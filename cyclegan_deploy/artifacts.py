"""THE table of artifact kinds, their derived file names, where each keeps its model card, and the one
atomic writer. Torch-free and inference-library-free: the runtime, export, train and benchmarks all use it.

Kinds (suffix -> what reads it -> where the card lives):
    .onnx            onnxruntime, openvino   metadata_props (FP32, FP16 `.fp16.onnx`, INT8 `.int8.onnx` graphs)
    .xml (+ .bin)    openvino                `<name>.xml.json` sidecar, else the IR's rt_info
    .plan / .engine  tensorrt                `<name>.plan.json` / `<name>.engine.json` sidecar (tensorrt_sidecar.py)
    .pth / .pt / dir torch                   the generator file's card, else inferred from the weights
The precision of an artifact is always its card's `precision`, never guessed from the file name; the
`.fp16`/`.int8` infixes only name files.

Adding an artifact kind: a row in KINDS (and, if its card lives somewhere new, a branch in read_card), plus
the backend that runs it. Adding a backend: its module in backends/ and a row in BACKEND_MODULES (plus its name
in the `readers` of the kinds it runs). Nothing else matches on suffixes or backend names.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.metadata import CARD_KEY, ModelMeta, canonical_precision
from cyclegan_deploy.outputs import clean_stale_partials, temp_name


@dataclass(frozen=True)
class ArtifactKind:
    name: str
    suffixes: tuple[str, ...]  # lower-case; "" stands for a directory (a training run dir)
    readers: tuple[str, ...]  # backends that run it; the first is what --backend auto tries first
    card: str  # onnx-metadata | sidecar | checkpoint
    how_to_make: str


KINDS: tuple[ArtifactKind, ...] = (
    ArtifactKind("onnx", (".onnx",), ("onnxruntime", "openvino"), "onnx-metadata",
                 "export an .onnx with `cgdeploy export CHECKPOINT -o OUT_DIR`"),
    ArtifactKind("openvino-ir", (".xml",), ("openvino",), "sidecar",
                 "pass an .onnx or an OpenVINO .xml IR (`cgdeploy export --target openvino`)"),
    ArtifactKind("tensorrt-engine", (".plan", ".engine"), ("tensorrt",), "sidecar",
                 "build an engine with `cgdeploy export CHECKPOINT -o OUT_DIR --engine` on the GPU that runs it "
                 "(or run the .onnx through TensorRT with --backend onnxruntime-trt)"),
    ArtifactKind("torch", (".pth", ".pt", ""), ("torch",), "checkpoint",
                 "pass a generator .pth/.pt or a training run dir"),
)
# backend name -> (module, class). Each module is light to import (its runtime is imported inside), defines a
# Backend subclass taking (path, device, precision, options) and `availability(variant) -> version | reason`.
BACKEND_MODULES = {"onnxruntime": ("cyclegan_deploy.backends.onnxruntime", "OrtBackend"),
                   "openvino": ("cyclegan_deploy.backends.openvino", "OpenVinoBackend"),
                   "torch": ("cyclegan_deploy.backends.torch", "TorchBackend"),
                   "tensorrt": ("cyclegan_deploy.backends.tensorrt", "TensorRTBackend")}
# graph file infix per precision: g_AtoB.onnx, g_AtoB.fp16.onnx, g_AtoB.int8.onnx
GRAPH_INFIX = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}


def kind_of(path: Path) -> ArtifactKind:
    """The kind of `path` by its suffix (a directory is a training run dir)."""
    suffix = "" if path.is_dir() else path.suffix.lower()
    for kind in KINDS:
        if suffix in kind.suffixes and (suffix or path.is_dir()):
            return kind
    raise ConfigError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; pass an .onnx, an OpenVINO "
                      ".xml, a TensorRT .plan/.engine, or a generator .pth/.pt / run dir")


def backend_how_to(backend: str) -> str:
    """How to make an artifact `backend` runs first (for "this backend cannot read that file" errors)."""
    return next((k.how_to_make for k in KINDS if k.readers[0] == backend), KINDS[0].how_to_make)


# ---- derived names ------------------------------------------------------------------------------------------

def _base_name(artifact: Path) -> str:
    """g_AtoB.onnx -> g_AtoB, g_AtoB.fp16.onnx -> g_AtoB.fp16; other kinds keep their suffix (g_AtoB.xml,
    g_AtoB.plan) so the reports of an IR/engine never overwrite those of the graph it came from."""
    name = Path(artifact).name
    return name[: -len(".onnx")] if name.lower().endswith(".onnx") else name


def graph_path(fp32_graph: Path, precision: str) -> Path:
    """g_AtoB.onnx -> g_AtoB.fp16.onnx / g_AtoB.int8.onnx (the FP32 graph for fp32)."""
    infix = GRAPH_INFIX[canonical_precision(precision, tuple(GRAPH_INFIX))]
    return fp32_graph.with_name(_base_name(fp32_graph) + infix + ".onnx")


def sidecar_path(artifact: Path) -> Path:
    """g_AtoB.plan -> g_AtoB.plan.json, g_AtoB.engine -> g_AtoB.engine.json, g_AtoB.xml -> g_AtoB.xml.json."""
    return Path(artifact).with_name(Path(artifact).name + ".json")


def parity_path(artifact: Path) -> Path:
    return Path(artifact).with_name(_base_name(artifact) + ".parity.json")


def safety_path(artifact: Path) -> Path:
    """The FP16 safety report of a graph: g_AtoB.fp16.onnx -> g_AtoB.fp16.safety.json."""
    return Path(artifact).with_name(_base_name(artifact) + ".safety.json")


def rejected_path(artifact: Path) -> Path:
    """Where a graph that failed its gate is moved: g_AtoB.fp16.onnx -> g_AtoB.fp16.rejected.onnx,
    g_AtoB.plan -> g_AtoB.plan.rejected."""
    artifact = Path(artifact)
    if artifact.name.lower().endswith(".onnx"):
        return artifact.with_name(_base_name(artifact) + ".rejected.onnx")
    return artifact.with_name(artifact.name + ".rejected")


def engine_path(out_dir: Path, direction: str) -> Path:
    return Path(out_dir) / f"g_{direction}.plan"


def ir_path(out_dir: Path, direction: str) -> Path:
    return Path(out_dir) / f"g_{direction}.xml"


def ir_weights_path(xml: Path) -> Path:
    """An OpenVINO IR's weights: g_AtoB.xml -> g_AtoB.bin."""
    return Path(xml).with_suffix(".bin")


def onnx_path(out_dir: Path, direction: str, precision: str = "fp32") -> Path:
    return graph_path(Path(out_dir) / f"g_{direction}.onnx", precision)


# ---- model cards --------------------------------------------------------------------------------------------

def read_card(path: Path) -> ModelMeta:
    """The model card of any artifact kind. Foreign files without ours get marked reference defaults
    (ModelMeta.extra["card"] says so); a damaged card is a ConfigError naming the file."""
    path = Path(path)
    kind = kind_of(path)
    try:
        if kind.card == "onnx-metadata":
            card = ModelMeta.from_props(onnx_metadata(path))
            return card or fallback_meta(path, "no cgdeploy model card in the ONNX")
        if kind.card == "sidecar":
            card = read_sidecar_card(path, nested=kind.name == "tensorrt-engine")
            if card is None and kind.name == "openvino-ir":
                card = _ir_rt_info_card(path)
            if card is None and kind.name == "tensorrt-engine":
                raise ConfigError(f"{sidecar_path(path)}: missing engine sidecar; rebuild the engine with "
                                  "`cgdeploy export CHECKPOINT -o DIR --engine`")
            return card or fallback_meta(path, f"no {sidecar_path(path).name} sidecar")
    except ConfigError as e:
        if str(path) in str(e):
            raise
        raise ConfigError(f"{path}: {e}") from e
    from cyclegan_deploy.train.checkpoints import read_checkpoint_card  # torch only for torch artifacts

    return read_checkpoint_card(path)


def fallback_meta(path: Path, why: str) -> ModelMeta:
    """A card for artifacts without ours (foreign exports): reference ResNet defaults, marked as assumed."""
    return ModelMeta(model="unknown", source=Path(path).name, extra={"card": f"assumed defaults: {why}"})


def read_sidecar_card(artifact: Path, nested: bool = False) -> ModelMeta | None:
    """The card in `<artifact>.json`: the card itself (OpenVINO IR) or, nested=True (engine sidecars, which
    hold the build record too), under "model_card" only."""
    sidecar = sidecar_path(artifact)
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{sidecar}: unreadable sidecar ({e}); re-export {Path(artifact).name}") from e
    card = (data.get("model_card") if nested else data.get("model_card", data)) if isinstance(data, dict) else None
    if isinstance(card, str):
        return ModelMeta.from_json(card)
    if not isinstance(card, dict):
        raise ConfigError(f"{sidecar}: no model card in the sidecar; re-export {Path(artifact).name}")
    return ModelMeta.from_dict(card)


def _ir_rt_info_card(xml: Path) -> ModelMeta | None:
    """An OpenVINO IR written by export keeps the card in <rt_info><cgdeploy.model_card value=.../>."""
    try:
        node = ET.parse(xml).getroot().find(f"rt_info/{CARD_KEY}")
    except (OSError, ET.ParseError) as e:
        raise ConfigError(f"{xml}: not a readable OpenVINO IR ({e}); re-export it") from e
    value = None if node is None else node.get("value")
    return ModelMeta.from_json(value) if value else None


def _read_varint(f: BinaryIO) -> int | None:
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
    entry: dict[int, str] = {}
    f = io.BytesIO(data)
    while (tag := _read_varint(f)) is not None:
        size = _read_varint(f) or 0
        entry[tag >> 3] = f.read(size).decode("utf-8", "replace")
    return entry.get(1, ""), entry.get(2, "")


def onnx_metadata(path: Path) -> dict[str, str]:
    """ModelProto.metadata_props (field 14) read straight from the protobuf, skipping the weights.

    The runtime must not need the `onnx` package (an export-time dependency) just to read the model card.
    """
    props: dict[str, str] = {}
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from e
    with f:
        while (tag := _read_varint(f)) is not None:
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                _read_varint(f)
            elif wire in (1, 5):
                f.seek(8 if wire == 1 else 4, 1)
            elif wire == 2:
                size = _read_varint(f) or 0
                if number == 14:
                    key, value = _parse_entry(f.read(size))
                    props[key] = value
                else:
                    f.seek(size, 1)
            else:
                raise ConfigError(f"{path}: not a valid ONNX file (protobuf wire type {wire}); re-export it")
    return props


# ---- the one atomic writer ----------------------------------------------------------------------------------

def _umask() -> int:
    """The process umask, read without changing it (os.umask(0) then back would, for an instant, make files
    other threads create world-writable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): the classic dance, restored at once
    os.umask(mask)
    return mask


def commit(tmp: Path, path: Path, *, directory: bool = False) -> None:
    """Give `tmp` the permissions a plain open() would have (mkstemp/mkdtemp make 0600/0700) and rename it
    onto `path` in one step. An OSError names `path` (the user's file), not the temp name."""
    try:
        os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only when the block finishes without error.
    The temp file is removed on any error, Ctrl-C included. Permissions follow the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_name(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        commit(Path(tmp), path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `path`, renamed onto `path` when the block succeeds (an existing `path` is
    removed first only with replace=True); removed on any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_name(path), dir=path.parent))
    try:
        yield tmp
        if replace and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        commit(tmp, path, directory=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: Path, data: bytes | memoryview) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: Path, data: Any) -> Path:
    """Strict JSON: inf/NaN (not JSON) are written as null."""
    return write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """`value` with every inf/NaN float replaced by None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
