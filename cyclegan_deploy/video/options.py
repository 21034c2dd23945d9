"""What one video run is asked (VideoOptions), the checks those options get before anything is touched, and
how many frames the run should write (for progress and memory planning)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from cyclegan_deploy.artifacts import KINDS
from cyclegan_deploy.engine_sidecar import Profile, read_engine_sidecar
from cyclegan_deploy.errors import ConfigError, ShapeError
from cyclegan_deploy.video.probe import VideoInfo

# frames per backend call: amortises per-call overhead on GPUs, harmless on CPUs. Default TensorRT engine
# profiles (export/tensorrt.py) take batches up to this.
DEFAULT_BATCH = 4


@dataclass
class VideoOptions:
    batch: int = DEFAULT_BATCH
    side_by_side: bool = False  # write input | output next to each other
    # seconds from the start of the file. A Fraction is taken exactly: `cgdeploy batch` cuts at keyframe
    # timestamps, and a float's rounding could move a boundary frame into the wrong segment (or into none)
    start: float | Fraction = 0.0
    duration: float | Fraction | None = None
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
    # called with the frames written so far, a few times a second from the calling thread (batch workers
    # report progress with it)
    on_frames: Callable[[int], None] | None = None


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


def engine_of(model: Path | None, backend: object) -> Path | None:
    """The TensorRT engine a run uses (the model file, else the backend's own path), None for other models."""
    path = model if model is not None else getattr(backend, "path", None)
    suffixes = next(k.suffixes for k in KINDS if k.name == "tensorrt-engine")
    return Path(path) if path is not None and Path(path).suffix.lower() in suffixes else None


def check_engine_profile(engine: Path, src: Path, batch: int, padded: tuple[int, int], size_given: bool) -> None:
    """Refuse, before any frame is decoded, a run whose batches (batch, C, *padded) the engine's optimization
    profile does not take: TensorRT would fail on the first batch. The profile comes from the engine's sidecar,
    so this needs no TensorRT."""
    sidecar = read_engine_sidecar(engine)
    profile = Profile.from_dict(sidecar.profile)
    (n0, c, h0, w0), (n1, _, h1, w1), (h, w) = profile.min, profile.max, padded
    if profile.covers((batch, c, h, w)):
        return
    frames = f"{src.name}'s frames{' at --size' if size_given else ''}, padded to {h}x{w} (HxW),"
    if profile.covers((min(max(batch, n0), n1), c, h, w)):  # only the batch is outside
        fix = f"pass --batch {n1}" if batch > n1 else f"rebuild it with --min-shape {batch}x{h0}x{w0}"
    else:
        lo, hi = f"{min(n0, batch)}x{min(h0, h)}x{min(w0, w)}", f"{max(n1, batch)}x{max(h1, h)}x{max(w1, w)}"
        rebuild = " ".join(option for option, needed in ((f"--min-shape {lo}", h < h0 or w < w0),
                                                          (f"--max-shape {hi}", h > h1 or w > w1)) if needed)
        fix = (f"rebuild it with `cgdeploy export CHECKPOINT -o DIR --engine {rebuild}`, or pass --size HxW "
               f"within {h0}x{w0} to {h1}x{w1}")
    raise ShapeError(f"{engine}: {frames} in batches of {batch} are outside the engine's optimization profile "
                     f"({profile.describe(sidecar.meta.multiple)}); {fix}")
