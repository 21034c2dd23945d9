"""Generated sample clips with audio: for the demo, the video tests and the video benchmark.

Frames are procedural (a drifting colour gradient, a moving disc and stripes) so they compress like
real footage, not like noise, and cost no download. Written with PyAV: h264/yuv420p + AAC in .mp4 by
default; odd sizes, NTSC rates, variable frame rate and display-matrix rotation on request, so the tests
can make every kind of clip a phone or an editor produces. Like every output: sizes that cannot fit in memory
are refused before anything is written, an existing clip only replaced with force, the output locked
against a second run, and a failed run leaves neither a temp file nor a folder it created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy import machine
from cyclegan_deploy.artifacts import atomic_output
from cyclegan_deploy.errors import ConfigError, MediaError
from cyclegan_deploy.machine import gib
from cyclegan_deploy.outputs import (
    check_writable,
    locked,
    missing_dirs,
    os_error_message,
    refuse_existing,
    remove_empty_dirs,
)

AUDIO_RATE = 48000
# memory per pixel of one frame: the float32 drawing and its temporaries (~60 B), the encoder's frames in
# flight (x264 lookahead and references, ~60 frames of 1.5-3 B), with a margin
BYTES_PER_PIXEL = 300


def parse_rate(rate: str | int | float | Fraction) -> Fraction:
    """'30000/1001', '29.97', 25, Fraction(...) -> Fraction (29.97 means NTSC 30000/1001, as players do)."""
    if isinstance(rate, Fraction):
        value = rate
    elif isinstance(rate, str) and "/" in rate:
        num, _, den = rate.partition("/")
        value = Fraction(int(num), int(den))
    else:
        value = Fraction(str(rate)).limit_denominator(1001)
    if value <= 0:
        raise ConfigError(f"frame rate {rate!r} must be positive, e.g. 30 or 30000/1001")
    return value


def sample_frame(index: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """One (H, W, 3) uint8 RGB frame of the procedural clip."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    t = index / 30.0
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        img[..., c] = 0.5 + 0.35 * np.sin(2 * np.pi * (x * (c + 1) * 0.7 + y * 0.9) + phase[c] + t * (c + 1))
    cy, cx = 0.5 + 0.3 * np.sin(t * 1.3), 0.5 + 0.3 * np.cos(t * 0.9)
    disc = ((y - cy) ** 2 + (x - cx) ** 2) < 0.04
    img[disc] = (0.95, 0.85, 0.2)
    stripes = (np.sin(2 * np.pi * (x * 6 - t)) > 0.6) & (y > 0.75)
    img[np.broadcast_to(stripes, (height, width))] *= 0.4
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def frame_times(frames: int, rate: Fraction, vfr: bool) -> list[Fraction]:
    """Presentation times in seconds; VFR cycles frame durations of 1, 2 and 3 frame periods."""
    times, t = [], Fraction(0)
    for i in range(frames):
        times.append(t)
        t += (1 + i % 3 if vfr else 1) / rate
    return times


def make_sample_video(path: str | Path, *, frames: int = 48, size: tuple[int, int] = (256, 256),
                      fps: str | int | float | Fraction = 30, vfr: bool = False, audio: str | None = "aac",
                      rotation: int = 0, codec: str = "libx264", pix_fmt: str | None = None, crf: int = 18,
                      seed: int = 0, time_base: Fraction | None = None, force: bool = True,
                      gop: int | None = None) -> Path:
    """Write a procedural clip (H, W = size as displayed) with a sine-tone audio track; returns the path.

    rotation: display-matrix rotation in degrees counter-clockwise (as VideoFrame.rotation reads it back;
    a phone held upright writes -90); like a camera, the coded pixels are stored rotated the other way, so
    the clip *displays* sample_frame(i, H, W) upright and its coded size is W x H for +-90.
    pix_fmt None: yuv420p, or yuv444p for odd sizes with x264/x265 (4:2:0 H.264/HEVC cannot code odd
    sizes). audio: an encoder name (aac, libopus, ...) or None. force: replace an existing file (the library
    default; `cgdeploy data sample-video` passes --force and refuses otherwise). gop: frames between keyframes
    (the encoder's default if None; `cgdeploy batch` cuts long clips at keyframes).
    """
    import av

    path = Path(path)
    height, width = size
    if rotation % 90:
        raise ConfigError(f"rotation {rotation}: use a multiple of 90 degrees")
    quarter = (rotation // 90) % 4
    coded_h, coded_w = (width, height) if quarter % 2 else (height, width)
    rate = parse_rate(fps)
    if pix_fmt is None:
        odd = coded_h % 2 or coded_w % 2
        pix_fmt = "yuv444p" if odd and codec in ("libx264", "libx265") else "yuv420p"
    # VFR needs a fine clock: 1/90000 (MPEG's) represents every duration used here exactly
    tb = time_base or (Fraction(1, 90000) if vfr else 1 / rate)
    times = frame_times(frames, rate, vfr)
    free, need = machine.available_memory(), BYTES_PER_PIXEL * height * width
    if free is not None and need > free:
        raise ConfigError(f"--size {height}x{width}: a sample clip that size needs ~{gib(need)} GiB, {gib(free)} GiB "
                          "available; choose a smaller --size")
    try:
        with _guarded(path, force), atomic_output(path) as tmp, av.open(str(tmp), "w") as out:
            vs: Any = out.add_stream(codec, rate=rate)
            vs.width, vs.height, vs.pix_fmt = coded_w, coded_h, pix_fmt
            vs.codec_context.time_base = tb
            vs.time_base = tb
            if gop is not None:
                vs.codec_context.gop_size = gop
            if codec in ("libx264", "libx265"):
                vs.options = {"crf": str(crf)}
                if codec == "libx265":
                    vs.options["x265-params"] = "log-level=error"
            if rotation:
                vs.set_display_rotation(rotation)
            aus: Any = None
            if audio:
                aus = out.add_stream(audio, rate=AUDIO_RATE)
                aus.layout = "stereo"
            for i, t in enumerate(times):
                shown = sample_frame(i, height, width, seed)
                coded = np.ascontiguousarray(np.rot90(shown, -quarter)) if quarter else shown
                frame = av.VideoFrame.from_ndarray(coded, format="rgb24")
                frame.pts, frame.time_base = int(t / tb), tb
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
            if aus is not None:
                total = times[-1] + (1 + (frames - 1) % 3 if vfr else 1) / rate if frames else Fraction(0)
                _write_tone(out, aus, float(total))
    except OSError as e:  # a full disk, no permission: named as the clip, not its temp file
        raise MediaError(os_error_message(OSError(e.errno, e.strerror), path) if e.errno else
                         f"{path}: cannot write the sample clip ({e}); use an .mp4/.mkv path in a writable folder"
                         ) from e
    except ValueError as e:  # PyAV: unknown container/codec option
        raise MediaError(f"{path}: cannot write the sample clip ({e}); use an .mp4/.mkv path") from e
    return path


@contextlib.contextmanager
def _guarded(path: Path, force: bool) -> Iterator[None]:
    """The output rules around writing `path`: existing refused unless force (checked again under the lock),
    the folder proven writable, and the folders made for it removed again if the write fails."""
    refuse_existing(path, force)
    created = missing_dirs(path.parent)
    try:
        check_writable(path.parent)
        with locked(path):
            refuse_existing(path, force)
            yield
    except BaseException:
        remove_empty_dirs(created)
        raise


def _write_tone(out: Any, stream: Any, seconds: float) -> None:
    """A gliding sine tone as long as the video (so audio duration can be checked against it)."""
    import av

    n = int(round(seconds * AUDIO_RATE))
    t = np.arange(n, dtype=np.float64) / AUDIO_RATE
    tone = (0.2 * np.sin(2 * np.pi * (330.0 + 60.0 * t) * t)).astype(np.float32)
    ctx = stream.codec_context
    chunk = ctx.frame_size or 1024
    fmt = ctx.format.name
    for start in range(0, n, chunk):
        part = tone[start:start + chunk]
        data: np.ndarray = np.stack([part, part])
        if fmt == "s16":
            data = (data * 32767).astype(np.int16).T.reshape(1, -1)
        elif fmt == "flt":
            data = data.T.reshape(1, -1)
        elif fmt == "s16p":
            data = (data * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
