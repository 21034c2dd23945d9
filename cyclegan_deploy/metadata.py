"""The model card every artifact carries (ONNX metadata_props, engine/IR sidecars, our checkpoints).

Shared by export (writes it) and the runtime (reads it), so it must stay torch-free. Where a card is read
from each kind of file is artifacts.py's business; what a card says about an architecture (family,
multiple, scale, value ranges) is written by train/registry.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cyclegan_deploy.errors import ConfigError

CARD_KEY = "cgdeploy.model_card"  # one JSON value in ONNX metadata_props / sidecar files

# The one precision vocabulary. Artifacts, backends and reports use these names; aliases map onto them.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
PRECISION_ALIASES = {"fp32": "fp32", "f32": "fp32", "float32": "fp32", "fp16": "fp16", "f16": "fp16",
                     "half": "fp16", "float16": "fp16", "bf16": "bf16", "bfloat16": "bf16", "int8": "int8",
                     "i8": "int8", "u8": "int8"}
# OpenVINO names its inference precisions f32/f16/bf16 (INFERENCE_PRECISION_HINT); it has no int8 hint
OPENVINO_NAMES = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
REFERENCE_RANGE = (-1.0, 1.0)  # CycleGAN/pix2pix: (x/255 - 0.5)/0.5 in, the inverse out


def canonical_precision(text: str, allowed: tuple[str, ...] = PRECISIONS, what: str = "--precision",
                        auto: bool = False) -> str:
    """'f32' -> 'fp32', 'F16' -> 'fp16'...; with auto=True also 'auto' (the runtime picks); ConfigError naming
    the allowed values otherwise."""
    key = str(text).strip().lower()
    if auto and key == "auto":
        return "auto"
    name = PRECISION_ALIASES.get(key)
    if name is None or name not in allowed:
        choices = ", ".join(allowed) + (" or auto" if auto else "")
        raise ConfigError(f"{what} {text!r}: use {choices}")
    return name


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints and engines are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelMeta:
    arch: str = "resnet_9blocks"
    family: str = ""  # registry family (resnet | unet ...); "" on cards older than the registry
    ngf: int = 64
    n_blocks: int = 9  # ResNet blocks; 0 for U-Nets
    norm: str = "instance"  # instance | batch | none
    dropout: bool = False
    input_nc: int = 3
    output_nc: int = 3
    direction: str = "AtoB"
    model: str = "cyclegan"  # cyclegan | pix2pix | unknown (reference file)
    multiple: int = 4  # input H and W must be multiples of this (frames are padded to it)
    min_size: int = 0  # smallest input H/W its layers accept; 0 on cards older than the field (frames.min_size)
    scale: int = 1  # output H, W = scale x input H, W (super-resolution > 1); cards without it are 1
    # uint8 0..255 maps linearly onto input_range before the model, output_range maps back to 0..255 after
    # (lists, not tuples: the card must survive a JSON round trip unchanged)
    input_range: list[float] = field(default_factory=lambda: list(REFERENCE_RANGE))
    output_range: list[float] = field(default_factory=lambda: list(REFERENCE_RANGE))
    train_size: int = 256
    precision: str = "fp32"  # one of PRECISIONS: the arithmetic the artifact was made for
    source: str = ""  # file name of the checkpoint it came from
    source_sha256: str = ""
    exporter: str = ""
    opset: int = 0
    input_name: str = "input"
    output_name: str = "output"
    mode: str = "eval"  # batch-norm running stats, dropout off (documented for pix2pix)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_range = _range(self.input_range, "input_range")
        self.output_range = _range(self.output_range, "output_range")
        for name in ("scale", "multiple", "min_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "min_size" else 1):
                raise ConfigError(f"model card: {name} {value!r} must be a whole number >= "
                                  f"{0 if name == 'min_size' else 1}; re-export the model")
        if self.precision in PRECISION_ALIASES:  # a hand-edited "FP16" means fp16; unknown names stay visible
            self.precision = PRECISION_ALIASES[self.precision]
        elif self.precision.lower() in PRECISION_ALIASES:
            self.precision = PRECISION_ALIASES[self.precision.lower()]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        data = dict(data)
        # cards before value ranges wrote the reference's normalisation as (x/255 - mean)/std
        if "input_range" not in data and "norm_mean" in data:
            mean, std = float(data["norm_mean"]), float(data.get("norm_std", 0.5))
            if std <= 0:
                raise ConfigError(f"model card: norm_std {std} must be > 0; re-export the model")
            data["input_range"] = data["output_range"] = (-mean / std, (1 - mean) / std)
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"unreadable model card ({e}); re-export the model") from e

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"model card is not JSON ({e}); re-export the model") from e
        if not isinstance(data, dict):
            raise ConfigError("model card is not a JSON object; re-export the model")
        return cls.from_dict(data)

    def to_props(self) -> dict[str, str]:
        """Flat string map for ONNX metadata_props: the full card plus readable single keys."""
        props = {CARD_KEY: self.to_json()}
        for key in ("arch", "ngf", "n_blocks", "norm", "direction", "multiple", "scale", "train_size", "precision",
                    "source_sha256", "exporter", "opset"):
            props[key] = str(getattr(self, key))
        (ilo, ihi), (olo, ohi) = self.input_range, self.output_range
        props["normalization"] = f"input: x/255 -> [{ilo:g}, {ihi:g}]; output: [{olo:g}, {ohi:g}] -> x/255"
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMeta | None:
        text = props.get(CARD_KEY)
        return cls.from_json(text) if text else None


def _range(value: Any, name: str) -> list[float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"model card: {name} {value!r} is not a (low, high) pair; re-export the model") from None
    if not hi > lo:
        raise ConfigError(f"model card: {name} {value!r} must have high > low; re-export the model")
    return [lo, hi]
