"""pix2pix (Isola et al. 2017) as the reference trains it: a U-Net G and a conditional PatchGAN D on (A, B) pairs.

One iteration, in the reference's order: discriminator step on cat(A, real B) vs cat(A, G(A)) with its loss
halved, then generator step (vanilla GAN loss through the updated D + L1 to the real B x lambda_L1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from cyclegan_deploy.train.base import GanModel, set_requires_grad
from cyclegan_deploy.train.config import TrainConfig
from cyclegan_deploy.train.losses import GANLoss, ImagePool


class Pix2Pix(GanModel):
    loss_names: ClassVar[tuple[str, ...]] = ("G_GAN", "G_L1", "D_real", "D_fake")
    visual_names: ClassVar[tuple[str, ...]] = ("real_A", "fake_B", "real_B")

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        # D sees the input and the output stacked (conditional GAN): 3 + 3 channels
        self.nets = {"G": self._generator(), "D": self._discriminator(6)}
        self.optimizers = {"G": self._adam(self.nets["G"]), "D": self._adam(self.nets["D"])}
        self.pools = {"fake_AB": ImagePool(cfg.pool_size, seed=f"{cfg.seed}-fake_AB")}
        self.gan_loss = GANLoss(cfg.gan_mode).to(device)
        self._finish_setup()

    @classmethod
    def passes(cls, cfg: TrainConfig) -> tuple[int, int]:
        return 1, 1  # G(A), kept through both steps; one D pass at a time

    def optimize(self, batch: dict[str, Any]) -> dict[str, float]:
        g, d = self.nets["G"], self.nets["D"]
        real_a = batch["A"].to(self.device, non_blocking=True)
        real_b = batch["B"].to(self.device, non_blocking=True)
        with self.autocast():
            fake_b = g(real_a)

        set_requires_grad((d,), True)
        with self.autocast():
            fake_ab = self.pools["fake_AB"].query(torch.cat((real_a, fake_b), 1))
            loss_d_fake = self.gan_loss(d(fake_ab.detach()), False)
            loss_d_real = self.gan_loss(d(torch.cat((real_a, real_b), 1)), True)
            loss_d = (loss_d_fake + loss_d_real) * 0.5
        self.step(loss_d, self.optimizers["D"])

        set_requires_grad((d,), False)
        with self.autocast():
            loss_g_gan = self.gan_loss(d(torch.cat((real_a, fake_b), 1)), True)
            loss_g_l1 = F.l1_loss(fake_b.float(), real_b) * self.cfg.lambda_L1
            loss_g = loss_g_gan + loss_g_l1
        self.step(loss_g, self.optimizers["G"])
        set_requires_grad((d,), True)
        self.scaler.update()

        losses = (loss_g_gan, loss_g_l1, loss_d_real, loss_d_fake)
        return {name: float(v.detach()) for name, v in zip(self.loss_names, losses, strict=True)}

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        with self.eval_mode(), self.autocast():
            out = {"real_A": real_a, "fake_B": self.nets["G"](real_a)}
        if real_b is not None:
            out["real_B"] = real_b
        return {k: v.float() for k, v in out.items()}
