"""What CycleGAN and pix2pix share: networks, Adam + the reference's linear-decay schedule, AMP, the
checkpointable state and generator files. The trainers add only their losses and their step order.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.train.checkpoints import save_generator
from cyclegan_deploy.train.config import TrainConfig
from cyclegan_deploy.train.losses import ImagePool
from cyclegan_deploy.train.models import build_discriminator, build_generator, init_weights


def resolve_device(cfg: TrainConfig) -> torch.device:
    """auto -> cuda when present; an explicit cuda never falls back to cpu; AMP only on CUDA."""
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise BackendUnavailableError("--device cuda: torch sees no CUDA device (this torch is "
                                      f"{torch.__version__}); use --device cpu or install a CUDA build of torch")
    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and cuda) else "cpu")
    if cfg.amp and device.type != "cuda":
        raise ConfigError("--amp needs a CUDA device (float16 autocast); drop --amp to train on the CPU")
    return device


def _activation_elements(net: nn.Module, input_nc: int, side: int) -> int:
    """Elements of every leaf module's output for one side x side image (what autograd keeps for the backward
    pass; in-place layers reuse their input), measured on the meta device: no memory, no arithmetic."""
    count = 0

    def hook(module: nn.Module, _args: Any, output: Any) -> None:
        nonlocal count
        if isinstance(output, torch.Tensor) and not getattr(module, "inplace", False):
            count += output.numel()

    leaves = [m for m in net.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            net(torch.empty(1, input_nc, side, side, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return count


def training_memory(cfg: TrainConfig, passes: tuple[int, int]) -> tuple[int, str]:
    """(bytes, what) a training step needs at least: float32 activations of `passes` = (generator, discriminator)
    forward passes kept for the backward at the training size, plus the images decoded at --load-size. An
    estimate from the architecture (no allocation), to refuse absurd sizes before anything is allocated."""
    side = max(cfg.multiple, 64)
    with torch.device("meta"):  # eval: train-mode batch norm refuses a 1x1 innermost U-Net map at batch 1
        g = build_generator(cfg.generator()).eval()
        d = discriminator_for(cfg).eval()
    g_pixel, d_pixel = (_activation_elements(net, 3, side) / side**2 for net in (g, d))
    train_side = cfg.crop_size if "crop" in cfg.preprocess else cfg.load_size
    # a super-resolution generator sees the LR crop (1/scale of the side), the discriminator the HR one
    pixels = cfg.batch_size * train_side**2
    activations = int(4 * pixels * (passes[0] * g_pixel / cfg.scale**2 + passes[1] * d_pixel))
    resized = cfg.load_size**2 if cfg.preprocess in ("resize_and_crop", "scale_width_and_crop", "scale_width") else 0
    images = 2 * 2 * 3 * resized * max(1, cfg.num_workers)  # both domains, decoded + resized, uint8, per loader
    what = (f"{passes[0]} generator and {passes[1]} discriminator passes at {train_side}x{train_side}, batch "
            f"{cfg.batch_size}" + (f", images resized to {cfg.load_size}x{cfg.load_size}" if resized else ""))
    return activations + images, what


def discriminator_for(cfg: TrainConfig) -> nn.Module:
    """The discriminator cfg.model trains with: SRGAN's VGG-style one, else the reference's PatchGAN family."""
    if cfg.model == "srgan":
        from cyclegan_deploy.train.sr_models import SRGANDiscriminator

        return SRGANDiscriminator(3, cfg.ndf)
    return build_discriminator(3, cfg.ndf, cfg.netD, cfg.n_layers_D, cfg.norm)


def check_memory(cfg: TrainConfig, device: torch.device, passes: tuple[int, int]) -> None:
    """Refuse a run whose step cannot fit in the memory left on `device` (an absurd --crop-size/--load-size
    would otherwise be a MemoryError or the OOM killer minutes later)."""
    from cyclegan_deploy.machine import available_memory, gib

    need, what = training_memory(cfg, passes)
    if device.type == "cuda":
        available: int | None = int(torch.cuda.mem_get_info(device)[0])
    else:
        available = available_memory()
    if available is None or need <= available:
        return
    raise ConfigError(f"--crop-size {cfg.crop_size} --load-size {cfg.load_size} --batch-size {cfg.batch_size}: a "
                      f"training step needs about {gib(need)} GiB ({what}), more than the {gib(available)} GiB free "
                      f"on {device.type}; lower --crop-size/--load-size/--batch-size (the reference trains 256 crops "
                      "of 286 images)")


def linear_decay(cfg: TrainConfig) -> Any:
    """The reference's LambdaRule with epoch_count 1, stepped at the end of each epoch: epochs 1..n_epochs at
    the full lr, then epoch n_epochs + k at lr * (1 - k / (n_epochs_decay + 1)). SRGAN's pretraining epochs
    come first, at the full lr (the last `pretrain_decay` of them falling linearly, then back to the full lr)."""
    constant = cfg.total_epochs - cfg.epochs_decay
    pre, pre_decay = cfg.pretrain_epochs, cfg.pretrain_decay

    def rule(epoch: int) -> float:
        if epoch < pre and pre_decay:  # SRGAN's pixel stage with --pretrain-decay: its own linear fall
            return 1.0 - max(0, epoch + 1 - (pre - pre_decay)) / float(pre_decay + 1)
        return 1.0 - max(0, epoch + 1 - constant) / float(cfg.epochs_decay + 1)

    return rule


def set_requires_grad(nets: Iterable[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class GanModel:
    """Base of the two trainers. Subclasses fill nets/optimizers/pools and implement `optimize`."""

    loss_names: ClassVar[tuple[str, ...]] = ()
    monitor_losses: ClassVar[tuple[str, ...]] = ()  # logged to watch, not part of the generator's objective
    visual_names: ClassVar[tuple[str, ...]] = ()
    generators: ClassVar[dict[str, str]] = {}  # net name -> file tag (latest_net_<tag>.pth) for the A->B side

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.gcfg = cfg.generator()
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.pools: dict[str, ImagePool] = {}
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
        self.visuals: dict[str, torch.Tensor] = {}

    # --- construction helpers ---
    def _generator(self) -> nn.Module:
        net = build_generator(self.gcfg)
        init_weights(net, self.cfg.init_gain)
        return net.to(self.device)

    def _discriminator(self, input_nc: int) -> nn.Module:
        net = build_discriminator(input_nc, self.cfg.ndf, self.cfg.netD, self.cfg.n_layers_D, self.cfg.norm)
        init_weights(net, self.cfg.init_gain)
        return net.to(self.device)

    def _adam(self, *nets: nn.Module) -> torch.optim.Optimizer:
        params = [p for net in nets for p in net.parameters()]
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=(self.cfg.beta1, 0.999))

    def _finish_setup(self) -> None:
        rule = linear_decay(self.cfg)
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, rule) for name, opt in self.optimizers.items()}

    # --- the step ---
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)

    @classmethod
    def passes(cls, cfg: TrainConfig) -> tuple[int, int]:
        """(generator, discriminator) forward passes whose activations one step keeps for its backward."""
        raise NotImplementedError

    def optimize(self, batch: dict[str, Any]) -> dict[str, float]:
        """One training iteration on a batch; returns the named losses as floats."""
        raise NotImplementedError

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The visuals for a sample grid, computed without touching training state."""
        raise NotImplementedError

    def sample_rows(self, real_a: torch.Tensor, real_b: torch.Tensor | None) -> list[list[np.ndarray]]:
        """A sample grid's rows (one per image) of uint8 HxWx3 tiles, one per visual_names entry."""
        from cyclegan_deploy.frames import from_model

        vis = self.translate(real_a, real_b)
        tiles = {k: from_model(v.cpu().numpy(), self.cfg.value_range) for k, v in vis.items()}
        return [[tiles[k][i] for k in self.visual_names] for i in range(len(real_a))]

    def end_epoch(self) -> None:
        with warnings.catch_warnings():
            # an optimizer that never stepped (distillation's D with --lambda-gan 0) still follows the schedule
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for scheduler in self.schedulers.values():
                scheduler.step()

    @property
    def lr(self) -> float:
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Eval mode (batch-norm running stats untouched, no dropout draws) for samples and evaluation."""
        modes = {name: net.training for name, net in self.nets.items()}
        for net in self.nets.values():
            net.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for name, net in self.nets.items():
                net.train(modes[name])

    # --- state: tensors/ints/floats/lists/dicts only, so weights_only=True loads it ---
    def state_dict(self) -> dict[str, Any]:
        return {"nets": {k: v.state_dict() for k, v in self.nets.items()},
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
                "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
                "pools": {k: v.state_dict() for k, v in self.pools.items()},
                "scaler": self.scaler.state_dict() if self.cfg.amp else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for group, target in (("nets", self.nets), ("optimizers", self.optimizers), ("schedulers", self.schedulers)):
            if set(state[group]) != set(target):
                raise ConfigError(f"checkpoint has {group} {sorted(state[group])}, this model {sorted(target)}")
            for name, obj in target.items():
                obj.load_state_dict(state[group][name])
        for name, pool in self.pools.items():
            pool.load_state_dict(state["pools"][name], self.device)
        if self.cfg.amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def save_generators(self, run_dir: Path, prefix: str) -> list[Path]:
        """<prefix>_net_<tag>.pth for each generator, with the model card load_generator/export read."""
        paths = []
        for name, (tag, direction) in self.generator_files().items():
            path = run_dir / f"{prefix}_net_{tag}.pth"
            meta = self.cfg.to_meta(direction=direction)
            save_generator(self.nets[name], meta, path)
            paths.append(path)
        return paths

    def generator_files(self) -> dict[str, tuple[str, str]]:
        """net name -> (file tag, direction it maps), honouring --direction BtoA (which swaps the domains); one
        generator "G" saved as *_net_G.pth unless a trainer says otherwise."""
        return {"G": ("G", self.cfg.direction)}

    @property
    def generator_AtoB(self) -> nn.Module:
        """The generator that maps the data root's A folder to its B folder."""
        return self.nets["G"]


def flip_direction(direction: str) -> str:
    return "BtoA" if direction == "AtoB" else "AtoB"
