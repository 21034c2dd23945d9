"""Training options. Defaults are the reference implementation's (junyanz/pytorch-CycleGAN-and-pix2pix,
base_options.py / train_options.py), so a run with no options is a reference run.

Torch-free on purpose: the CLI builds and validates a config before anything heavy is imported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cyclegan_deploy.artifacts import write_text
from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.machine import allowed_cpus
from cyclegan_deploy.metadata import ModelMeta, sha256_file
from cyclegan_deploy.train.registry import SR_ARCHS, SR_TRAIN_SCALES, GeneratorConfig, family_for

MODELS = ("cyclegan", "pix2pix", "distill", "srgan")
PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
NORMS = ("instance", "batch", "none")
NETDS = ("basic", "n_layers", "pixel")
GAN_MODES = ("lsgan", "vanilla")
GAN_REALS = ("teacher", "data")
DEVICES = ("auto", "cpu", "cuda")
DIRECTIONS = ("AtoB", "BtoA")
CONFIG_NAME = "config.json"

# Values that differ between the two models in the reference (pix2pix sets them in its
# modify_commandline_options); `TrainConfig.for_model` applies them unless given explicitly.
PIX2PIX_DEFAULTS: dict[str, Any] = {"netG": "unet_256", "norm": "batch", "dropout": True, "gan_mode": "vanilla",
                                    "pool_size": 0, "lambda_L1": 100.0}
# distillation (GAN Compression's distiller): a narrow 6-block ResNet student, LSGAN, no image pool
DISTILL_DEFAULTS: dict[str, Any] = {"netG": "resnet_6blocks", "ngf": 16, "pool_size": 0}
# SRGAN (Ledig et al. 2017): SRResNet x4, the paper's 96x96 HR crops, batch 16, Adam(1e-4, beta1 0.9), BCE GAN; the
# epochs fit a CPU (the paper ran 10^6 pretraining and 2x10^5 GAN iterations on a GPU)
SRGAN_DEFAULTS: dict[str, Any] = {"netG": "srresnet_x4", "crop_size": 96, "load_size": 96, "preprocess": "crop",
                                  "batch_size": 16, "lr": 1e-4, "beta1": 0.9, "gan_mode": "vanilla", "pool_size": 0,
                                  "pretrain_epochs": 100, "epochs": 50, "epochs_decay": 50}
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"pix2pix": PIX2PIX_DEFAULTS, "distill": DISTILL_DEFAULTS,
                                             "srgan": SRGAN_DEFAULTS}


@dataclass
class TrainConfig:
    model: str = "cyclegan"
    dataroot: str = ""
    run_dir: str = ""
    direction: str = "AtoB"
    # data: the reference resizes to 286 and random-crops 256 (a small translation augmentation)
    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"
    no_flip: bool = False
    batch_size: int = 1
    # the reference's num_threads is 4; more loader processes than CPUs only contend (torch warns about it)
    num_workers: int = field(default_factory=lambda: min(4, allowed_cpus()))
    # schedule: n_epochs at the initial lr, then n_epochs_decay with lr falling linearly (LambdaRule)
    epochs: int = 100
    epochs_decay: int = 100
    # networks
    netG: str = "resnet_9blocks"
    n_blocks: int | None = None  # None: from netG (resnet_<n>blocks); set to override the block count
    ngf: int = 64
    ndf: int = 64
    netD: str = "basic"
    n_layers_D: int = 3
    norm: str = "instance"
    dropout: bool = False
    init_gain: float = 0.02
    # optimisation
    lr: float = 0.0002
    beta1: float = 0.5
    gan_mode: str = "lsgan"
    pool_size: int = 50  # history of generated images shown to D (Shrivastava et al.); 0 disables
    lambda_A: float = 10.0  # cycle A->B->A
    lambda_B: float = 10.0  # cycle B->A->B
    lambda_identity: float = 0.5  # identity loss weight, relative to lambda_A/B
    lambda_L1: float = 100.0  # pix2pix only
    # distill only: the frozen teacher (generator file, its sha256 checked on --resume) and the loss weights of
    # GAN Compression's distillation stage (L1 to the teacher's output, LSGAN, 1x1-mapped feature MSE)
    teacher: str = ""
    teacher_sha256: str = ""
    lambda_distill: float = 10.0
    lambda_gan: float = 1.0
    lambda_feature: float = 0.01
    gan_real: str = "teacher"  # what distillation's D sees as real: the teacher's outputs | the data's target domain
    # srgan only: pixel-MSE epochs before the GAN stage (the SRResNet stage), the paper's 1e-3 adversarial weight,
    # and a torchvision-layout VGG19 state dict for the VGG54 content loss (none: pixel-MSE content)
    pretrain_epochs: int = 0
    # the last N of them with the lr falling linearly towards 0 (then the GAN stage starts at the full lr): a
    # short pixel stage ends far from converged at a constant lr, and its model (pretrained_net_G.pth) is the
    # PSNR-oriented one. 0: constant, as the paper's 10^6-iteration stage.
    pretrain_decay: int = 0
    lambda_adv: float = 1e-3
    vgg_weights: str = ""
    vgg_sha256: str = ""
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = False  # float16 autocast + GradScaler; CUDA only
    save_every: int = 5  # write <epoch>_net_G*.pth every N epochs (the reference's save_epoch_freq)
    max_minutes: float | None = None  # stop (resumably) after this much wall-clock time
    samples: int = 4  # images per sample grid

    @classmethod
    def for_model(cls, model: str = "cyclegan", **overrides: Any) -> TrainConfig:
        """Config with the model's reference defaults; explicit overrides win (None means "default")."""
        if model not in MODELS:
            raise ConfigError(f"unknown --model {model!r}; use {' or '.join(MODELS)}")
        fixed = [f"--{k}" for k in ("norm", "dropout") if model == "srgan" and overrides.get(k) is not None]
        if fixed:  # GeneratorConfig would quietly replace them with the architecture's own
            raise ConfigError(f"{' and '.join(fixed)}: the super-resolution architectures fix their normalisation "
                              "(srresnet: batch norm, as in SRGAN; rrdbnet: none) and have no dropout; leave "
                              f"{' and '.join(fixed)} out with --model srgan")
        values: dict[str, Any] = dict(MODEL_DEFAULTS.get(model, {}))
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["model"] = model
        if values.get("vgg_weights") and not values.get("vgg_sha256") and Path(values["vgg_weights"]).is_file():
            values["vgg_sha256"] = sha256_file(Path(values["vgg_weights"]))  # --resume refuses another file
        return cls._checked(values, "unknown training option(s): {}")

    @classmethod
    def _checked(cls, values: dict[str, Any], unknown_message: str) -> TrainConfig:
        """Build and validate, naming keys the dataclass does not have (the message gets them via {})."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(unknown_message.format(", ".join(unknown)))
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @property
    def blocks(self) -> int:
        if self.n_blocks is not None:
            return self.n_blocks
        return family_for(self.netG, "--arch").blocks(self.netG) or 0

    @property
    def total_epochs(self) -> int:
        return self.pretrain_epochs + self.epochs + self.epochs_decay

    @property
    def scale(self) -> int:
        return family_for(self.netG, "--arch").scale(self.netG)

    def validate(self) -> None:
        """Reject impossible combinations early, with the option to change."""
        choices = {"model": MODELS, "preprocess": PREPROCESS, "norm": NORMS, "netD": NETDS, "gan_mode": GAN_MODES,
                   "device": DEVICES, "direction": DIRECTIONS, "gan_real": GAN_REALS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                value = getattr(self, name)
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: use one of {', '.join(allowed)}")
        family_for(self.netG, "--arch")
        positive = ("load_size", "crop_size", "batch_size", "ngf", "ndf", "n_layers_D", "save_every", "samples")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("epochs", "epochs_decay", "num_workers", "pool_size", "pretrain_epochs", "pretrain_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.total_epochs < 1:
            raise ConfigError("--epochs + --epochs-decay must be at least 1")
        if self.n_blocks is not None and self.n_blocks < 0:
            raise ConfigError(f"--n-blocks must be >= 0, got {self.n_blocks}")
        if self.preprocess in ("resize_and_crop", "scale_width_and_crop") and self.crop_size > self.load_size:
            raise ConfigError(f"--crop-size {self.crop_size} is larger than --load-size {self.load_size}; "
                              "crop a smaller patch or load larger")
        self._validate_sr()
        multiple = self.multiple
        if self.model != "srgan" and self.preprocess != "none" and self.crop_size % multiple:
            raise ConfigError(f"--crop-size {self.crop_size} is not a multiple of {multiple}, which {self.netG} "
                              f"needs; use e.g. {max(multiple, self.crop_size // multiple * multiple)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        for name in ("lambda_distill", "lambda_gan", "lambda_feature"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.model == "distill" and not self.teacher:
            raise ConfigError("distillation needs a teacher generator; pass it as `cgdeploy distill TEACHER`")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be > 0, got {self.max_minutes}")

    def _validate_sr(self) -> None:
        """SR generators train only as srgan, srgan only SR generators; its crop must split into LR pixels."""
        scale = self.scale
        if self.model != "srgan":
            if scale != 1:
                raise ConfigError(f"--arch {self.netG} is a super-resolution generator; train it with --model srgan")
            given = [o for o, v in (("--pretrain-epochs", self.pretrain_epochs),
                                    ("--pretrain-decay", self.pretrain_decay), ("--vgg-weights", self.vgg_weights))
                     if v]
            if given:
                raise ConfigError(f"{', '.join(given)}: only for --model srgan")
            return
        if self.pretrain_decay > self.pretrain_epochs:
            raise ConfigError(f"--pretrain-decay {self.pretrain_decay}: at most --pretrain-epochs "
                              f"({self.pretrain_epochs})")
        if scale not in SR_TRAIN_SCALES:
            raise _not_sr(self.netG)
        if self.preprocess != "crop":
            raise ConfigError(f"--preprocess {self.preprocess}: --model srgan takes random aligned crops of "
                              "--crop-size HR pixels (preprocess crop); drop --preprocess")
        lr_crop, multiple = self.crop_size // scale, self.multiple
        if self.crop_size % scale or lr_crop % multiple or lr_crop < 4:
            fit = max(4 * scale, self.crop_size // (scale * multiple) * scale * multiple)
            raise ConfigError(f"--crop-size {self.crop_size}: the HR crop must be a multiple of {scale * multiple} "
                              f"and at least {4 * scale} for {self.netG} (its LR crop is crop/{scale}); use e.g. {fit}")
        if self.lambda_adv < 0:
            raise ConfigError(f"--lambda-adv must be >= 0, got {self.lambda_adv}")
        if self.vgg_weights and not Path(self.vgg_weights).is_file():
            raise ConfigError(f"--vgg-weights {self.vgg_weights}: no such file; pass a torchvision VGG19 state dict "
                              "(torch.save(vgg19(weights=...).state_dict(), FILE))")

    @property
    def multiple(self) -> int:
        return family_for(self.netG, "--arch").multiple(self.netG)

    @property
    def value_range(self) -> list[float]:
        """What uint8 0..255 maps onto for training: the family's range (CycleGAN/pix2pix: [-1, 1] for both
        domains, which the losses compare directly, so input and output ranges are the same)."""
        return list(family_for(self.netG, "--arch").input_range)

    def generator(self) -> GeneratorConfig:
        return GeneratorConfig(arch=self.netG, ngf=self.ngf, norm=self.norm, dropout=self.dropout,
                               n_blocks=self.n_blocks)

    def to_meta(self, **overrides: Any) -> ModelMeta:
        """The model card written into every generator file this run saves."""
        train_size = self.crop_size // self.scale  # an SR card names the LR input side it trained on
        meta = self.generator().to_meta(model=self.model, direction=self.direction, train_size=train_size)
        for key, value in overrides.items():
            if not hasattr(meta, key):
                raise ConfigError(f"model card has no field {key!r}")
            setattr(meta, key, value)
        return meta

    # --- JSON round trip (RUN_DIR/config.json) ---
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls._checked(dict(data), "config has unknown key(s) {}; it was written by another version")

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    def save(self, run_dir: str | Path) -> Path:
        """Write RUN_DIR/config.json atomically (temp file + rename)."""
        return write_text(Path(run_dir) / CONFIG_NAME, self.to_json() + "\n")

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainConfig:
        path = Path(run_dir) / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"{path}: not found; is {run_dir} a run dir written by `cgdeploy train`?")
        try:
            return cls.from_json(path.read_text())
        except (json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"{path}: unreadable training config ({e}); delete the run dir or fix the file") from e


def sr_arch(arch: str | None, scale: int | None) -> str:
    """An SR run's generator: --arch (default srresnet_x<scale>, scale 4), which must upscale by --scale."""
    if scale is not None and scale not in SR_TRAIN_SCALES:
        raise ConfigError(f"--scale {scale}: use 2 or 4 (the SR generators here upscale x2 or x4)")
    if arch is None:
        return f"srresnet_x{scale or 4}"
    own = family_for(arch, "--arch").scale(arch)
    if own not in SR_TRAIN_SCALES:
        raise _not_sr(arch)
    if scale is not None and own != scale:
        raise ConfigError(f"--arch {arch} upscales x{own} but --scale is {scale}; drop one of them or make them agree")
    return arch


def _not_sr(arch: str) -> ConfigError:
    return ConfigError(f"--model srgan trains x2 or x4 generators ({', '.join(SR_ARCHS)}), not --arch {arch}")
