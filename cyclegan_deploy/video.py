"""Video translation with PyAV: decode -> batches -> backend -> encode, audio copied, stages overlapped.

Five stages run in their own threads joined by bounded queues (decode, pre-processing, inference,
post-processing, encode), so the model never waits on the codec while there is work queued and the
codec threads use the cores the model leaves. PyAV, numpy and the inference runtimes release the GIL in
their heavy calls, which is what makes threads (not processes) enough here.

What is kept from the input, and how:
- Frame count and timestamps: every decoded frame in the window is encoded with the source pts (same
  time base), so 29.97 (30000/1001) and variable-rate clips keep their exact timing. A source without
  pts, or with a non-increasing one, gets the next tick (counted in the report's warnings).
- Size: output size == displayed input size (or --size, or twice the width with --side-by-side).
  H.264/HEVC in 4:2:0 cannot code an odd width or height, so for odd sizes the default pixel format
  becomes yuv444p (same size, High 4:4:4 profile: plays in ffmpeg/VLC/mpv, not in every browser).
  `pix_fmt="yuv420p"` forces 4:2:0 and then pads the odd dimension by one repeated row/column.
- Rotation: phones store portrait clips as landscape pixels plus a display matrix. Frames are rotated
  upright before the model (CycleGAN models are trained on upright images) and written upright with
  no display matrix, so the output displays exactly like the input. Flips in the matrix are ignored.
- Audio: every audio stream is copied packet for packet (no re-encode). With --start/--duration the
  packets that start inside the window are kept and shifted by the same offset as the video.
- Colour: frames are converted with the input's matrix and range, and the output is tagged with the
  input's colour space, primaries and transfer (limited range), so HD BT.709 clips keep their colours.
- Other streams (subtitles, data) are not copied. MKV output of a clip whose audio starts before 0 (AAC
  priming) shifts all timestamps by that amount (Matroska has no negative times); MP4/MOV keep them.

Over 500 lines on purpose: the stage functions, the writer and the thread runner share one state object
and one error/cleanup path (temp file, Ctrl-C); split apart they would each need the others' internals.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cyclegan_deploy.backends.base import Backend
from cyclegan_deploy.errors import CgDeployError, ConfigError, MediaError, ShapeError
from cyclegan_deploy.frames import crop, pad_to_multiple, padded_size, to_model
from cyclegan_deploy.frames import from_model as frames_from_model

CODECS = {"h264": "libx264", "avc": "libx264", "x264": "libx264", "hevc": "libx265", "h265": "libx265",
          "x265": "libx265", "mpeg4": "mpeg4", "vp9": "libvpx-vp9", "ffv1": "ffv1"}
STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")
# AVColorSpace (what frames carry) -> swscale matrix (what reformat takes); unknown ones stay swscale's 601
_SWS_COLORSPACE = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}


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
    pix_fmt: str | None = None  # None: yuv420p, yuv444p for odd sizes with h264/hevc (see module doc)
    size: tuple[int, int] | None = None  # (H, W) to resize (upright) frames to before the model
    audio: bool = True
    progress: bool = True
    queue_batches: int = 2  # batches in flight between two stages: enough to hide jitter, bounded memory


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


@dataclass
class VideoReport:
    src: Path
    dst: Path
    frames: int
    size: tuple[int, int]  # output (H, W)
    rate: Fraction
    codec: str
    pix_fmt: str
    audio: list[str]
    rotation: int
    backend: str
    batch: int
    wall_s: float
    busy_s: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        h, w = self.size
        audio = ", ".join(self.audio) + " (copied)" if self.audio else "none"
        busy = ", ".join(f"{k} {v:.2f}s" for k, v in self.busy_s.items())
        infer = self.busy_s.get("inference", 0.0)
        turn = {90: "90 deg counter-clockwise", 180: "180 deg", 270: "90 deg clockwise"}.get(self.rotation, "")
        rotated = f", turned {turn} to upright (display matrix)" if turn else ""
        lines = [f"wrote {self.dst}: {self.frames} frames {w}x{h} @ {float(self.rate):.3f} fps, {self.codec} "
                 f"{self.pix_fmt}, audio: {audio}{rotated}",
                 f"{self.wall_s:.2f}s = {self.fps:.2f} fps end-to-end with {self.backend} batch {self.batch}, "
                 f"model busy {infer / self.wall_s if self.wall_s else 0:.0%} of the time; stage busy: {busy}"]
        return "\n".join(lines + [f"warning: {m}" for m in self.warnings])


def _media_error(path: Path, e: BaseException) -> MediaError:
    import av

    if isinstance(e, av.error.FileNotFoundError | FileNotFoundError):
        return MediaError(f"{path}: no such file; check the path")
    if isinstance(e, av.error.InvalidDataError):
        return MediaError(f"{path}: not a readable video (invalid or truncated data: {e.strerror}); "
                          "check the file plays, re-copy it if it was cut short")
    return MediaError(f"{path}: cannot read video ({type(e).__name__}: {_one_line(e)})")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:240]


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
        raise _media_error(path, e) from e


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
    """(pixel format, pad odd size to even?) — see the module doc for why odd sizes go 4:4:4."""
    import av

    odd = bool(height % 2 or width % 2)
    if asked:
        return asked, odd and asked.startswith(("yuv420", "nv12")) and encoder in ("libx264", "libx265")
    if encoder in ("libx264", "libx265"):
        return ("yuv444p" if odd else "yuv420p"), False
    formats = [f.name for f in (av.Codec(encoder, "w").video_formats or [])]
    return ("yuv420p" if not formats or "yuv420p" in formats else formats[0]), False


def _check_paths(src: Path, dst: Path) -> None:
    if dst.exists() and dst.is_dir():
        raise ConfigError(f"{dst}: is a folder; give the output video's file name, e.g. {dst / 'out.mp4'}")
    if src.exists() and (dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst))):
        raise ConfigError(f"{dst}: output is the input file; choose another output name")
    if not dst.suffix:
        raise ConfigError(f"{dst}: no file extension to choose the container from; use .mp4, .mkv, .mov or .webm")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "a file is in the way" if isinstance(e, FileExistsError | NotADirectoryError) else e.strerror
        raise MediaError(f"{dst.parent}: cannot create the output folder ({why}); choose another -o") from e
    if not os.access(dst.parent, os.W_OK):
        raise MediaError(f"{dst.parent}: output folder is not writable; choose another -o")


class _Stopped(Exception):
    """Raised inside a stage when another stage failed or the user pressed Ctrl-C."""


class _Pipeline:
    """Threads joined by bounded queues; the first error anywhere stops every stage."""

    END = object()

    def __init__(self, depth: int) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.busy = dict.fromkeys(STAGES, 0.0)
        self.depth = depth
        self.threads: list[threading.Thread] = []

    def get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        raise _Stopped

    def put(self, q: queue.Queue[Any], item: Any) -> None:
        while not self.stop.is_set():
            try:
                return q.put(item, timeout=0.05)
            except queue.Full:
                continue
        raise _Stopped

    def _run(self, body: Callable[[], None]) -> None:
        try:
            body()
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - any failure in a stage must stop the others
            if self.error is None:
                self.error = e
            self.stop.set()

    def start(self, source: Iterator[Any], maps: list[tuple[str, Callable[[Any], Any]]],
              sink: Callable[[Any], None], finish: Callable[[], None]) -> None:
        queues: list[queue.Queue[Any]] = [queue.Queue(self.depth) for _ in range(len(maps) + 1)]

        def produce() -> None:
            try:
                while True:
                    t = time.perf_counter()
                    item = next(source, self.END)
                    self.busy["decode"] += time.perf_counter() - t
                    self.put(queues[0], item)
                    if item is self.END:
                        return
            finally:
                close = getattr(source, "close", None)
                if close is not None:
                    close()  # closes the input container when the run stops early

        def transform(name: str, fn: Callable[[Any], Any], src: queue.Queue[Any], dst: queue.Queue[Any]) -> None:
            while (item := self.get(src)) is not self.END:
                t = time.perf_counter()
                out = fn(item)
                self.busy[name] += time.perf_counter() - t
                self.put(dst, out)
            self.put(dst, self.END)

        def consume() -> None:
            while (item := self.get(queues[-1])) is not self.END:
                t = time.perf_counter()
                sink(item)
                self.busy["encode"] += time.perf_counter() - t
            t = time.perf_counter()
            finish()
            self.busy["encode"] += time.perf_counter() - t

        bodies = [produce] + [partial(transform, n, f, queues[i], queues[i + 1])
                              for i, (n, f) in enumerate(maps)] + [consume]
        names = ["decode"] + [n for n, _ in maps] + ["encode"]
        for name, body in zip(names, bodies, strict=True):
            # daemon: a stage stuck in a long backend call must not keep the process alive after Ctrl-C
            th = threading.Thread(target=self._run, args=(body,), name=f"cgdeploy-{name}", daemon=True)
            self.threads.append(th)
            th.start()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def shutdown(self, timeout: float = 30.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


@dataclass
class _Batch:
    frames: list[Any]  # decoded av.VideoFrames (then, after postprocess, the ones to encode)
    pts: list[int]  # output pts, in the input stream's time base
    rgb: np.ndarray | None = None  # (batch, H, W, 3) uint8 upright model input; rows past len(pts) repeat
    tensor: np.ndarray | None = None
    out: np.ndarray | None = None


class _Job:
    """One run: the stage functions and the state they share (audio packets waiting for their video).

    Colour conversion and normalisation run per frame on a small thread pool inside the pre/post stages
    (swscale and numpy release the GIL), so those stages keep up with a GPU model at 720p; decode and
    encode threads then only drive FFmpeg.
    """

    def __init__(self, info: VideoInfo, backend: Backend, opts: VideoOptions, pool: ThreadPoolExecutor) -> None:
        self.info, self.backend, self.opts, self.pool = info, backend, opts, pool
        self.size = opts.size or info.display_size
        self.k = info.rotation // 90
        h, w = self.size
        self.scaled = (w, h) if self.k % 2 else (h, w)  # (H, W) to scale the coded frame to, before rotating
        self.interp = "AREA" if h * w < info.width * info.height else "BICUBIC"  # AREA: no aliasing when shrinking
        self.multiple = max(1, int(backend.meta.multiple))
        self.sws_threads = 0 if opts.batch == 1 else 1  # frames already convert in parallel when batched
        self.local = threading.local()  # one swscale context per worker thread, reused frame after frame
        self.origin = Fraction(max(info.start, 0.0)).limit_denominator(10**6) + Fraction(str(opts.start))
        self.end = self.origin + Fraction(str(opts.duration)) if opts.duration is not None else None
        self.audio: deque[tuple[float, int, Any]] = deque()  # (time, input stream index, packet)
        self.done = 0
        self.no_pts = 0  # frames without a timestamp (raw .h264 streams): spaced at the stream's rate
        self.warnings: list[str] = []
        self.reformat_args: dict[str, Any] = {}  # set by the writer: encoder pixel format and colour tags
        self.pad_even = (0, 0)

    # -- decode ----------------------------------------------------------------------------------------
    def decode(self) -> Iterator[_Batch]:
        import av

        info, opts, n = self.info, self.opts, self.opts.batch
        trim = opts.start > 0
        with av.open(str(info.path)) as c:
            vs = c.streams.video[0]
            vs.thread_type = "AUTO"
            streams = [vs] + (list(c.streams.audio) if opts.audio else [])
            if trim:
                c.seek(int(self.origin * 1_000_000), backward=True)
            batch, packets, video_done = _Batch([], []), 0, False
            audio_done = {a.index: not opts.audio for a in c.streams.audio}
            tb = Fraction(vs.time_base or info.time_base)
            shift, step, next_pts = round(self.origin / tb), max(1, int(1 / (info.rate * tb))), 0
            try:
                for packet in c.demux(streams):
                    if packet.stream.type == "audio":
                        if packet.size and packet.dts is not None:
                            audio_done[packet.stream.index] |= self._keep_audio(packet, trim)
                        if video_done and all(audio_done.values()):
                            break
                        continue
                    if video_done:
                        continue
                    packets += packet.size > 0
                    for frame in vs.decode(packet):
                        fpts = frame.pts if frame.pts is not None else next_pts
                        self.no_pts += frame.pts is None
                        next_pts = fpts + step
                        if fpts * tb < self.origin:
                            continue
                        if self.end is not None and fpts * tb >= self.end:
                            video_done = True
                            break
                        batch.frames.append(frame)
                        batch.pts.append(fpts - shift)
                        if len(batch.pts) == n:
                            yield batch
                            batch = _Batch([], [])
                    if video_done and all(audio_done.values()):
                        break
            except av.error.FFmpegError as e:
                raise MediaError(f"{info.path}: cannot decode the video after {self.done} frames "
                                 f"({_one_line(e)}); the file is damaged or truncated") from e
            if not trim and self.end is None and not video_done and info.frames and packets < info.frames:
                raise MediaError(f"{info.path}: truncated: its index lists {info.frames} video frames but the data "
                                 f"ends after {packets}; re-copy the file, or keep the good part with --duration")
            if batch.pts:
                yield batch

    def _keep_audio(self, packet: Any, trim: bool) -> bool:
        """Queue an audio packet if it starts in the window; True once the stream has passed the window."""
        tb = Fraction(packet.time_base)
        t = (packet.pts if packet.pts is not None else packet.dts) * tb
        if self.end is not None and t >= self.end:
            return True
        if trim and t < self.origin:
            return False
        shift = round(self.origin / tb)
        if shift:
            packet.pts = None if packet.pts is None else packet.pts - shift
            packet.dts -= shift
        self.audio.append((float(t - self.origin), packet.stream.index, packet))
        return False

    # -- model -----------------------------------------------------------------------------------------
    def _sws(self) -> Any:
        sws = getattr(self.local, "sws", None)
        if sws is None:
            from av.video.reformatter import VideoReformatter

            sws = self.local.sws = VideoReformatter()
        return sws

    def _pre_one(self, b: _Batch, i: int) -> None:
        assert b.rgb is not None and b.tensor is not None
        frame = b.frames[i]
        h, w = self.scaled
        kwargs: dict[str, Any] = {"format": "rgb24", "threads": self.sws_threads}
        if (frame.height, frame.width) != (h, w):  # no scaling arguments otherwise: swscale's plain path
            kwargs.update(width=w, height=h, interpolation=self.interp)
        rgb = self._sws().reformat(frame, **kwargs).to_ndarray()
        b.rgb[i] = np.rot90(rgb, self.k) if self.k else rgb
        if b.tensor.shape[2:] == b.rgb.shape[1:3]:  # no padding: normalise straight into the batch tensor
            t = b.tensor[i]
            np.multiply(b.rgb[i].transpose(2, 0, 1), np.float32(1.0 / 127.5), out=t, casting="unsafe")
            t -= 1.0  # the same two float32 steps as frames.to_model, so the numbers are identical
        else:
            b.tensor[i] = pad_to_multiple(to_model(b.rgb[i]), self.multiple)[0]

    def preprocess(self, b: _Batch) -> _Batch:
        n, count, (h, w) = self.opts.batch, len(b.pts), self.size
        ph, pw = padded_size(h, w, self.multiple)
        b.rgb, b.tensor = np.empty((n, h, w, 3), np.uint8), np.empty((n, 3, ph, pw), np.float32)
        list(self.pool.map(partial(self._pre_one, b), range(count)))
        if count < n:  # fixed batch shape: no re-plan / re-compile in the backend for the last batch
            b.rgb[count:], b.tensor[count:] = b.rgb[count - 1], b.tensor[count - 1]
        b.frames = []
        return b

    def infer(self, b: _Batch) -> _Batch:
        assert b.tensor is not None
        try:
            out = self.backend(b.tensor)
        except CgDeployError as e:
            raise type(e)(f"{self.info.path}: {self.backend.name} on a {_shape(b.tensor)} batch: {e}") from e
        except Exception as e:  # runtime errors (shape outside an engine profile, out of memory...)
            raise ShapeError(f"{self.info.path}: {self.backend.name} failed on a {_shape(b.tensor)} batch "
                             f"({_one_line(e)}); try a smaller --batch or --size HxW") from e
        if out.shape != b.tensor.shape:
            raise ShapeError(f"{self.backend.name} returned {_shape(out)} for a {_shape(b.tensor)} batch; the "
                             "model must map 3 channels to 3 at the same size (is it a CycleGAN/pix2pix generator?)")
        b.out, b.tensor = out, None
        return b

    def _post_one(self, b: _Batch, i: int) -> Any:
        import av

        assert b.out is not None and b.rgb is not None
        h, w = self.size
        rgb = frames_from_model(crop(b.out[i:i + 1], h, w))[0]
        if self.opts.side_by_side:
            rgb = np.concatenate([b.rgb[i], rgb], axis=1)
        if any(self.pad_even):
            rgb = np.pad(rgb, ((0, self.pad_even[0]), (0, self.pad_even[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        return self._sws().reformat(frame, threads=self.sws_threads, **self.reformat_args)

    def postprocess(self, b: _Batch) -> _Batch:
        b.frames = list(self.pool.map(partial(self._post_one, b), range(len(b.pts))))
        b.out = b.rgb = None
        return b


def _shape(a: np.ndarray) -> str:
    return "x".join(map(str, a.shape))


class _Writer:
    """Owns the output container: encodes frames, interleaves the copied audio packets by time."""

    def __init__(self, tmp: Path, dst: Path, job: _Job, encoder: str, pix_fmt: str, pad_even: bool) -> None:
        import av

        info, opts = job.info, job.opts
        self.job, self.pix_fmt = job, pix_fmt
        h, w = job.size
        w *= 2 if opts.side_by_side else 1
        job.pad_even = (h % 2, w % 2) if pad_even else (0, 0)
        self.height, self.width = h + job.pad_even[0], w + job.pad_even[1]
        self.tb = info.time_base
        if encoder == "mpeg4" and self.tb.denominator > 65535:  # MPEG-4 part 2 limit on the clock
            self.tb = Fraction(1, 60000)
        try:
            self.out = av.open(str(tmp), "w")
        except ValueError as e:
            raise ConfigError(f"{dst}: cannot tell the container from the extension; use .mp4, .mkv, "
                              ".mov or .webm") from e
        except Exception as e:
            raise MediaError(f"{dst}: cannot write the output ({_one_line(e)})") from e
        try:
            self.vs = self._video_stream(encoder, info, opts)
            self.audio_map = {}
            if opts.audio:
                with av.open(str(info.path)) as src:
                    for a in src.streams.audio:
                        self.audio_map[a.index] = self.out.add_stream_from_template(a)
            self.out.start_encoding()  # header now: container/codec mismatches fail before any work
        except Exception as e:
            self.out.close()
            raise MediaError(f"{dst}: cannot set up {encoder}/{pix_fmt}"
                             f"{' + audio ' + ', '.join(info.audio) if opts.audio and info.audio else ''} in a "
                             f"{dst.suffix} file ({_one_line(e)}); try .mkv (takes any codec) or --no-audio") from e
        cs = _SWS_COLORSPACE.get(info.colorspace)
        # RGB -> YUV with the input's matrix (HD clips: BT.709), limited range: what the stream is tagged with
        job.reformat_args = {"format": pix_fmt, "dst_color_range": "MPEG", **({"dst_colorspace": cs} if cs else {})}
        self.frames, self.last_pts, self.repaired = 0, -(2**62), 0

    def _video_stream(self, encoder: str, info: VideoInfo, opts: VideoOptions) -> Any:
        vs: Any = self.out.add_stream(encoder, rate=info.rate)
        vs.width, vs.height, vs.pix_fmt = self.width, self.height, self.pix_fmt
        vs.time_base = vs.codec_context.time_base = self.tb
        cc: Any = vs.codec_context
        if info.colorspace not in (0, 2):
            cc.colorspace = info.colorspace
        if info.color_primaries not in (0, 2):
            cc.color_primaries = info.color_primaries
        if info.color_trc not in (0, 2):
            cc.color_trc = info.color_trc
        cc.color_range = 1  # limited: what players assume for video
        options: dict[str, str] = {}
        if encoder in ("libx264", "libx265", "libvpx-vp9"):
            options["crf"] = str(opts.crf)
        if encoder == "libvpx-vp9":
            options.update({"b": "0", "row-mt": "1"})  # b=0: pure constant quality
        if opts.preset and encoder in ("libx264", "libx265"):
            options["preset"] = opts.preset
        if encoder == "libx265":
            options["x265-params"] = "log-level=error"
            if self.out.format.name.startswith("mov"):
                vs.codec_tag = "hvc1"  # the tag Apple players need for HEVC in .mp4/.mov
        if encoder == "mpeg4":  # fixed quantiser, scaled from --crf (18 -> q 3)
            cc.qscale = True
            cc.global_quality = max(1, min(31, round(opts.crf / 6))) * 118
        vs.options = options
        return vs

    def write(self, b: _Batch) -> None:
        scale = self.job.info.time_base / self.tb
        for frame, p in zip(b.frames, b.pts, strict=True):
            p = round(p * scale) if scale != 1 else p
            if p <= self.last_pts:  # encoders reject non-increasing pts
                p = self.last_pts + 1
                self.repaired += 1
            self.last_pts = p
            frame.pts, frame.time_base = p, self.tb
            self.out.mux(self.vs.encode(frame))
            self.frames += 1
        self.job.done = self.frames
        self._mux_audio(float((self.last_pts + 1) * self.tb))

    def _mux_audio(self, until: float) -> None:
        q = self.job.audio
        while q and q[0][0] <= until:
            _, index, packet = q.popleft()
            # the index was taken at demux time: the input container (and its streams) may be closed by now
            packet.stream = self.audio_map[index]
            self.out.mux(packet)

    def finish(self) -> None:
        self.out.mux(self.vs.encode(None))
        self._mux_audio(float("inf"))


def translate_video(src: str | Path, dst: str | Path, backend: Backend, opts: VideoOptions | None = None
                    ) -> VideoReport:
    """Translate every frame of `src` with `backend` into `dst` (see the module doc for what is kept)."""
    src, dst, opts = Path(src), Path(dst), opts or VideoOptions()
    _check_options(opts)
    info = probe_video(src)  # before touching the output side: a bad input must not create folders
    _check_paths(src, dst)
    if info.duration is not None and opts.start >= info.duration:
        raise ConfigError(f"--start {opts.start}: {src} is only {info.duration:.2f}s long")
    meta = backend.meta
    if meta.input_nc != 3 or meta.output_nc != 3:
        raise ConfigError(f"{meta.source or backend.name}: the model maps {meta.input_nc} to {meta.output_nc} "
                          "channels; video needs an RGB (3 -> 3 channel) generator")
    pool = ThreadPoolExecutor(max(1, min(opts.batch, os.cpu_count() or 1, 8)), thread_name_prefix="cgdeploy-frames")
    job = _Job(info, backend, opts, pool)
    encoder = output_codec(opts.codec, dst)
    h, w = job.size
    pix_fmt, pad_even = pick_pix_fmt(encoder, h, w * (2 if opts.side_by_side else 1), opts.pix_fmt)
    tmp = dst.with_name(f".{dst.stem}.partial-{os.getpid()}{dst.suffix}")
    writer: _Writer | None = None
    pipe = _Pipeline(opts.queue_batches)
    ok = False
    t0 = time.perf_counter()
    try:
        writer = _Writer(tmp, dst, job, encoder, pix_fmt, pad_even)
        pipe.start(job.decode(), [("preprocess", job.preprocess), ("inference", job.infer),
                                  ("postprocess", job.postprocess)], writer.write, writer.finish)
        _watch(pipe, job, _expected_frames(info, opts), opts.progress)
        pipe.shutdown()
        if pipe.error is not None:
            raise pipe.error
        if writer.frames == 0:
            raise MediaError(f"{src}: no video frames from {opts.start}s on; check --start/--duration (the video "
                             f"is {info.duration or 0:.2f}s long)")
        writer.out.close()
        os.replace(tmp, dst)
        ok = True
    except (CgDeployError, KeyboardInterrupt):
        raise
    except Exception as e:  # codec/muxer failures surface as av errors
        raise MediaError(f"{dst}: writing the video failed ({type(e).__name__}: {_one_line(e)})") from e
    finally:
        if not ok:
            pipe.shutdown()
            if writer is not None and not any(t.is_alive() and t.name.endswith("encode") for t in pipe.threads):
                try:
                    writer.out.close()
                except Exception:  # noqa: BLE001 - the file is deleted next; closing is best effort
                    pass
            tmp.unlink(missing_ok=True)
        pool.shutdown(wait=True, cancel_futures=True)  # per-frame tasks are short
    if writer.repaired:
        job.warnings.append(f"{writer.repaired} frame timestamps were missing or not increasing: gave each the next "
                            "tick")
    if job.no_pts:
        job.warnings.append(f"{job.no_pts} frames had no timestamp: spaced them at {float(info.rate):.3f} fps")
    if pad_even:
        job.warnings.append(f"{pix_fmt} needs even sizes: padded the odd side by one repeated row/column")
    busy = {k: round(v, 4) for k, v in pipe.busy.items()}
    return VideoReport(src, dst, writer.frames, (writer.height, writer.width), info.rate, encoder, pix_fmt,
                       info.audio if writer.audio_map else [], info.rotation, backend.name, opts.batch,
                       time.perf_counter() - t0, busy, job.warnings)


def _check_options(opts: VideoOptions) -> None:
    if opts.batch < 1:
        raise ConfigError(f"--batch {opts.batch}: must be at least 1")
    if opts.start < 0 or (opts.duration is not None and opts.duration <= 0):
        raise ConfigError("--start must be >= 0 and --duration > 0 (seconds)")
    if not 0 <= opts.crf <= 63:
        raise ConfigError(f"--crf {opts.crf}: use 0 (lossless) to 51 for h264/hevc, 63 for vp9; 18 is the default")
    if opts.size is not None and min(opts.size) < 2:
        raise ConfigError(f"--size {opts.size[0]}x{opts.size[1]}: frames must be at least 2x2")


def _expected_frames(info: VideoInfo, opts: VideoOptions) -> int | None:
    if opts.start == 0 and opts.duration is None and info.frames:
        return info.frames
    if info.duration is None:
        return None
    seconds = max(0.0, info.duration - opts.start)
    return max(1, round(min(seconds, opts.duration or seconds) * float(info.rate)))


def _watch(pipe: _Pipeline, job: _Job, total: int | None, show: bool) -> None:
    """Main thread: keep the progress bar fresh until the stages end; Ctrl-C lands here."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
               TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn())
    start = time.perf_counter()
    with Progress(*columns, console=console, disable=not show, transient=False) as bar:
        task = bar.add_task(job.info.path.name, total=total, fps=0.0)
        while pipe.alive() and not pipe.stop.is_set():
            time.sleep(0.1)
            elapsed = time.perf_counter() - start
            bar.update(task, completed=job.done, fps=job.done / elapsed if elapsed else 0.0)
        bar.update(task, completed=job.done, total=max(total or 0, job.done))
