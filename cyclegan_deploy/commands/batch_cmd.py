"""`cgdeploy batch`: many videos on Ray workers (scale/batch.py). Thin: options -> BatchOptions -> run_batch."""

from __future__ import annotations

from pathlib import Path

import typer

from cyclegan_deploy.commands.media_cmd import (
    BATCH,
    CODEC,
    CRF,
    NO_AUDIO,
    PIX_FMT,
    PRESET,
    PROGRESS,
    SIZE,
    THREADS,
    THROUGHPUT,
    _size,
)
from cyclegan_deploy.commands.options import (
    ADDRESS,
    BACKEND,
    CHECKPOINT,
    DEVICE,
    ENGINE,
    MODEL,
    PRECISION,
    TILE,
    TILE_OVERLAP,
    resolve_artifact,
)
from cyclegan_deploy.errors import CgDeployError


def register(app: typer.Typer) -> None:
    @app.command("batch")
    def batch_(
        inputs: list[Path] = typer.Argument(..., help="Videos, folders of videos (searched recursively) or .txt files "
                                                      "listing them, one per line."),
        output: Path = typer.Option(..., "-o", "--output", help="Output folder: each input's name (and its folder "
                                                                "below the folder given), same container."),
        engine: Path | None = ENGINE,
        model: Path | None = MODEL,
        checkpoint: Path | None = CHECKPOINT,
        backend: str = BACKEND,
        device: str = DEVICE,
        precision: str | None = PRECISION,
        address: str | None = ADDRESS,
        workers: int | None = typer.Option(None, "--workers", min=1, help="Ray workers (each loads the model once). "
                                                                          "Default: one per GPU share with "
                                                                          "--gpus-per-worker, else one per 2 CPUs."),
        gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="GPUs each worker reserves "
                                                                                      "(0.5: two per GPU)."),
        segment_seconds: float = typer.Option(20.0, "--segment-seconds", min=0.1, help="Cut long videos at the "
                                              "first keyframe after every this many seconds, so one file spreads "
                                              "over workers."),
        retries: int = typer.Option(3, "--retries", min=0, help="Times a segment is run again after its worker "
                                                                 "died."),
        resume: bool = typer.Option(False, "--resume", help="Skip outputs that exist; reuse the finished segments "
                                                            "of an interrupted run."),
        batch: int = BATCH,
        size: str | None = SIZE,
        crf: int = CRF,
        codec: str | None = CODEC,
        preset: str = PRESET,
        pix_fmt: str | None = PIX_FMT,
        no_audio: bool = NO_AUDIO,
        threads: int | None = THREADS,
        throughput: bool = THROUGHPUT,
        tile: int | None = TILE,
        tile_overlap: int = TILE_OVERLAP,
        progress: bool = PROGRESS,
        force: bool = typer.Option(False, "--force", help="Replace outputs that exist (otherwise the run is refused "
                                                          "before any work, naming them)."),
    ) -> None:
        """Translate many videos with Ray workers; each output equals what `cgdeploy video` makes of its input."""
        from cyclegan_deploy.scale.batch import BatchOptions, run_batch

        artifact = resolve_artifact(engine, model, checkpoint)
        video = {"batch": batch, "size": _size(size), "crf": crf, "codec": codec, "preset": preset, "pix_fmt": pix_fmt}
        load = {"backend": backend, "device": device, "precision": precision,
                "performance_hint": "THROUGHPUT" if throughput else None}
        opts = BatchOptions(workers=workers, gpus_per_worker=gpus_per_worker, threads=threads,
                            segment_seconds=segment_seconds, retries=retries, resume=resume, force=force,
                            address=address, audio=not no_audio, video=video, load=load, progress=progress,
                            tile=tile, tile_overlap=tile_overlap)
        try:
            report = run_batch(inputs, output, artifact, opts)
        except KeyboardInterrupt:
            if output.is_dir():
                typer.secho(f"finished outputs and segments are kept in {output}; the same command with --resume "
                            "goes on from there", err=True, fg="yellow")
            raise
        typer.echo(report.table())
        if report.failed:
            first = report.failed[0]
            raise CgDeployError(f"{len(report.failed)} of {len(report.inputs)} inputs failed; first: {first.error}")
