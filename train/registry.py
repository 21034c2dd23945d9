"""Model families: the one place that knows architectures (spandrel's pattern: ordered specs, each with a
key-based `detect`, `build`, size multiple, output `scale` and value ranges).

Torch-free at import (the CLI validates --arch before torch loads); `build` imports the modules lazily.
Everything else asks here: GeneratorConfig validation, TrainConfig's multiple, checkpoint detection,
the card's family/multiple/scale/ranges, the exported graph's expected InstanceNormalization count.

Everything per-architecture is a function of the arch name, so the name says the scale of super-resolution
archs: srresnet_x2/x4, rrdbnet_x1/x2/x4 (like resnet_9blocks says its blocks).

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
    grow: int = 32  # RRDBNet's dense-block growth channels (num_grow_ch; ESRGAN's 32); unused by other families

    def __post_init__(self) -> None:
        family = family_for(self.arch, "--arch")
        if family.norm is not None:  # the architecture fixes its normalisation (SRResNet: batch, RRDBNet: none)
            self.norm, self.dropout = family.norm, False
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

    @property
    def scale(self) -> int:
        return self.family.scale(self.arch)

    def to_meta(self, **kwargs: object) -> ModelMeta:
        family = self.family
        meta = ModelMeta(arch=self.arch, family=family.name, ngf=self.ngf, n_blocks=self.blocks, norm=self.norm,
                         dropout=self.dropout, input_nc=self.input_nc, output_nc=self.output_nc,
                         model=family.model, multiple=family.multiple(self.arch),
                         min_size=family.min_size(self.arch), scale=family.scale(self.arch),
                         input_range=family.input_range, output_range=family.output_range,
                         train_size=family.train_size)
        for key, value in kwargs.items():
            setattr(meta, key, value)
        return meta

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def cli_flags(self) -> str:
        norm = f" --norm {self.norm}" if self.family.norm is None else ""
        return f"--arch {self.arch} --ngf {self.ngf}{norm}" + (" --dropout" if self.dropout else "")


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
    scale: Callable[[str], int] = lambda arch: 1  # output H, W = scale x input H, W
    input_range: tuple[float, float] = REFERENCE_RANGE
    output_range: tuple[float, float] = REFERENCE_RANGE
    norm: str | None = None  # the normalisation the architecture fixes; None: --norm chooses
    train_size: int = 256  # input side its published models were trained on (the card's default; parity sizes)
    graph_ops: tuple[str, ...] = ()  # op types the exported graph must contain (PixelShuffle -> DepthToSpace)
    legacy_keys: Callable[[State], State] | None = None  # older key layouts of its files -> this layout


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


# ---- super-resolution: SRResNet (SRGAN) and RRDBNet (ESRGAN / Real-ESRGAN) --------------------------------------

_SR = re.compile(r"(srresnet|rrdbnet)_x([1-9]\d*)")
SR_SCALES = {"srresnet": (2, 4), "rrdbnet": (1, 2, 4)}  # the one list of upscale factors (x1: RRDBNet restores)
SR_TRAIN_SCALES = tuple(sorted({s for scales in SR_SCALES.values() for s in scales if s > 1}))  # --model srgan
SR_ARCHS = tuple(f"{name}_x{s}" for name, scales in SR_SCALES.items() for s in scales if s in SR_TRAIN_SCALES)
SR_RANGE = (0.0, 1.0)  # both take RGB in [0, 1]; RRDBNet also returns [0, 1], SRResNet [-1, 1] (tanh)


def _sr_matcher(name: str) -> Callable[[str], bool]:
    def matches(arch: str) -> bool:
        m = _SR.fullmatch(arch)
        return m is not None and m.group(1) == name and int(m.group(2)) in SR_SCALES[name]
    return matches


def _sr_scale(arch: str) -> int:
    m = _SR.fullmatch(arch)
    return int(m.group(2)) if m else 1


def _indices(state: State, pattern: str) -> list[int]:
    """The distinct numbers `pattern`'s group 1 takes over the keys, sorted."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def _depth(state: State, pattern: str) -> int:
    """Block count = highest index + 1, so a file missing a middle block fails to load, naming it."""
    found = _indices(state, pattern)
    return found[-1] + 1 if found else 0


def _srresnet_detect(state: State) -> GeneratorConfig | None:
    first, last = state.get("conv_first.weight"), state.get("conv_last.weight")
    if first is None or last is None or first.ndim != 4 or first.shape[-1] != 9:
        return None
    scale = 2 ** _depth(state, r"upsample\.(\d+)\.")
    if scale not in SR_SCALES["srresnet"]:
        raise CheckpointError(f"SRResNet with x{scale} upsampling is not supported (x2 has one PixelShuffle stage, "
                              "x4 two)")
    return GeneratorConfig(arch=f"srresnet_x{scale}", ngf=int(first.shape[0]), input_nc=int(first.shape[1]),
                           output_nc=int(last.shape[0]), n_blocks=_depth(state, r"body\.(\d+)\."))


def _srresnet_build(cfg: GeneratorConfig) -> nn.Module:
    from cyclegan_deploy.train.sr_models import SRResNet

    return SRResNet(cfg.input_nc, cfg.output_nc, cfg.scale, cfg.ngf, cfg.blocks)


def _rrdb_detect(state: State) -> GeneratorConfig | None:
    first, last = state.get("conv_first.weight"), state.get("conv_last.weight")
    if first is None or last is None or "conv_body.weight" not in state or first.ndim != 4 or first.shape[-1] != 3:
        return None
    ups = max(_indices(state, r"conv_up(\d+)\."), default=0)
    if ups != 2:
        raise CheckpointError(f"RRDBNet with {ups} upsampling conv(s) (conv_up*, x{2 ** ups} before any unshuffle) "
                              "is not supported: the ESRGAN/Real-ESRGAN layout has conv_up1 and conv_up2")
    # Real-ESRGAN's x2/x1 models pixel-unshuffle RGB by 2/4 first: conv_first sees 4x/16x the output channels
    in_ch, out_ch = int(first.shape[1]), int(last.shape[0])
    unshuffle = {16 * out_ch: 4, 4 * out_ch: 2}.get(in_ch, 1)
    grow = next((int(v.shape[0]) for k, v in state.items() if re.fullmatch(r"body\.\d+\.rdb1\.conv1\.weight", k)),
                32)
    return GeneratorConfig(arch=f"rrdbnet_x{4 // unshuffle}", ngf=int(first.shape[0]), input_nc=in_ch // unshuffle**2,
                           output_nc=out_ch, n_blocks=_depth(state, r"body\.(\d+)\.rdb"), grow=grow)


def _rrdb_build(cfg: GeneratorConfig) -> nn.Module:
    from cyclegan_deploy.train.sr_models import RRDBNet

    return RRDBNet(cfg.input_nc, cfg.output_nc, cfg.scale, cfg.ngf, cfg.blocks, cfg.grow)


# Older RRDBNet files (facts from spandrel's ESRGAN loader): BSRGAN/RealSR name the same layers RRDB_trunk,
# trunk_conv, upconv1/2, HRconv; the original ESRGAN repository keeps them in one Sequential `model`:
# model.0 conv_first, model.1.sub.<i>.RDB<j>.conv<k>.0 the blocks, model.1.sub.<n_blocks> conv_body,
# model.3/model.6 the upsampling convs, model.8 conv_hr, model.10 conv_last.
_RRDB_RENAMES = ((r"RRDB_trunk\.(\d+)\.RDB(\d)\.", r"body.\1.rdb\2."), (r"trunk_conv\.", "conv_body."),
                 (r"upconv(\d)\.", r"conv_up\1."), (r"HRconv\.", "conv_hr."),
                 (r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3."),
                 (r"model\.1\.sub\.\d+\.(weight|bias)$", r"conv_body.\1"), (r"model\.0\.", "conv_first."),
                 (r"model\.3\.", "conv_up1."), (r"model\.6\.", "conv_up2."), (r"model\.8\.", "conv_hr."),
                 (r"model\.10\.", "conv_last."))


def _rrdb_legacy_keys(state: State) -> State:
    if not any(k.startswith(("RRDB_trunk.", "model.1.sub.")) for k in state):
        return state
    if any(".conv1x1." in k for k in state):
        raise CheckpointError("ESRGAN+ keys (RDB conv1x1 layers) are not supported; RRDBNet files of ESRGAN, "
                              "BSRGAN/RealSR and Real-ESRGAN are")
    last = max(_indices(state, r"model\.(\d+)\."), default=10)
    if last != 10:  # model.<3k> are the k upsampling convs, conv_last is model.<3k+4>
        raise CheckpointError(f"an ESRGAN file with {(last - 4) // 3} upsampling conv(s) (x{2 ** ((last - 4) // 3)}) "
                              "is not supported; x4 ESRGAN files (conv_last at model.10) are")
    out = {}
    for key, value in state.items():
        for pattern, new in _RRDB_RENAMES:
            key, hits = re.subn("^" + pattern, new, key)
            if hits:
                break
        out[key] = value
    return out


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
    Family("srresnet", "an SRResNet (SRGAN)", "srresnet_x4, srresnet_x2", "srgan", matches=_sr_matcher("srresnet"),
           multiple=lambda arch: 1, min_size=lambda arch: 1,  # every conv keeps the size (zero padding)
           blocks=lambda arch: 16, with_blocks=lambda arch, n: arch, detect=_srresnet_detect, build=_srresnet_build,
           instance_norms=lambda card: 0, reflect_pad=False, scale=_sr_scale, input_range=SR_RANGE,
           output_range=REFERENCE_RANGE, norm="batch",
           train_size=24,  # the paper's 96x96 HR crops at x4 (the card says the LR input side)
           graph_ops=("DepthToSpace",)),
    Family("rrdbnet", "an RRDBNet (ESRGAN/Real-ESRGAN)", "rrdbnet_x4, rrdbnet_x2, rrdbnet_x1", "esrgan",
           matches=_sr_matcher("rrdbnet"),
           # the pixel-unshuffle of x2/x1 needs sides divisible by 2/4
           multiple=lambda arch: 4 // _sr_scale(arch), min_size=lambda arch: 4 // _sr_scale(arch),
           blocks=lambda arch: 23, with_blocks=lambda arch, n: arch, detect=_rrdb_detect, build=_rrdb_build,
           instance_norms=lambda card: 0, reflect_pad=False, scale=_sr_scale, input_range=SR_RANGE,
           output_range=SR_RANGE, norm="none",
           train_size=64,  # Real-ESRGAN's 256x256 HR crops at x4
           graph_ops=("Resize",), legacy_keys=_rrdb_legacy_keys),
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


def canonical_keys(state: State) -> State:
    """The state dict in its family's current key layout (older layouts of a family's files renamed)."""
    for family in FAMILIES:
        if family.legacy_keys is not None:
            state = family.legacy_keys(state)
    return state


def detect(state: State) -> GeneratorConfig:
    """Recognise a generator from its state-dict keys (arch, width, blocks, norm, dropout, channels, scale)."""
    for family in FAMILIES:
        cfg = family.detect(state)
        if cfg is not None:
            return cfg
    raise CheckpointError(f"keys match neither {' nor '.join(f.title for f in FAMILIES)} generator of a known "
                          f"layout (first keys: {', '.join(list(state)[:4])})")


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    return cfg.family.build(cfg)
