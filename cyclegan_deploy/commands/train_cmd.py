"""`cgdeploy train` and `cgdeploy data synth` / `data synth-sr`. Thin: options -> TrainConfig -> one library call.

Torch is imported inside the command bodies only, so `import cyclegan_deploy.cli` stays light. Options default
to None meaning "the model's reference default" (pix2pix changes several), or on --resume "keep the run's".
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

from cyclegan_deploy.commands.options import FORCE
from cyclegan_deploy.errors import ConfigError

DATA_SEED = typer.Option(0, "--seed", help="Same seed, same files.")
_MODEL = "cyclegan | pix2pix | srgan (default cyclegan; on --resume, the run's)."


def _show_warning(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    typer.secho(f"warning: {message}", err=True, fg="yellow")


def register(app: typer.Typer, data_app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        dataroot: Path = typer.Argument(..., help="Data root: trainA/ + trainB/ (cyclegan), train/ with A|B "
                                                  "pairs (pix2pix), train/hr (+ train/lr) (srgan); `cgdeploy data "
                                                  "synth` / `data synth-sr` make one."),
        output: Path = typer.Option(..., "-o", "--output", help="Run dir: checkpoints, generators, logs, samples."),
        model: str | None = typer.Option(None, "--model", help=_MODEL),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in -o exactly where it stopped."),
        force: bool = typer.Option(False, "--force", help="Start over in a run dir that holds a run (deletes its "
                                                          "checkpoints, generators and logs)."),
        epochs: int | None = typer.Option(None, "--epochs", help="Epochs at the initial lr (reference 100)."),
        epochs_decay: int | None = typer.Option(None, "--epochs-decay",
                                                help="Epochs of linear lr decay to zero after them (reference 100)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Images per step (reference 1)."),
        load_size: int | None = typer.Option(None, "--load-size", help="Resize to this first (reference 286)."),
        crop_size: int | None = typer.Option(None, "--crop-size", help="Random crop, the training size (256)."),
        preprocess: str | None = typer.Option(None, "--preprocess",
                                              help="resize_and_crop | crop | scale_width | scale_width_and_crop "
                                                   "| none."),
        no_flip: bool = typer.Option(False, "--no-flip", help="No random horizontal flips."),
        arch: str | None = typer.Option(None, "--arch", help="Generator: resnet_9blocks (cyclegan default), "
                                                             "resnet_6blocks, resnet_<n>blocks, unet_256 (pix2pix), "
                                                             "unet_128; srgan: srresnet_x4 (default), srresnet_x2, "
                                                             "rrdbnet_x4, rrdbnet_x2."),
        scale: int | None = typer.Option(None, "--scale", help="srgan: upscaling factor, 2 or 4 (4; names the "
                                                               "arch: srresnet_x<scale>)."),
        pretrain_epochs: int | None = typer.Option(None, "--pretrain-epochs",
                                                   help="srgan: pixel-MSE epochs before the GAN stage (100)."),
        pretrain_decay: int | None = typer.Option(None, "--pretrain-decay", help="srgan: the last N pixel-stage "
                                                  "epochs with the lr falling linearly (0: constant, the paper's)."),
        lambda_adv: float | None = typer.Option(None, "--lambda-adv", help="srgan: adversarial weight (1e-3)."),
        vgg_weights: Path | None = typer.Option(None, "--vgg-weights", help="srgan: torchvision VGG19 state dict "
                                                                           "for the VGG54 content loss (default: "
                                                                           "pixel MSE content)."),
        n_blocks: int | None = typer.Option(None, "--n-blocks", help="ResNet blocks (overrides the arch's count)."),
        ngf: int | None = typer.Option(None, "--ngf", help="Generator width (64)."),
        ndf: int | None = typer.Option(None, "--ndf", help="Discriminator width (64)."),
        netd: str | None = typer.Option(None, "--netd", help="basic (70x70 PatchGAN) | n_layers | pixel."),
        n_layers_d: int | None = typer.Option(None, "--n-layers-d", help="PatchGAN depth for --netd n_layers."),
        norm: str | None = typer.Option(None, "--norm", help="instance (cyclegan) | batch (pix2pix) | none."),
        dropout: bool | None = typer.Option(None, "--dropout/--no-dropout", help="Dropout in the generator."),
        lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (0.0002)."),
        beta1: float | None = typer.Option(None, "--beta1", help="Adam beta1 (0.5)."),
        gan_mode: str | None = typer.Option(None, "--gan-mode", help="lsgan (cyclegan) | vanilla (pix2pix)."),
        pool_size: int | None = typer.Option(None, "--pool-size", help="Image history for D (50; pix2pix 0)."),
        lambda_a: float | None = typer.Option(None, "--lambda-A", help="Cycle loss A->B->A weight (10)."),
        lambda_b: float | None = typer.Option(None, "--lambda-B", help="Cycle loss B->A->B weight (10)."),
        lambda_identity: float | None = typer.Option(None, "--lambda-identity",
                                                     help="Identity loss weight relative to lambda (0.5)."),
        lambda_l1: float | None = typer.Option(None, "--lambda-L1", help="pix2pix L1 weight (100)."),
        direction: str | None = typer.Option(None, "--direction", help="AtoB | BtoA (swaps the domains)."),
        seed: int | None = typer.Option(None, "--seed", help="Seed for weights, data order and augmentation (0)."),
        device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (cuda never falls back)."),
        amp: bool = typer.Option(False, "--amp", help="float16 autocast + grad scaling (CUDA only)."),
        workers: int | None = typer.Option(None, "--workers", help="Data loading processes (4, or the CPUs "
                                                                   "available if fewer; 0 = in-process)."),
        save_every: int | None = typer.Option(None, "--save-every",
                                              help="Write <epoch>_net_G*.pth every N epochs (5); latest_* always."),
        max_minutes: float | None = typer.Option(None, "--max-minutes",
                                                 help="Stop resumably after this much wall-clock time."),
    ) -> None:
        """Train CycleGAN, pix2pix or SRGAN; writes generators `cgdeploy export` takes, logs, samples and a
        checkpoint."""
        from cyclegan_deploy.train.config import TrainConfig, sr_arch

        options = {"epochs": epochs, "epochs_decay": epochs_decay, "batch_size": batch_size, "load_size": load_size,
                   "crop_size": crop_size, "preprocess": preprocess, "no_flip": no_flip or None, "netG": arch,
                   "n_blocks": n_blocks, "ngf": ngf, "ndf": ndf, "netD": netd, "n_layers_D": n_layers_d,
                   "norm": norm, "dropout": dropout, "lr": lr, "beta1": beta1, "gan_mode": gan_mode,
                   "pool_size": pool_size, "lambda_A": lambda_a, "lambda_B": lambda_b,
                   "lambda_identity": lambda_identity, "lambda_L1": lambda_l1, "direction": direction, "seed": seed,
                   "device": device, "amp": amp or None, "num_workers": workers, "save_every": save_every,
                   "max_minutes": max_minutes, "pretrain_epochs": pretrain_epochs,
                   "pretrain_decay": pretrain_decay, "lambda_adv": lambda_adv,
                   "vgg_weights": str(vgg_weights) if vgg_weights is not None else None}
        saved = TrainConfig.load(output) if resume else None
        if saved is not None and scale is not None and arch is None and saved.scale != scale:
            raise ConfigError(f"{output}: this run trains {saved.netG} (x{saved.scale}); --resume keeps the run's "
                              "settings: drop --scale, or start a new run in another folder")
        if (model or (saved.model if saved else "cyclegan")) == "srgan":
            options["netG"] = sr_arch(arch or (saved.netG if saved else None), scale)
        elif scale is not None:
            raise ConfigError("--scale is for --model srgan (super-resolution)")
        if resume:
            from cyclegan_deploy.train.loop import resume_config

            cfg = resume_config(output, model=model, dataroot=str(dataroot), **options)
        else:
            cfg = TrainConfig.for_model(model or "cyclegan", dataroot=str(dataroot), run_dir=str(output), **options)

        from cyclegan_deploy.train.loop import train

        with warnings.catch_warnings():  # skipped data files: one plain line each, not a source-line warning
            warnings.showwarning = _show_warning
            result = train(cfg, resume=resume, force=force, log=lambda msg: typer.echo(msg, err=True))
        state = "stopped by --max-minutes (resume with --resume)" if result.stopped_early else "done"
        typer.echo(f"{state}: {result.epochs_done} epochs, {result.iterations} iterations in {result.elapsed_s:.0f} s "
                   f"-> {result.run_dir}")
        if result.synthetic:
            s = result.synthetic
            typer.echo(f"synthetic held-out PSNR vs true f: G_AtoB {s['psnr_model_db']:.2f} dB, identity "
                       f"{s['psnr_identity_db']:.2f} dB, gain {s['gain_db']:+.2f} dB ({s['n_images']} images)")
        if result.evaluation and cfg.model == "srgan":
            from cyclegan_deploy.train.sr_eval import sr_summary_lines

            for line in sr_summary_lines(result.evaluation):
                typer.echo(line)

    @data_app.command("synth")
    def synth_command(
        out_dir: Path = typer.Argument(..., help="Folder to create (trainA, trainB, testA, testB_true, mapping.json)."),
        n_train: int = typer.Option(400, "--n-train", help="Training images per domain."),
        n_test: int = typer.Option(50, "--n-test", help="Held-out (a, f(a)) pairs."),
        size: int = typer.Option(64, "--size", help="Image side in pixels."),
        seed: int = DATA_SEED,
        force: bool = FORCE,
    ) -> None:
        """Write the built-in unpaired dataset whose true A->B mapping f is known (stored in mapping.json)."""
        from cyclegan_deploy.train.synthetic import write_synthetic

        out = write_synthetic(out_dir, n_train=n_train, n_test=n_test, size=size, seed=seed, overwrite=force)
        typer.echo(f"wrote {n_train}+{n_train} unpaired training images, {n_test} held-out pairs ({size}x{size}) "
                   f"-> {out}")

    @data_app.command("synth-sr")
    def synth_sr_command(
        out_dir: Path = typer.Argument(..., help="Folder to create (train/hr, train/lr, test/hr, test/lr, "
                                                 "sr_data.json)."),
        scale: int = typer.Option(4, "--scale", help="LR = HR downscaled by this (2 or 4), bicubic, antialiased."),
        n_train: int = typer.Option(400, "--n-train", help="Procedural training scenes (plus 11 photographs)."),
        n_test: int = typer.Option(20, "--n-test", help="Held-out scenes (plus the 6 natural photographs)."),
        size: int = typer.Option(128, "--size", help="HR side of a procedural scene in pixels."),
        seed: int = DATA_SEED,
        force: bool = FORCE,
    ) -> None:
        """Write the built-in super-resolution dataset: HR procedural scenes and scikit-image photographs with
        their bicubic LR; the natural photographs eval reports on are held out."""
        from cyclegan_deploy.train.sr_data import write_sr_data

        card = write_sr_data(out_dir, scale=scale, n_train=n_train, n_test=n_test, size=size, seed=seed,
                             overwrite=force)
        n_scenes = {split: sum(v == "scene" for v in card["files"][split].values()) for split in ("train", "test")}
        typer.echo(f"wrote {card['n_train']} training pairs ({n_scenes['train']} scenes + "
                   f"{card['n_train'] - n_scenes['train']} photographs) and {card['n_test']} held-out pairs "
                   f"({n_scenes['test']} scenes + {card['n_test'] - n_scenes['test']} photographs), x{scale}, LR by "
                   f"bicubic downscale -> {out_dir}")
