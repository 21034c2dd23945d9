"""`cgdeploy video`, `cgdeploy translate` and `cgdeploy data sample-video`: thin wrappers over video.py,
images.py and sample_media.py. PyAV, numpy-heavy modules and the backends are imported inside the bodies.
Each passes --force (the one overwrite rule) and the model file (named in messages) to the library call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cyclegan_deploy.commands.options import (
    BACKEND,
    CHECKPOINT,
    DEVICE,
    ENGINE,
    FORCE,
    MODEL,
    PRECISION,
    TILE,
    TILE_OVERLAP,
    resolve_artifact,
)
from cyclegan_deploy.errors import CheckpointError, ConfigError
from cyclegan_deploy.frames import parse_size
from cyclegan_deploy.outputs import output_errors

if TYPE_CHECKING:
    from cyclegan_deploy.backends import Backend

BATCH = typer.Option(4, "--batch", min=1, help="Frames per backend call.")
SIZE = typer.Option(None, "--size", help="Resize (upright) frames to HEIGHTxWIDTH before the model, e.g. 360x640; "
                                         "the output has that size. Summaries print sizes HxW too.")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show the progress bar (on a terminal only).")
THREADS = typer.Option(None, "--threads", min=1, help="CPU threads for the backend (default: physical cores).")
THROUGHPUT = typer.Option(False, "--throughput", help="OpenVINO: compile for throughput (PERFORMANCE_HINT=THROUGHPUT: "
                                                      "several streams) and keep its optimal number of batches in "
                                                      "flight. Default: latency mode, one batch at a time.")
INFLIGHT = typer.Option(None, "--inflight", min=1, help="Batches the backend runs at once (default: what it runs "
                                                        "best: OpenVINO --throughput its optimal number of requests, "
                                                        "else 1). Backends without an async queue run one at a time.")
CRF = typer.Option(18, "--crf", min=0, max=63, help="Quality for h264/hevc/vp9: 0 lossless, 18 near-transparent, 23 "
                                                     "ffmpeg's default.")
CODEC = typer.Option(None, "--codec", help="h264 (default; .webm: vp9) | hevc | mpeg4 | vp9 | ffv1 | any PyAV encoder "
                                           "name.")
PRESET = typer.Option("veryfast", "--preset", help="x264/x265 preset (ultrafast ... veryslow): slower ones give "
                                                   "smaller files, not better frames at the same --crf.")
PIX_FMT = typer.Option(None, "--pix-fmt", help="Encoder pixel format (default yuv420p; yuv444p for odd sizes with "
                                               "h264/hevc to keep the size).")
NO_AUDIO = typer.Option(False, "--no-audio", help="Drop the audio instead of copying it.")
def _size(text: str | None) -> tuple[int, int] | None:
    return None if text is None else parse_size(text, "--size")


def _open_backend(artifact: Path, backend: str, device: str, precision: str | None, threads: int | None,
                  throughput: bool = False, **options: Any) -> Backend:
    """load_backend with the commands' error wording; `options` go to the backend (a False/None one is ignored by
    backends that do not take it, e.g. `serve`'s spin=False)."""
    from cyclegan_deploy.backends import load_backend

    try:
        return load_backend(artifact, backend=backend, device=device, precision=precision, threads=threads,
                            performance_hint="THROUGHPUT" if throughput else None, **options)
    except CheckpointError as e:  # the checkpoint reader names what it found; the file is named here
        if str(artifact) in str(e):
            raise
        raise CheckpointError(f"{artifact}: not a 3-channel image generator ({e})") from e
    except ConfigError as e:
        if throughput and "performance_hint" in str(e):  # another backend refusing the OpenVINO option
            raise ConfigError(f"--throughput is OpenVINO's throughput mode ({e}); add --backend openvino") from e
        raise


def _open(artifact: Path, backend: str, device: str, precision: str | None, threads: int | None, throughput: bool,
          tile: int | None, overlap: int) -> Backend:
    """_open_backend, wrapped in a TiledBackend with --tile."""
    from cyclegan_deploy.tiling import maybe_tiled

    return maybe_tiled(_open_backend(artifact, backend, device, precision, threads, throughput), tile, overlap)


def _data_group(app: typer.Typer) -> typer.Typer | None:
    """The `data` sub-app cli.py adds (sample-video sits next to `data synth`)."""
    for group in app.registered_groups:
        if group.name == "data" and group.typer_instance is not None:
            return group.typer_instance
    return None


def register(app: typer.Typer, *sub: typer.Typer) -> None:
    @app.command("video")
    def video(
        src: Path = typer.Argument(..., help="Input video (mp4, mov, mkv, webm, ...); audio is copied unchanged."),
        output: Path = typer.Option(..., "-o", "--output", help="Output video; the extension picks the container."),
        engine: Path | None = ENGINE,
        model: Path | None = MODEL,
        checkpoint: Path | None = CHECKPOINT,
        backend: str = BACKEND,
        device: str = DEVICE,
        precision: str | None = PRECISION,
        batch: int = BATCH,
        side_by_side: bool = typer.Option(False, "--side-by-side", help="Write input | output side by side."),
        start: float = typer.Option(0.0, "--start", min=0.0, help="Start at this second of the input."),
        duration: float | None = typer.Option(None, "--duration", min=0.0, help="Seconds to translate."),
        crf: int = CRF,
        codec: str | None = CODEC,
        preset: str = PRESET,
        pix_fmt: str | None = PIX_FMT,
        size: str | None = SIZE,
        threads: int | None = THREADS,
        throughput: bool = THROUGHPUT,
        inflight: int | None = INFLIGHT,
        tile: int | None = TILE,
        tile_overlap: int = TILE_OVERLAP,
        no_audio: bool = NO_AUDIO,
        progress: bool = PROGRESS,
        force: bool = FORCE,
    ) -> None:
        """Translate every frame of a video; keeps frame count, timing, size, rotation (upright) and audio."""
        from cyclegan_deploy.video import VideoOptions, translate_video

        artifact = resolve_artifact(engine, model, checkpoint)
        opts = VideoOptions(batch=batch, side_by_side=side_by_side, start=start, duration=duration, crf=crf,
                            codec=codec, preset=preset, pix_fmt=pix_fmt, size=_size(size), audio=not no_audio,
                            progress=progress, force=force, model=artifact, inflight=inflight)
        # OS errors while writing (disk full mid-encode: FFmpeg's carry no file name) name the output
        with output_errors(output), _open(artifact, backend, device, precision, threads, throughput, tile,
                                                    tile_overlap) as be:
            report = translate_video(src, output, be, opts)
        typer.echo(report.summary())

    @app.command("translate")
    def translate(
        src: Path = typer.Argument(..., help="An image, or a folder of images (searched recursively)."),
        output: Path = typer.Option(..., "-o", "--output", help="Output folder (same relative names)."),
        engine: Path | None = ENGINE,
        model: Path | None = MODEL,
        checkpoint: Path | None = CHECKPOINT,
        backend: str = BACKEND,
        device: str = DEVICE,
        precision: str | None = PRECISION,
        batch: int = BATCH,
        size: str | None = SIZE,
        threads: int | None = THREADS,
        throughput: bool = THROUGHPUT,
        inflight: int | None = INFLIGHT,
        tile: int | None = TILE,
        tile_overlap: int = TILE_OVERLAP,
        progress: bool = PROGRESS,
        force: bool = typer.Option(False, "--force", help="Replace output files that already exist (otherwise the "
                                                          "run is refused before any work, naming them)."),
    ) -> None:
        """Translate images (same size out as in); unreadable, too large files are listed and skipped."""
        from cyclegan_deploy.images import translate_images

        artifact = resolve_artifact(engine, model, checkpoint)
        with output_errors(output), _open(artifact, backend, device, precision, threads, throughput, tile,
                                                    tile_overlap) as be:
            report = translate_images(src, output, be, batch=batch, size=_size(size), force=force,
                                      progress=progress, model=artifact, inflight=inflight)
        typer.echo(report.summary())

    data = _data_group(app)
    if data is None:
        return

    @data.command("sample-video")
    def sample_video(
        out: Path = typer.Argument(..., help="Output clip (.mp4 recommended)."),
        frames: int = typer.Option(90, "--frames", min=1, help="Number of frames."),
        size: str = typer.Option("256x256", "--size", help="HEIGHTxWIDTH (summaries print HxW too)."),
        fps: str = typer.Option("30", "--fps", help="Frame rate, e.g. 30, 25 or 30000/1001."),
        audio: bool = typer.Option(True, "--audio/--no-audio", help="Add an AAC tone track."),
        rotation: int = typer.Option(0, "--rotation", help="Display-matrix rotation in degrees (phone portrait: "
                                                           "-90)."),
        force: bool = FORCE,
    ) -> None:
        """Write a procedural test clip with audio (no download), e.g. for `cgdeploy video`."""
        from cyclegan_deploy.sample_media import make_sample_video

        hw = parse_size(size, "--size")
        path = make_sample_video(out, frames=frames, size=hw, fps=fps, audio="aac" if audio else None,
                                 rotation=rotation, force=force)
        typer.echo(f"wrote {path}: {frames} frames {hw[0]}x{hw[1]} (HxW) @ {fps} fps"
                   + (" with AAC audio" if audio else ""))
