"""`cgdeploy distill` and `cgdeploy eval`. Thin: options -> config -> one library call (torch inside the bodies)."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from cyclegan_deploy.commands.options import FORCE
from cyclegan_deploy.commands.train_cmd import _show_warning
from cyclegan_deploy.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill_command(
        teacher: Path = typer.Argument(..., help="The teacher: a run dir of `cgdeploy train`, a generator file or a "
                                                 "reference *_net_G*.pth (its architecture comes from its keys)."),
        output: Path = typer.Option(..., "-o", "--output", help="Run dir of the student: checkpoints, "
                                                                "latest_net_G.pth, logs, samples, distill_eval.json."),
        data: Path | None = typer.Option(None, "--data", help="Input images: a data root (trainA/ + trainB/, or "
                                                              "train/ with A|B pairs) or any folder of images. "
                                                              "Default: the teacher run's own data root."),
        ngf: int | None = typer.Option(None, "--ngf", help="Student width (16)."),
        n_blocks: int | None = typer.Option(None, "--n-blocks", help="Student ResNet blocks (6)."),
        ndf: int | None = typer.Option(None, "--ndf", help="Discriminator width (64)."),
        epochs: int | None = typer.Option(None, "--epochs", help="Epochs at the initial lr (100)."),
        epochs_decay: int | None = typer.Option(None, "--epochs-decay", help="Epochs of linear lr decay (100)."),
        max_minutes: float | None = typer.Option(None, "--max-minutes",
                                                 help="Stop resumably after this much wall-clock time."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in -o exactly where it stopped."),
        force: bool = typer.Option(False, "--force", help="Start over in a run dir that holds a run."),
        lambda_distill: float | None = typer.Option(None, "--lambda-distill",
                                                    help="L1 to the teacher's output (10)."),
        lambda_gan: float | None = typer.Option(None, "--lambda-gan", help="LSGAN adversarial weight (1)."),
        lambda_feature: float | None = typer.Option(None, "--lambda-feature",
                                                    help="Feature MSE through 1x1 convs (0.01; 0 disables)."),
        gan_real: str | None = typer.Option(None, "--gan-real", help="What the discriminator sees as real: teacher "
                                                                     "(its outputs; default) | data (the data "
                                                                     "root's target domain, GAN Compression's "
                                                                     "choice)."),
        crop_size: int | None = typer.Option(None, "--crop-size", help="Training crop (the teacher run's, else 256)."),
        load_size: int | None = typer.Option(None, "--load-size", help="Resize before cropping (the teacher run's, "
                                                                       "else 286)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Images per step (1)."),
        lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (0.0002)."),
        seed: int | None = typer.Option(None, "--seed", help="Seed for weights, data order and augmentation (0)."),
        device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (cuda never falls back)."),
        workers: int | None = typer.Option(None, "--workers", help="Data loading processes (0 = in-process)."),
        save_every: int | None = typer.Option(None, "--save-every", help="Write <epoch>_net_G.pth every N epochs."),
    ) -> None:
        """Distill a generator into a narrow ResNet student (GAN Compression's recipe); the student exports,
        quantizes and runs like any generator."""
        from cyclegan_deploy.train.loop import resume_config, train

        options = {"ngf": ngf, "n_blocks": n_blocks, "ndf": ndf, "epochs": epochs, "epochs_decay": epochs_decay,
                   "max_minutes": max_minutes, "lambda_distill": lambda_distill, "lambda_gan": lambda_gan,
                   "lambda_feature": lambda_feature, "gan_real": gan_real, "crop_size": crop_size,
                   "load_size": load_size, "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
                   "num_workers": workers, "save_every": save_every}
        if resume:
            from cyclegan_deploy.train.checkpoints import resolve_generator_path
            from cyclegan_deploy.train.distill import arch_by_blocks

            cfg = resume_config(output, dataroot=str(data) if data is not None else None, **arch_by_blocks(options))
            if cfg.model != "distill":
                raise ConfigError(f"{output}: holds a {cfg.model} run, not a distillation; resume it with "
                                  "`cgdeploy train --resume`")
            if resolve_generator_path(teacher).resolve() != Path(cfg.teacher):
                raise ConfigError(f"{teacher}: this run distills {cfg.teacher}; pass that teacher to --resume")
        else:
            from cyclegan_deploy.train.distill import distill_config

            cfg = distill_config(teacher, output, data, **options)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            result = train(cfg, resume=resume, force=force, log=lambda msg: typer.echo(msg, err=True))
        state = "stopped by --max-minutes (resume with --resume)" if result.stopped_early else "done"
        typer.echo(f"{state}: {result.epochs_done} epochs, {result.iterations} iterations in {result.elapsed_s:.0f} s "
                   f"-> {result.run_dir / 'latest_net_G.pth'}")
        if result.evaluation:
            from cyclegan_deploy.train.evaluate import summary_lines

            for line in summary_lines(result.evaluation):
                typer.echo(line)

    @app.command("eval")
    def eval_command(
        generator: Path = typer.Argument(..., help="Generator to judge: run dir, generator file or reference .pth."),
        against: Path | None = typer.Option(None, "--against", help="Reference generator (e.g. the teacher)."),
        data: Path | None = typer.Option(None, "--data", help="Images: a data root (its testA/, or testB/ for a BtoA "
                                                              "generator; test/hr + test/lr for SR) or a folder (HR "
                                                              "images for SR). Default: the generator's run data "
                                                              "root, else --against's (SR: else the bundled "
                                                              "photographs)."),
        json_out: Path | None = typer.Option(None, "--json", help="Also write the full report here."),
        photo_size: int = typer.Option(256, "--photo-size", help="Side of the natural photographs."),
        device: str = typer.Option("cpu", "--device", help="cpu | cuda."),
        force: bool = FORCE,
    ) -> None:
        """PSNR/SSIM of a generator against another on held-out images and natural photos, task PSNR on the
        built-in data, and the MACs of both; for a super-resolution generator PSNR/SSIM on Y (crop_border =
        scale) of SR and of bicubic upscaling (and --against) vs HR."""
        from cyclegan_deploy.artifacts import write_json
        from cyclegan_deploy.outputs import refuse_existing
        from cyclegan_deploy.train.distill import teacher_data
        from cyclegan_deploy.train.evaluate import evaluate, summary_lines

        for path in (generator, against):
            if path is not None and not path.exists():
                raise ConfigError(f"{path}: no such file; pass a run dir, a generator file or a reference .pth")
        if json_out is not None:
            refuse_existing(json_out, force)
        own_data = data is None and bool(teacher_data(generator)[0])  # the generator's own training data
        if data is None:
            data = next((Path(root) for root, _ in (teacher_data(generator),
                                                    teacher_data(against) if against else ("", {}))
                         if root and Path(root).is_dir()), None)
        report = evaluate(generator, against, data, device=device, photo_side=photo_size, training_folder=own_data)
        for line in summary_lines(report):
            typer.echo(line)
        if json_out is not None:
            write_json(json_out, report)
            typer.echo(f"report -> {json_out}")
