"""SRGAN (Ledig et al. 2017) on the shared loop: the SRResNet stage, then the GAN stage.

- Pretraining (`pretrain_epochs`, the SRResNet stage): the generator alone, pixel MSE to the HR crop.
- GAN stage (`epochs` + `epochs_decay`, the decay as the reference's linear rule): generator step on content +
  `lambda_adv` (1e-3) x BCE-with-logits of the SRGAN discriminator on SR as real; then discriminator step on HR
  as real and SR as fake. Content is pixel MSE, or with `vgg_weights` SRGAN-VGG54's: the MSE of VGG19 relu5_4
  features x 1/12.75^2 (losses.VGG54; the pixel MSE is still logged as G_pixel, the PSNR proxy).

One Adam per network (the paper's lr 1e-4, beta1 0.9), kept across the stages; the stage follows from the epochs
done (the G scheduler's count, checkpointed), so --resume lands in the right one. The generators keep torch's
default init (kaiming-uniform): the reference's N(0, 0.02) suits its normalised CycleGAN nets, while the SR
networks' unnormalised upsampling convs would start with near-zero outputs.

Files: `latest_net_G.pth`/`<epoch>_net_G.pth` as every run, and `pretrained_net_G.pth`, the generator as the
pixel stage left it (the PSNR-oriented SRResNet; written while no GAN step has run). Each card has
extra["srgan"] = {stage, content, lambda_adv}. Sample grids: LR (nearest-upscaled) | bicubic | SR | HR.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.metadata import sha256_file
from cyclegan_deploy.train.base import GanModel, discriminator_for, set_requires_grad
from cyclegan_deploy.train.checkpoints import save_generator
from cyclegan_deploy.train.config import TrainConfig
from cyclegan_deploy.train.losses import VGG_CONTENT_WEIGHT, GANLoss, load_vgg54
from cyclegan_deploy.train.registry import build_generator, family_for

PRETRAINED = "pretrained_net_G.pth"


class SRGAN(GanModel):
    loss_names: ClassVar[tuple[str, ...]] = ("G_pixel", "G_content", "G_GAN", "D_real", "D_fake")
    monitor_losses: ClassVar[tuple[str, ...]] = ("G_pixel",)  # the PSNR proxy; G_content is what is minimised
    visual_names: ClassVar[tuple[str, ...]] = ("LR", "bicubic", "SR", "HR")

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        family = family_for(cfg.netG)
        self.input_range, self.output_range = family.input_range, family.output_range
        generator = build_generator(self.gcfg)
        if hasattr(generator, "clamp_output"):
            generator.clamp_output = False  # RRDBNet: outputs past [0, 1] must still get gradients
        self.nets = {"G": generator.to(device), "D": discriminator_for(cfg).to(device)}
        self.optimizers = {"G": self._adam(self.nets["G"]), "D": self._adam(self.nets["D"])}
        self.gan_loss = GANLoss("vanilla").to(device)  # BCE with logits, as the paper's log-likelihood terms
        self.vgg = self._vgg(cfg, device)
        self._finish_setup()

    @staticmethod
    def _vgg(cfg: TrainConfig, device: torch.device) -> nn.Module | None:
        if not cfg.vgg_weights:
            return None
        if cfg.vgg_sha256 and sha256_file(Path(cfg.vgg_weights)) != cfg.vgg_sha256:
            raise ConfigError(f"{cfg.vgg_weights}: the VGG weights changed since this run started (sha256 differs "
                              f"from {cfg.run_dir}/config.json); pass the run's file, or start a new run")
        return load_vgg54(cfg.vgg_weights).to(device)

    @classmethod
    def passes(cls, cfg: TrainConfig) -> tuple[int, int]:
        return 1, 2  # SR kept through both steps; D(HR) and D(SR) kept for the discriminator's backward

    @property
    def pretraining(self) -> bool:
        """In the pixel-loss stage: fewer epochs done (the G scheduler's count) than pretrain_epochs."""
        return int(self.schedulers["G"].last_epoch) < self.cfg.pretrain_epochs

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        """Generator-output-range values -> [0, 1] (what VGG's ImageNet normalisation expects)."""
        lo, hi = self.output_range
        return (x - lo) / (hi - lo)

    def optimize(self, batch: dict[str, Any]) -> dict[str, float]:
        g, d = self.nets["G"], self.nets["D"]
        lr = batch["A"].to(self.device, non_blocking=True)  # (N, 3, h, w) in the input range
        hr = batch["B"].to(self.device, non_blocking=True)  # (N, 3, s*h, s*w) in the output range
        with self.autocast():
            sr = g(lr)
        pixel = F.mse_loss(sr.float(), hr)
        zero = pixel.new_zeros(())
        if self.pretraining:
            self.step(pixel, self.optimizers["G"])
            self.scaler.update()
            return self._named(pixel, pixel, zero, zero, zero)

        set_requires_grad((d,), False)
        with self.autocast():
            if self.vgg is None:
                content = pixel
            else:
                target = self.vgg(self._unit(hr)).detach()
                content = F.mse_loss(self.vgg(self._unit(sr)).float(), target.float()) * VGG_CONTENT_WEIGHT
            adversarial = self.gan_loss(d(sr), True) * self.cfg.lambda_adv
        self.step(content + adversarial, self.optimizers["G"])

        set_requires_grad((d,), True)
        with self.autocast():
            d_real = self.gan_loss(d(hr), True)
            d_fake = self.gan_loss(d(sr.detach()), False)
        self.step(d_real + d_fake, self.optimizers["D"])
        self.scaler.update()
        return self._named(pixel, content, adversarial, d_real, d_fake)

    def _named(self, *losses: torch.Tensor) -> dict[str, float]:
        return {name: float(v.detach()) for name, v in zip(self.loss_names, losses, strict=True)}

    def end_epoch(self) -> None:
        with warnings.catch_warnings():  # D's scheduler counts the pretraining epochs without a D step
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            super().end_epoch()

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        with self.eval_mode(), self.autocast():
            return {"SR": self.nets["G"](real_a).float()}

    def sample_rows(self, real_a: torch.Tensor, real_b: torch.Tensor | None) -> list[list[np.ndarray]]:
        """LR nearest-upscaled | bicubic | SR | HR, all at the HR size."""
        from cyclegan_deploy.frames import from_model
        from cyclegan_deploy.train.sr_data import bicubic_resize

        s = self.cfg.scale
        lr = from_model(real_a.cpu().numpy(), self.input_range)
        sr = from_model(self.translate(real_a)["SR"].cpu().numpy(), self.output_range)
        hr = from_model(real_b.cpu().numpy(), self.output_range) if real_b is not None else None
        rows = []
        for i, low in enumerate(lr):
            h, w = low.shape[:2]
            row = [low.repeat(s, 0).repeat(s, 1), bicubic_resize(low, h * s, w * s), sr[i]]
            rows.append(row + ([hr[i]] if hr is not None else []))
        return rows

    def save_generators(self, run_dir: Path, prefix: str) -> list[Path]:
        """<prefix>_net_G.pth, and pretrained_net_G.pth with "latest" while no GAN step has run."""
        gan_started = bool(self.optimizers["D"].state)  # D steps only in the GAN stage
        meta = self.cfg.to_meta(extra={"srgan": {"stage": "gan" if gan_started else "pretrain",
                                                 "content": "pixel_mse" if self.vgg is None else "vgg54",
                                                 "lambda_adv": self.cfg.lambda_adv}})
        paths = [run_dir / f"{prefix}_net_G.pth"]
        if prefix == "latest" and not gan_started and self.cfg.pretrain_epochs:
            paths.append(run_dir / PRETRAINED)
        for path in paths:
            save_generator(self.nets["G"], meta, path)
        return paths
