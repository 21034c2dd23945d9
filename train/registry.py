"""Model families: the one place that knows architectures (spandrel's pattern: ordered specs, each with a
key-based `detect`, `build`, size multiple, output `scale` and value ranges).

Torch-free at import (the CLI validates --arch before torch loads); `build` imports the modules lazily.
Everything else asks here: GeneratorConfig validation, TrainConfig's multiple, checkpoint detection,
the card's family/multiple/scale/ranges, the exported graph's expected InstanceNormalization count.

Adding a family: its modules (train/models.py or a module of its own) and a Family row in FAMILIES here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cyclegan_deploy.errors import CheckpointError, ConfigError
from cyclegan_deploy.metadata import REFERENCE_RANGE, ModelMeta

if TYPE_CHECKING:
    from torch import nn

State = Mapping[str, Any]  # key -> tensor (only .ndim/.shape are read: detection needs no torch import)


@dataclass
class GeneratorConfig:
    arch: str = "resnet_9blocks"
    ngf: int = 64
    norm: str = "instance"
    dropout: bool = False
    input_nc: int = 3
    output_nc: int = 3
    # resnet_<n>blocks names the block count; other counts are allowed via n_blocks
    n_blocks: int | None = None

    def __post_init__(self) -> None:
        family = family_for(self.arch, "--arch")
        if self.n_blocks is None:
            self.n_blocks = family.blocks(self.arch)
        else:  # an explicit block count renames the arch (resnet_9blocks + 3 blocks -> resnet_3blocks)
            self.arch = family.with_blocks(self.arch, self.n_blocks)

    @property
    def family(self) -> Family:
        return family_for(self.arch)

    @property
    def blocks(self) -> int:
        return self.n_blocks or 0

    def to_meta(self, **kwargs: object) -> ModelMeta:
        family = self.family
        meta = ModelMeta(arch=self.arch, family=family.name, ngf=self.ngf, n_blocks=self.blocks, norm=self.norm,
                         dropout=self.dropout, input_nc=self.input_nc, output_nc=self.output_nc,
                         model=family.model, multiple=family.multiple(self.arch),
                         min_size=family.min_size(self.arch), scale=family.scale,
                         input_range=family.input_range, output_range=family.output_range)
        for key, value in kwargs.items():
            setattr(meta, key, value)
        return meta

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def cli_flags(self) -> str:
        return f"--arch {self.arch} --ngf {self.ngf} --norm {self.norm}" + (" --dropout" if self.dropout else "")


@dataclass(frozen=True)
class Family:
    name: str
    title: str  # for messages: "a ResNet"
    archs: str  # the arch names it accepts, for help and error texts
    model: str  # the training recipe its published checkpoints come from (card `model` default)
    matches: Callable[[str], bool]
    multiple: Callable[[str], int]  # input H/W must be multiples of this
    min_size: Callable[[str], int]  # the smallest input H/W its layers accept (frames pad smaller inputs to it)
    blocks: Callable[[str], int | None]  # block count named by the arch (resnet_9blocks -> 9)
    with_blocks: Callable[[str, int], str]  # the arch name for another block count
    detect: Callable[[State], GeneratorConfig | None]
    build: Callable[[GeneratorConfig], nn.Module]
    instance_norms: Callable[[ModelMeta], int | None]  # InstanceNorm2d count, to check an exported graph
    reflect_pad: bool  # the graph must contain Pad(mode=reflect)
    scale: int = 1
    input_range: tuple[float, float] = REFERENCE_RANGE
    output_range: tuple[float, float] = REFERENCE_RANGE


def _norm_from(state: State, norm_key: str, conv_bias_key: str) -> str:
    if f"{norm_key}.weight" in state:
        return "batch"
    if f"{norm_key}.running_mean" in state or conv_bias_key in state:
        return "instance"  # legacy instance-norm stats, or the bias the reference adds only with instance norm
    return "none"


# ---- ResNet (CycleGAN) ----------------------------------------------------------------------------------------

_RESNET = re.compile(r"resnet_(\d+)blocks")


def _resnet_detect(state: State) -> GeneratorConfig | None:
    first = state.get("model.1.weight")
    if first is None or first.ndim != 4 or first.shape[-1] != 7:
        return None
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
    # with dropout the block's second conv moves from index 5 to 6 (index 6 is otherwise the norm)
    key6 = f"model.{blocks[0]}.conv_block.6.weight" if blocks else ""
    dropout = key6 in state and state[key6].ndim == 4
    convs = [int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.weight$", k))]
    last = state[f"model.{max(convs)}.weight"]
    return GeneratorConfig(arch=f"resnet_{len(blocks)}blocks", ngf=int(first.shape[0]),
                           norm=_norm_from(state, "model.2", "model.1.bias"), dropout=dropout,
                           input_nc=int(first.shape[1]), output_nc=int(last.shape[0]), n_blocks=len(blocks))


def _resnet_build(cfg: GeneratorConfig) -> nn.Module:
    from cyclegan_deploy.train.models import ResnetGenerator

    return ResnetGenerator(cfg.input_nc, cfg.output_nc, cfg.ngf, cfg.norm, cfg.dropout, cfg.blocks)


def _resnet_blocks(arch: str) -> int | None:
    m = _RESNET.fullmatch(arch)
    return int(m.group(1)) if m else None


# ---- U-Net (pix2pix) ----------------------------------------------------------------------------------------

UNET_DOWNS = {"unet_256": 8, "unet_128": 7}  # downsamplings; the input multiple is 2**downs


def _unet_detect(state: State) -> GeneratorConfig | None:
    outer = state.get("model.model.0.weight")
    if outer is None or outer.ndim != 4 or outer.shape[-1] != 4:
        return None
    depth, prefix = 2, "model.model.1.model."
    while any(k.startswith(prefix + "3.model.") for k in state):
        prefix += "3.model."
        depth += 1
    arch = next((a for a, d in UNET_DOWNS.items() if d == depth), None)
    if arch is None:
        raise CheckpointError(f"U-Net with {depth} downsamplings is not supported (unet_128 has 7, unet_256 8)")
    up = state["model.model.3.weight"]
    return GeneratorConfig(arch=arch, ngf=int(outer.shape[0]), input_nc=int(outer.shape[1]),
                           output_nc=int(up.shape[1]),
                           norm=_norm_from(state, "model.model.1.model.2", "model.model.1.model.1.bias"))


def _unet_build(cfg: GeneratorConfig) -> nn.Module:
    from cyclegan_deploy.train.models import UnetGenerator

    return UnetGenerator(cfg.input_nc, cfg.output_nc, UNET_DOWNS[cfg.arch], cfg.ngf, cfg.norm, cfg.dropout)


FAMILIES: tuple[Family, ...] = (
    Family("resnet", "a ResNet", "resnet_9blocks, resnet_6blocks, resnet_<n>blocks", "cyclegan",
           matches=lambda arch: _RESNET.fullmatch(arch) is not None, multiple=lambda arch: 4,  # two stride-2 convs
           # the blocks reflect-pad the H/4 bottleneck by 1, which needs 2 pixels there: H >= 8
           min_size=lambda arch: 8,
           blocks=_resnet_blocks, with_blocks=lambda arch, n: f"resnet_{n}blocks", detect=_resnet_detect,
           build=_resnet_build,
           instance_norms=lambda card: 5 + 2 * card.n_blocks,  # stem, 2 down, 2 per block, 2 up
           reflect_pad=True),
    Family("unet", "a U-Net", "unet_256, unet_128", "pix2pix", matches=lambda arch: arch in UNET_DOWNS,
           multiple=lambda arch: 2 ** UNET_DOWNS[arch], min_size=lambda arch: 2 ** UNET_DOWNS[arch],  # 1x1 bottleneck
           blocks=lambda arch: 0, with_blocks=lambda arch, n: arch,
           detect=_unet_detect, build=_unet_build,
           # innermost has one, outermost none
           instance_norms=lambda card: 2 * (UNET_DOWNS[card.arch] - 2) + 1 if card.arch in UNET_DOWNS else None,
           reflect_pad=False),
)
ARCH_HELP = "; ".join(f.archs for f in FAMILIES)


def family_for(arch: str, option: str = "arch") -> Family:
    for family in FAMILIES:
        if family.matches(arch):
            return family
    if arch.startswith("resnet_") and arch.endswith("blocks"):
        raise ConfigError(f"{option} {arch!r}: the block count must be a number, e.g. resnet_6blocks")
    raise ConfigError(f"unknown {option} {arch!r}; use one of {ARCH_HELP}")


def family_of_card(card: ModelMeta) -> Family | None:
    """The card's family (by name, else by arch for cards older than the registry); None if unknown."""
    for family in FAMILIES:
        if family.name == card.family or (not card.family and family.matches(card.arch)):
            return family
    return None


def detect(state: State) -> GeneratorConfig:
    """Recognise a generator from its state-dict keys (arch, width, blocks, norm, dropout, channels)."""
    for family in FAMILIES:
        cfg = family.detect(state)
        if cfg is not None:
            return cfg
    titles = [f.title for f in FAMILIES]
    raise CheckpointError(f"keys match neither {', '.join(titles[:-1])} nor {titles[-1]} generator of the reference "
                          f"layout (first keys: {', '.join(list(state)[:4])})")


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    return cfg.family.build(cfg)
