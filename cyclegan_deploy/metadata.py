"""The model card every artifact carries (ONNX metadata_props, engine/IR sidecars, our checkpoints).

Shared by export (writes it) and the runtime (reads it), so it must stay torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cyclegan_deploy.errors import ConfigError

CARD_KEY = "cgdeploy.model_card"  # one JSON value in ONNX metadata_props / sidecar files
ARCHS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints and engines are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def size_multiple(arch: str) -> int:
    """Spatial multiple the generator needs: ResNet downsamples twice (4); a U-Net by its depth."""
    if arch.startswith("resnet"):
        return 4
    if arch == "unet_256":
        return 256
    if arch == "unet_128":
        return 128
    raise ConfigError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")


@dataclass
class ModelMeta:
    arch: str = "resnet_9blocks"
    ngf: int = 64
    n_blocks: int = 9  # ResNet blocks; 0 for U-Nets
    norm: str = "instance"  # instance | batch | none
    dropout: bool = False
    input_nc: int = 3
    output_nc: int = 3
    direction: str = "AtoB"
    model: str = "cyclegan"  # cyclegan | pix2pix | unknown (reference file)
    multiple: int = 4
    # (x/255 - mean)/std on input, inverse on output: the reference's normalisation
    norm_mean: float = 0.5
    norm_std: float = 0.5
    train_size: int = 256
    precision: str = "fp32"  # fp32 | fp16 (graph/engine) | bf16 (OpenVINO IR hint)
    source: str = ""  # file name of the checkpoint it came from
    source_sha256: str = ""
    exporter: str = ""
    opset: int = 0
    input_name: str = "input"
    output_name: str = "output"
    mode: str = "eval"  # batch-norm running stats, dropout off (documented for pix2pix)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        return cls.from_dict(json.loads(text))

    def to_props(self) -> dict[str, str]:
        """Flat string map for ONNX metadata_props: the full card plus readable single keys."""
        props = {CARD_KEY: self.to_json()}
        for key in ("arch", "ngf", "n_blocks", "norm", "direction", "multiple", "train_size", "precision",
                    "source_sha256", "exporter", "opset"):
            props[key] = str(getattr(self, key))
        props["normalization"] = f"(x/255-{self.norm_mean})/{self.norm_std}"
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMeta | None:
        text = props.get(CARD_KEY)
        return cls.from_json(text) if text else None
