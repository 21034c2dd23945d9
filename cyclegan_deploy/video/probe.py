"""What a video file holds (streams, size, rotation, rate, colour tags), which encoder and pixel format to
write, and the one-line media errors that name the file. PyAV is imported inside the functions."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from cyclegan_deploy.errors import CgDeployError, ConfigError, MediaError

CODECS = {"h264": "libx264", "avc": "libx264", "x264": "libx264", "hevc": "libx265", "h265": "libx265",
          "x265": "libx265", "mpeg4": "mpeg4", "vp9": "libvpx-vp9", "ffv1": "ffv1"}
# AVColorSpace (what frames carry) -> swscale matrix (what reformat takes); unknown ones stay swscale's 601
SWS_COLORSPACE = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
_X26X = ("libx264", "libx265")  # the encoders whose 4:2:0 profiles cannot code an odd width or height
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


@dataclass
class VideoInfo:
    path: Path
    width: int  # coded size of the first frame
    height: int
    rotation: int  # degrees counter-clockwise, multiple of 90 (as VideoFrame.rotation reads it)
    rate: Fraction
    time_base: Fraction
    start: float  # container start time in seconds (>= 0 counts as the origin of --start)
    duration: float | None
    frames: int  # frames the container's index declares (0: unknown)
    audio: list[str]  # codec names of the audio streams
    colorspace: int
    color_primaries: int
    color_trc: int

    @property
    def display_size(self) -> tuple[int, int]:
        """(H, W) as a player shows it: rotated by the display matrix."""
        return (self.width, self.height) if self.rotation % 180 else (self.height, self.width)


def one_line(e: BaseException) -> str:
    """The first line of an exception's text, bounded: FFmpeg errors can carry whole logs."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:240]


def media_error(path: Path, e: BaseException) -> MediaError:
    """A PyAV/OS error on reading `path` as one line that names the file and what to do."""
    import av

    if isinstance(e, av.error.FileNotFoundError | FileNotFoundError):
        return MediaError(f"{path}: no such file; check the path")
    if isinstance(e, av.error.InvalidDataError):
        return MediaError(f"{path}: not a readable video (invalid or truncated data: {e.strerror}); "
                          "check the file plays, re-copy it if it was cut short")
    return MediaError(f"{path}: cannot read video ({type(e).__name__}: {one_line(e)})")


def probe_video(path: str | Path) -> VideoInfo:
    """Open `path`, check it has a decodable video stream and read what the pipeline needs."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file; check the path" if not path.exists()
                         else f"{path}: is a folder, not a video file; use `cgdeploy translate` for image folders")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"{path}: has no video stream (audio-only or not a video); pass a video file")
            if c.format.name == "image2" or c.format.name.endswith("_pipe"):  # FFmpeg's still-image readers
                raise MediaError(f"{path}: is an image ({c.format.name.removesuffix('_pipe')}), not a video; "
                                 f"translate images with `cgdeploy translate {path} -o OUT_DIR`")
            vs = c.streams.video[0]
            first = next(iter(c.decode(vs)), None)
            if first is None:
                raise MediaError(f"{path}: no decodable video frame; the file is empty or damaged")
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(30)
            duration = c.duration / 1e6 if c.duration else (
                float(vs.duration * vs.time_base) if vs.duration and vs.time_base else None)
            rotation = int(round(first.rotation / 90.0)) * 90 % 360 if first.rotation % 90 == 0 else 0
            return VideoInfo(path, first.width, first.height, rotation, Fraction(rate),
                             Fraction(vs.time_base or 1 / Fraction(rate)), (c.start_time or 0) / 1e6, duration,
                             vs.frames, [a.codec_context.name for a in c.streams.audio], int(first.colorspace),
                             int(first.color_primaries), int(first.color_trc))
    except CgDeployError:
        raise
    except Exception as e:  # av.error.* and OSError: one line naming the file
        raise media_error(path, e) from e


def output_codec(name: str | None, dst: Path) -> str:
    """CLI codec name -> PyAV encoder, checked to exist in this PyAV build."""
    import av

    name = (name or ("vp9" if dst.suffix.lower() == ".webm" else "h264")).lower()
    encoder = CODECS.get(name, name)
    try:
        codec = av.Codec(encoder, "w")
    except Exception:
        raise ConfigError(f"--codec {name}: no such video encoder in this PyAV build; use one of "
                          f"{', '.join(sorted(set(CODECS) - {'avc', 'x264', 'x265', 'h265'}))}") from None
    if codec.type != "video":
        raise ConfigError(f"--codec {name} is a {codec.type} codec; pick a video codec such as h264")
    return encoder


def pick_pix_fmt(encoder: str, height: int, width: int, asked: str | None) -> tuple[str, bool]:
    """(pixel format, pad odd size to even?) — see cyclegan_deploy.video's docstring for why odd sizes go 4:4:4."""
    import av

    odd = bool(height % 2 or width % 2)
    if asked:
        return asked, odd and asked.startswith(("yuv420", "nv12")) and encoder in _X26X
    if encoder in _X26X:
        return ("yuv444p" if odd else "yuv420p"), False
    formats = [f.name for f in (av.Codec(encoder, "w").video_formats or [])]
    return ("yuv420p" if not formats or "yuv420p" in formats else formats[0]), False


def check_encoder_options(encoder: str, pix_fmt: str | None, preset: str | None) -> None:
    """--pix-fmt must be one the encoder takes and --preset one x264/x265 know: checked before any work, so a
    typo is named as the option it is (not reported later as a container problem)."""
    import av

    if pix_fmt:
        formats = [f.name for f in (av.Codec(encoder, "w").video_formats or [])]
        if formats and pix_fmt not in formats:
            raise ConfigError(f"--pix-fmt {pix_fmt}: {encoder} does not take it; use one of {', '.join(formats)}")
    if preset and encoder in _X26X and preset not in X26X_PRESETS:
        raise ConfigError(f"--preset {preset}: not a {encoder} preset; use one of {', '.join(X26X_PRESETS)}")
