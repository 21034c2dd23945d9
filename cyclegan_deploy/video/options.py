"""What one video run is asked (VideoOptions), the checks those options get before anything is touched, and
how many frames the run should write (for progress and memory planning)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cyclegan_deploy.errors import ConfigError
from cyclegan_deploy.video.probe import VideoInfo


@dataclass
class VideoOptions:
    batch: int = 4  # frames per backend call: amortises per-call overhead on GPUs, harmless on CPUs
    side_by_side: bool = False  # write input | output next to each other
    start: float = 0.0  # seconds from the start of the file
    duration: float | None = None
    crf: int = 18  # visually near-lossless for x264/x265; 0 = lossless
    codec: str | None = None  # h264 | hevc | mpeg4 | vp9 | ffv1 | any PyAV encoder; None: h264 (.webm: vp9)
    # x264/x265 preset. veryfast, not the encoders' medium: medium encodes 720p at ~1/4 the speed for a
    # ~10-20% smaller file, enough to make the encoder, not a GPU model, the bottleneck (and on a CPU it
    # takes cores from the model). --preset medium/slow for smaller files.
    preset: str | None = "veryfast"
    pix_fmt: str | None = None  # None: yuv420p, yuv444p for odd sizes with h264/hevc (see the package doc)
    size: tuple[int, int] | None = None  # (H, W) to resize (upright) frames to before the model
    audio: bool = True
    progress: bool = True  # shown on a terminal only
    queue_batches: int = 2  # batches in flight between two stages: enough to hide jitter, bounded memory
    # batches the backend runs at once (run_many); None: the backend's max_inflight (OpenVINO throughput mode:
    # its optimal number of infer requests, else 1); 1: one synchronous call at a time
    inflight: int | None = None
    # an existing output is replaced. The library default, for the benchmarks that rerun into one file;
    # `cgdeploy video` passes --force (the one overwrite rule: refused otherwise)
    force: bool = True
    model: Path | None = None  # the model file, named in messages (default: what the backend knows)


def check_options(opts: VideoOptions) -> None:
    if opts.batch < 1:
        raise ConfigError(f"--batch {opts.batch}: must be at least 1")
    if opts.inflight is not None and opts.inflight < 1:
        raise ConfigError(f"--inflight {opts.inflight}: must be at least 1 (1: one batch at a time)")
    if opts.start < 0 or (opts.duration is not None and opts.duration <= 0):
        raise ConfigError("--start must be >= 0 and --duration > 0 (seconds)")
    if not 0 <= opts.crf <= 63:
        raise ConfigError(f"--crf {opts.crf}: use 0 (lossless) to 51 for h264/hevc, 63 for vp9; 18 is the default")
    if opts.size is not None and min(opts.size) < 2:
        raise ConfigError(f"--size {opts.size[0]}x{opts.size[1]}: frames must be at least 2x2")


def expected_frames(info: VideoInfo, opts: VideoOptions) -> int | None:
    if opts.start == 0 and opts.duration is None and info.frames:
        return info.frames
    if info.duration is None:
        return None
    seconds = max(0.0, info.duration - opts.start)
    return max(1, round(min(seconds, opts.duration or seconds) * float(info.rate)))


