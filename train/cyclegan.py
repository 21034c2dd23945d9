"""CycleGAN (Zhu et al. 2017) as the reference trains it: G_A: A->B, G_B: B->A, D_A judges B, D_B judges A.

One iteration: forward both cycles; generator step (LSGAN adversarial + cycle L1 x lambda + identity L1 x
lambda x lambda_identity) with the discriminators frozen; then discriminator step on real vs pooled fakes,
each D loss halved.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from cyclegan_deploy.train.base import GanModel, flip_direction, set_requires_grad
from cyclegan_deploy.train.config import TrainConfig
from cyclegan_deploy.train.losses import GANLoss, ImagePool


class CycleGAN(GanModel):
    loss_names: ClassVar[tuple[str, ...]] = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")
    visual_names: ClassVar[tuple[str, ...]] = ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B")

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        # creation order fixes which seeded draws each net's init gets: keep it stable
        self.nets = {"G_A": self._generator(), "G_B": self._generator(),
                     "D_A": self._discriminator(3), "D_B": self._discriminator(3)}
        self.optimizers = {"G": self._adam(self.nets["G_A"], self.nets["G_B"]),
                           "D": self._adam(self.nets["D_A"], self.nets["D_B"])}
        # each pool draws from its own seeded RNG (str seeds hash deterministically in random.Random)
        self.pools = {name: ImagePool(cfg.pool_size, seed=f"{cfg.seed}-{name}")
                      for name in ("fake_A", "fake_B")}
        self.gan_loss = GANLoss(cfg.gan_mode).to(device)
        self._finish_setup()

    def _d_loss(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return (self.gan_loss(net(real), True) + self.gan_loss(net(fake.detach()), False)) * 0.5

    @classmethod
    def passes(cls, cfg: TrainConfig) -> tuple[int, int]:
        # fake_B, rec_A, fake_A, rec_B (+ both identities); D_A(fake_B) and D_B(fake_A) in the generator step
        return (6 if cfg.lambda_identity > 0 else 4), 2

    def optimize(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg, n = self.cfg, self.nets
        real_a = batch["A"].to(self.device, non_blocking=True)
        real_b = batch["B"].to(self.device, non_blocking=True)
        with self.autocast():
            fake_b = n["G_A"](real_a)
            rec_a = n["G_B"](fake_b)
            fake_a = n["G_B"](real_b)
            rec_b = n["G_A"](fake_a)

        # generator step, discriminators frozen so no gradient is spent on them
        set_requires_grad((n["D_A"], n["D_B"]), False)
        with self.autocast():
            zero = real_a.new_zeros(())
            if cfg.lambda_identity > 0:
                # G_A should leave a B image unchanged (and G_B an A image): preserves colour composition
                loss_idt_a = F.l1_loss(n["G_A"](real_b).float(), real_b) * cfg.lambda_B * cfg.lambda_identity
                loss_idt_b = F.l1_loss(n["G_B"](real_a).float(), real_a) * cfg.lambda_A * cfg.lambda_identity
            else:
                loss_idt_a = loss_idt_b = zero
            loss_g_a = self.gan_loss(n["D_A"](fake_b), True)
            loss_g_b = self.gan_loss(n["D_B"](fake_a), True)
            loss_cycle_a = F.l1_loss(rec_a.float(), real_a) * cfg.lambda_A
            loss_cycle_b = F.l1_loss(rec_b.float(), real_b) * cfg.lambda_B
            loss_g = loss_g_a + loss_g_b + loss_cycle_a + loss_cycle_b + loss_idt_a + loss_idt_b
        self.step(loss_g, self.optimizers["G"])

        # discriminator step on real vs (history-pooled) fakes
        set_requires_grad((n["D_A"], n["D_B"]), True)
        with self.autocast():
            loss_d_a = self._d_loss(n["D_A"], real_b, self.pools["fake_B"].query(fake_b))
            loss_d_b = self._d_loss(n["D_B"], real_a, self.pools["fake_A"].query(fake_a))
        # D_A and D_B share no parameters: one backward of the sum = the reference's two backwards
        self.step(loss_d_a + loss_d_b, self.optimizers["D"])
        self.scaler.update()

        losses = (loss_d_a, loss_g_a, loss_cycle_a, loss_idt_a, loss_d_b, loss_g_b, loss_cycle_b, loss_idt_b)
        return {name: float(v.detach()) for name, v in zip(self.loss_names, losses, strict=True)}

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        g_a, g_b = self.nets["G_A"], self.nets["G_B"]
        with self.eval_mode(), self.autocast():
            out = {"real_A": real_a, "fake_B": g_a(real_a)}
            out["rec_A"] = g_b(out["fake_B"])
            if real_b is not None:
                out["real_B"] = real_b
                out["fake_A"] = g_b(real_b)
                out["rec_B"] = g_a(out["fake_A"])
        return {k: v.float() for k, v in out.items()}

    def generator_files(self) -> dict[str, tuple[str, str]]:
        return {"G_A": ("G_A", self.cfg.direction), "G_B": ("G_B", flip_direction(self.cfg.direction))}

    @property
    def generator_AtoB(self) -> nn.Module:
        # with --direction BtoA the dataset swapped the folders, so G_B maps the root's A to its B
        return self.nets["G_A" if self.cfg.direction == "AtoB" else "G_B"]
