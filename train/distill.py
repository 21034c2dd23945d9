"""Distillation into a narrow student, as GAN Compression's distillation stage does it (Li et al., CVPR 2020):
a ResNet student in the reference layout learns from a frozen teacher's outputs (L1 x lambda_distill), an LSGAN
discriminator on the target domain keeps its outputs sharp (x lambda_gan), and intermediate features are matched
through learned 1x1 convolutions (MSE x lambda_feature). No cycle loss.

The student trains through the same loop as CycleGAN/pix2pix (seeded, exact --resume, Ctrl-C/SIGTERM, budget,
losses, samples); the teacher is not trained, not checkpointed, and its file hash is checked on --resume.

What the discriminator sees as real (`gan_real`): by default the teacher's outputs, so every term pulls the
student towards the teacher. GAN Compression shows D the dataset's real target images instead (`data`: trainB, or
the B halves of pix2pix pairs; a plain folder of inputs has none, so it falls back to the teacher). Measured on
the trained ResNet-9 teacher of benchmarks/ (ngf 16 / 6-block student, 400 steps of batch 4, same seed): with
`data` the distillation L1 stalled at 0.077 and held-out PSNR vs the teacher was 26.0 dB; with `teacher`, 0.042
and 28.4 dB — `data` fights the distillation term wherever the teacher differs from real B.

The GAN term itself costs fidelity to the teacher: on the same teacher, an ngf 8 / 9-block student after 1000
steps of batch 4 (same seed) reached 28.2 dB held-out PSNR vs the teacher with `lambda_gan` 1 and 31.0 dB with 0
(task PSNR 20.49 vs 20.68 dB; the teacher's 20.62). GAN Compression keeps the term for perceptual sharpness (FID),
which PSNR does not reward; the default stays the paper's 1, and benchmarks/distill.py measures with 0. With
`lambda_gan` 0 the discriminator is neither run nor trained, so a step costs less.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.nn import functional as F

from cyclegan_deploy.errors import CheckpointError, ConfigError
from cyclegan_deploy.metadata import ModelMeta, sha256_file
from cyclegan_deploy.train.base import GanModel, set_requires_grad
from cyclegan_deploy.train.checkpoints import load_generator, resolve_generator_path, save_generator
from cyclegan_deploy.train.config import CONFIG_NAME, TrainConfig
from cyclegan_deploy.train.data import distill_layout
from cyclegan_deploy.train.losses import GANLoss, ImagePool
from cyclegan_deploy.train.registry import GeneratorConfig, build_generator

RESNET_FIRST_BLOCK = 10  # index of the first ResnetBlock in the reference ResnetGenerator's `model` Sequential
CARD_SIZES = {"256x256": (256, 256), "720x1280": (720, 1280)}


def feature_pairs(student_blocks: int, teacher_blocks: int) -> list[tuple[int, int]]:
    """(student, teacher) indices into `model` whose outputs are matched: the end of the down-sampling stem
    (index 9, the last ReLU before the blocks) and the blocks ending each third of the depth, by relative
    depth (a 6-block student's blocks 2, 4, 6 meet a 9-block teacher's 3, 6, 9)."""
    pairs = [(RESNET_FIRST_BLOCK - 1, RESNET_FIRST_BLOCK - 1)]
    if student_blocks and teacher_blocks:
        for third in (1, 2, 3):
            s = max(1, round(student_blocks * third / 3))
            t = max(1, round(teacher_blocks * third / 3))
            pair = (RESNET_FIRST_BLOCK + s - 1, RESNET_FIRST_BLOCK + t - 1)
            if pair not in pairs:
                pairs.append(pair)
    return pairs


class _Features:
    """Forward hooks keeping the outputs of chosen `model` layers of a ResNet generator."""

    def __init__(self, net: nn.Module, indices: list[int]) -> None:
        self.out: dict[int, torch.Tensor] = {}
        layers = cast(nn.Sequential, net.model)
        for i in indices:
            layers[i].register_forward_hook(self._keeper(i))

    def _keeper(self, index: int) -> Any:
        def keep(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
            self.out[index] = output
        return keep


def _channels(net: nn.Module, index: int) -> int:
    """Output channels of `model[index]` (a ReLU after a conv, or a ResnetBlock)."""
    layers = list(cast(nn.Sequential, net.model))
    for layer in reversed(layers[:index + 1]):
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        if convs:
            return int(convs[-1].out_channels)
    raise ConfigError(f"no convolution before layer {index}")


class Distiller(GanModel):
    loss_names: ClassVar[tuple[str, ...]] = ("G_distill", "G_GAN", "G_feature", "D_real", "D_fake")
    visual_names: ClassVar[tuple[str, ...]] = ("real_A", "teacher", "student")

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.teacher, self.teacher_meta = load_teacher(cfg)
        self.teacher.to(device)
        student = self._generator()
        self.pairs: list[tuple[int, int]] = []
        if self.teacher_meta.family == "resnet" and cfg.lambda_feature > 0:
            self.pairs = feature_pairs(cfg.blocks, self.teacher_meta.n_blocks)
        # one 1x1 conv per matched pair lifts the student's channels to the teacher's (trained with G, dropped after)
        adapters = nn.ModuleList(nn.Conv2d(_channels(student, s), _channels(self.teacher, t), 1)
                                 for s, t in self.pairs).to(device)
        self.nets = {"G": student, "D": self._discriminator(3), "F": adapters}
        self.optimizers = {"G": self._adam(student, adapters), "D": self._adam(self.nets["D"])}
        self.pools = {"fake_B": ImagePool(cfg.pool_size, seed=f"{cfg.seed}-fake_B")}
        self.gan_loss = GANLoss("lsgan").to(device)
        self._student_features = _Features(student, [s for s, _ in self.pairs])
        self._teacher_features = _Features(self.teacher, [t for _, t in self.pairs])
        self.last_losses: dict[str, float] = {}
        self._finish_setup()

    @classmethod
    def passes(cls, cfg: TrainConfig) -> tuple[int, int]:
        return 1, 2  # the student's output (the teacher runs without grad); D(student) and D(real) kept

    def optimize(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg, student, d = self.cfg, self.nets["G"], self.nets["D"]
        real_a = batch["A"].to(self.device, non_blocking=True)
        with torch.no_grad(), self.autocast():
            target = self.teacher(real_a).float()
        teacher_features = {t: self._teacher_features.out[t].detach() for _, t in self.pairs}
        real_b = batch["B"].to(self.device, non_blocking=True) if cfg.gan_real == "data" and "B" in batch else target

        use_gan = cfg.lambda_gan > 0  # with weight 0, D is neither run nor trained (its cost saved)
        set_requires_grad((d,), False)
        with self.autocast():
            fake_b = student(real_a)
            loss_distill = F.l1_loss(fake_b.float(), target) * cfg.lambda_distill
            loss_gan = self.gan_loss(d(fake_b), True) * cfg.lambda_gan if use_gan else real_a.new_zeros(())
            loss_feature = real_a.new_zeros(())
            for adapter, (s, t) in zip(self.nets["F"], self.pairs, strict=True):
                mapped = adapter(self._student_features.out[s]).float()
                loss_feature = loss_feature + F.mse_loss(mapped, teacher_features[t])
            loss_feature = loss_feature * cfg.lambda_feature
            loss_g = loss_distill + loss_gan + loss_feature
        self.step(loss_g, self.optimizers["G"])

        set_requires_grad((d,), True)
        loss_d_real = loss_d_fake = real_a.new_zeros(())
        if use_gan:
            with self.autocast():
                fake = self.pools["fake_B"].query(fake_b).detach()
                loss_d_real = self.gan_loss(d(real_b), True)
                loss_d_fake = self.gan_loss(d(fake), False)
                loss_d = (loss_d_real + loss_d_fake) * 0.5
            self.step(loss_d, self.optimizers["D"])
        self.scaler.update()

        losses = (loss_distill, loss_gan, loss_feature, loss_d_real, loss_d_fake)
        self.last_losses = {name: float(v.detach()) for name, v in zip(self.loss_names, losses, strict=True)}
        return self.last_losses

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        with self.eval_mode(), self.autocast():
            out = {"real_A": real_a, "teacher": self.teacher(real_a), "student": self.nets["G"](real_a)}
        return {k: v.float() for k, v in out.items()}

    def generator_files(self) -> dict[str, tuple[str, str]]:
        return {"G": ("G", self.teacher_meta.direction)}

    def save_generators(self, run_dir: Path, prefix: str) -> list[Path]:
        """The student's file carries a card like any generator's plus extra["distill"]: the teacher, the MACs of
        both and the loss weights and latest values."""
        path = run_dir / f"{prefix}_net_G.pth"
        meta = self.cfg.to_meta(direction=self.teacher_meta.direction)
        meta.model = self.teacher_meta.model  # the student does the teacher's job (cyclegan/pix2pix translation)
        meta.extra = {"distill": self.card()}
        save_generator(self.nets["G"], meta, path)
        return [path]

    @functools.cached_property
    def _macs(self) -> tuple[dict[str, int], dict[str, int]]:
        """(student, teacher) MACs per card size: fixed by the architectures, counted once (cards are written
        every epoch)."""
        return sized_macs(self.cfg.generator()), sized_macs(card_config(self.teacher_meta))

    def card(self) -> dict[str, Any]:
        t, cfg = self.teacher_meta, self.cfg
        student, teacher = self._macs
        macs = {size: {"student": student[size], "teacher": teacher[size]} for size in CARD_SIZES}
        return {"teacher": Path(cfg.teacher).name, "teacher_sha256": cfg.teacher_sha256, "teacher_arch": t.arch,
                "teacher_ngf": t.ngf, "teacher_n_blocks": t.n_blocks, "macs": macs,
                "mac_ratio": round(macs["256x256"]["teacher"] / max(1, macs["256x256"]["student"]), 2),
                "lambdas": {"distill": cfg.lambda_distill, "gan": cfg.lambda_gan, "feature": cfg.lambda_feature},
                "feature_pairs": [[s, t] for s, t in self.pairs], "losses": self.last_losses}


def card_config(meta: ModelMeta) -> GeneratorConfig:
    return GeneratorConfig(arch=meta.arch, ngf=meta.ngf, norm=meta.norm, dropout=meta.dropout,
                           input_nc=meta.input_nc, output_nc=meta.output_nc, n_blocks=meta.n_blocks or None)


def sized_macs(cfg: GeneratorConfig) -> dict[str, int]:
    """generator_macs at each CARD_SIZES entry ("256x256", "720x1280")."""
    return {size: generator_macs(cfg, h, w) for size, (h, w) in CARD_SIZES.items()}


def generator_macs(cfg: GeneratorConfig, height: int, width: int) -> int:
    """Convolution MACs of one height x width frame, from a meta-device build, at the size the runtime really runs
    (padded to the family's multiple: a U-Net takes multiples of 128/256). Transposed convolutions count their
    real MACs (input pixels x Cin x Cout x k); GAN Compression counts them densely (ResNet-9 ngf 64 at 256x256:
    56.8 G there, 49.6 G here)."""
    from cyclegan_deploy.bench.metrics import count_macs_torch
    from cyclegan_deploy.frames import padded_size

    with torch.device("meta"):
        net = build_generator(cfg)
    family = cfg.family
    side = max(family.min_size(cfg.arch), 1)
    h, w = padded_size(max(height, side), max(width, side), family.multiple(cfg.arch))
    return count_macs_torch(net, h, w)["macs"]


def load_teacher(cfg: TrainConfig) -> tuple[nn.Module, ModelMeta]:
    """The frozen teacher; on --resume its file must be the one the run started with."""
    path = Path(cfg.teacher)
    if cfg.teacher_sha256 and path.is_file() and sha256_file(path) != cfg.teacher_sha256:
        raise ConfigError(f"{path}: the teacher file changed since this run started (sha256 differs from "
                          f"{cfg.run_dir}/{CONFIG_NAME}); restore it, or distill into a new run dir")
    teacher, meta = load_generator(path)
    if meta.scale != 1 or meta.input_nc != 3 or meta.output_nc != 3:
        raise CheckpointError(f"{path}: a {meta.arch} with scale {meta.scale} and {meta.input_nc}->{meta.output_nc} "
                              "channels; distillation takes RGB image-to-image generators (CycleGAN/pix2pix)")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval(), meta


def teacher_data(teacher: Path) -> tuple[str, dict[str, Any]]:
    """(data root, its training settings) of the run a teacher came from, or ("", {}) when it has no run dir."""
    config = (teacher if teacher.is_dir() else teacher.parent) / CONFIG_NAME
    if not config.is_file():
        return "", {}
    try:
        saved = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError):
        return "", {}
    return str(saved.get("dataroot", "")), saved


def distill_config(teacher: str | Path, run_dir: str | Path, data: str | Path | None = None,
                   **overrides: Any) -> TrainConfig:
    """A new distillation run's config: the teacher resolved to its generator file and hashed, the data (the
    teacher run's own unless given) and, from the teacher run, the image sizes it trained at."""
    teacher = Path(teacher)
    if not teacher.exists():
        raise CheckpointError(f"{teacher}: teacher not found; pass a run dir of `cgdeploy train`, a generator file "
                              "or a reference *_net_G*.pth")
    file = resolve_generator_path(teacher)
    _, meta = load_generator(file)  # fails early, with the standard one-line errors, on a bad teacher
    root, saved = teacher_data(teacher)
    dataroot = str(data) if data is not None else root
    if not dataroot:
        raise ConfigError(f"{teacher}: no training run beside this teacher to take images from; pass --data with a "
                          "folder of input images (or a data root with trainA/ and trainB/)")
    if not Path(dataroot).is_dir():
        where = "" if data is not None else f" (the data root {teacher}'s run trained on)"
        raise ConfigError(f"{dataroot}: data folder not found{where}; pass --data with a folder of input images")
    values: dict[str, Any] = {"preprocess": saved.get("preprocess"), "load_size": saved.get("load_size"),
                              "crop_size": saved.get("crop_size")} if data is None or Path(data) == Path(root) else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values = arch_by_blocks(values)
    cfg = TrainConfig.for_model("distill", dataroot=dataroot, run_dir=str(run_dir), teacher=str(file.resolve()),
                                teacher_sha256=sha256_file(file), direction=meta.direction, **values)
    _check_teacher_fits(cfg, meta, file)
    layout, folder = distill_layout(Path(dataroot), cfg.direction)
    if cfg.gan_real == "data" and layout == "inputs":
        raise ConfigError(f"{dataroot}: --gan-real data needs the target domain (trainA/ + trainB/, or train/ with "
                          f"A|B pairs); distillation reads only input images here ({folder}): use --gan-real teacher")
    return cfg


def arch_by_blocks(options: dict[str, Any]) -> dict[str, Any]:
    """`n_blocks` given as the student's arch name (resnet_<n>blocks), so config.json says what was built and a
    --resume with the run's own --n-blocks compares equal."""
    options = dict(options)
    if options.get("n_blocks") is not None:
        options["netG"] = f"resnet_{options.pop('n_blocks')}blocks"
    return options


def _check_teacher_fits(cfg: TrainConfig, meta: ModelMeta, file: Path) -> None:
    """The training crops go through the teacher too: they must be sizes its layers take (a U-Net needs
    multiples of 128/256), not only the student's multiple of 4."""
    side = cfg.crop_size if "crop" in cfg.preprocess else cfg.load_size
    multiple = math.lcm(meta.multiple, cfg.multiple)
    if side % multiple or side < meta.min_size:
        fit = max(multiple, -(-max(side, meta.min_size) // multiple) * multiple)
        option = "--crop-size" if "crop" in cfg.preprocess else "--load-size"
        raise ConfigError(f"{file}: the teacher ({meta.arch}) takes sizes in multiples of {meta.multiple} (at least "
                          f"{max(meta.min_size, meta.multiple)}), but {option} is {side}; use {option} {fit}"
                          + (f" --load-size {max(fit, cfg.load_size)}" if option == "--crop-size" else ""))
