"""One video run: decode -> batch -> pre-process -> backend -> post-process -> encode, audio copied.

The five stages run in their own threads joined by bounded queues (stages.StageRunner), so the model never
waits on the codec while there is work queued and the codec threads use the cores the model leaves. The
inference stage feeds the backend's run_many from its input queue: a backend with an async queue (OpenVINO
in throughput mode) keeps several batches in flight, outputs still in frame order.
Colour conversion and normalisation run per frame on a small thread pool inside the pre/post stages
(swscale and numpy release the GIL), so those stages keep up with a GPU model at 720p; the decode and
encode threads then only drive FFmpeg. Every size and format is decided once, before any thread starts
(writer.OutputPlan); what is kept from the input, and how, is in the package docstring.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cyclegan_deploy.errors import CgDeployError, MediaError
from cyclegan_deploy.frames import crop, from_model, normalise_into, pad_frames, pad_to_model, to_model
from cyclegan_deploy.model_checks import (
    all_finite,
    check_output,
    model_label,
    non_finite_error,
    run_failure,
    shape_text,
)
from cyclegan_deploy.video.inflight import inflight_for, ordered_outputs
from cyclegan_deploy.video.options import (
    VideoOptions,
)
from cyclegan_deploy.video.probe import VideoInfo, one_line
from cyclegan_deploy.video.writer import (
    AudioQueue,
    OutputPlan,
)

if TYPE_CHECKING:
    from cyclegan_deploy.backends import Backend


@dataclass
class _Batch:
    frames: list[Any]  # decoded av.VideoFrames (then, after postprocess, the ones to encode)
    pts: list[int]  # output pts, in the input stream's time base
    first: int = 0  # index of its first frame in the output (for messages)
    rgb: np.ndarray | None = None  # (batch, H, W, 3) uint8 upright model input; rows past len(pts) repeat
    tensor: np.ndarray | None = None  # (batch, 3, H', W') float32, padded for the model (frames.model_size)
    out: np.ndarray | None = None  # (batch, 3, scale*H', scale*W') float32 from the backend
    # a uint8-I/O backend (pre/post-processing on its device): (batch, H', W', 3) uint8 in, padded, and
    # (batch, scale*H', scale*W', 3) uint8 out, in place of tensor and out
    upload: np.ndarray | None = None
    out_rgb: np.ndarray | None = None


class _Job:
    """The stage functions of one run and the state they share: the plan (read only), the audio packets
    waiting for their video, per-thread swscale contexts."""

    def __init__(self, info: VideoInfo, backend: Backend, opts: VideoOptions, plan: OutputPlan,
                 pool: ThreadPoolExecutor) -> None:
        self.info, self.backend, self.opts, self.plan, self.pool = info, backend, opts, plan, pool
        self.in_range, self.out_range = backend.meta.input_range, backend.meta.output_range
        self.k = info.rotation // 90
        h, w = plan.model_in
        self.scaled = (w, h) if self.k % 2 else (h, w)  # (H, W) to scale the coded frame to, before rotating
        self.interp = "AREA" if h * w < info.width * info.height else "BICUBIC"  # AREA: no aliasing when shrinking
        self.reformat = dict(plan.reformat)
        self.sws_threads = 0 if opts.batch == 1 else 1  # frames already convert in parallel when batched
        self.local = threading.local()  # swscale contexts per worker thread, reused frame after frame
        self.origin = Fraction(max(info.start, 0.0)).limit_denominator(10**6) + Fraction(str(opts.start))
        self.end = self.origin + Fraction(str(opts.duration)) if opts.duration is not None else None
        self.audio: AudioQueue = deque()  # filled by the decode thread, emptied by the writer's
        self.label = model_label(backend, opts.model)
        self.good_calls = 0  # backend calls that returned a valid batch (a failure before any is the model's)
        self.device_io = bool(getattr(backend, "uint8_io", False))  # frames go to the backend as uint8
        self.inflight = 1 if self.device_io else inflight_for(backend, opts.inflight)  # run_uint8: one at a time
        self.decoded = 0
        self.no_pts = 0  # frames without a timestamp (raw .h264 streams): spaced at the stream's rate

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
                # rounded up: a start on a keyframe's exact time seeks to that keyframe, not to the one before
                c.seek(math.ceil(self.origin * 1_000_000), backward=True)
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
                        self.decoded += 1
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
                            batch = _Batch([], [], batch.first + n)
                    if video_done and all(audio_done.values()):
                        break
            except av.error.FFmpegError as e:
                raise MediaError(f"{info.path}: cannot decode the video after {self.decoded} frames "
                                 f"({one_line(e)}); the file is damaged or truncated") from e
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
    def _sws(self, purpose: str) -> Any:
        """This thread's reformatter for `purpose`: one per conversion, since a VideoReformatter given other
        sizes or formats than last time rebuilds its context (pool threads serve both pre and post)."""
        table: dict[str, Any] | None = getattr(self.local, "sws", None)
        if table is None:
            table = self.local.sws = {}
        if purpose not in table:
            from av.video.reformatter import VideoReformatter

            table[purpose] = VideoReformatter()
        return table[purpose]

    def _pre_one(self, b: _Batch, i: int) -> None:
        assert b.rgb is not None
        frame = b.frames[i]
        h, w = self.scaled
        kwargs: dict[str, Any] = {"format": "rgb24", "threads": self.sws_threads}
        if (frame.height, frame.width) != (h, w):  # no scaling arguments otherwise: swscale's plain path
            kwargs.update(width=w, height=h, interpolation=self.interp)
        rgb = self._sws("in").reformat(frame, **kwargs).to_ndarray()
        b.rgb[i] = np.rot90(rgb, self.k) if self.k else rgb
        if self.device_io:  # the backend normalises on its device; padding (rare) stays here, on uint8
            if b.upload is not b.rgb:
                assert b.upload is not None
                b.upload[i] = pad_frames(b.rgb[i:i + 1], self.plan.padded)[0]
        elif self.plan.padded == self.plan.model_in:  # no padding: normalise straight into the batch tensor
            assert b.tensor is not None
            normalise_into(b.rgb[i].transpose(2, 0, 1), b.tensor[i], self.in_range)
        else:
            assert b.tensor is not None
            b.tensor[i] = pad_to_model(to_model(b.rgb[i], self.in_range), self.plan.padded)[0]

    def preprocess(self, b: _Batch) -> _Batch:
        n, count = self.opts.batch, len(b.pts)
        b.rgb = np.empty((n, *self.plan.model_in, 3), np.uint8)
        if self.device_io:
            b.upload = b.rgb if self.plan.padded == self.plan.model_in else np.empty((n, *self.plan.padded, 3),
                                                                                      np.uint8)
        else:
            b.tensor = np.empty((n, 3, *self.plan.padded), np.float32)
        list(self.pool.map(partial(self._pre_one, b), range(count)))
        if count < n:  # fixed batch shape: no re-plan / re-compile in the backend for the last batch
            b.rgb[count:] = b.rgb[count - 1]
            for full in (b.tensor, b.upload):
                if full is not None and full is not b.rgb:
                    full[count:] = full[count - 1]
        b.frames = []
        return b

    def infer(self, batches: Iterator[_Batch]) -> Iterator[_Batch]:
        """The inference stage (Streamed): batches through the backend, up to `inflight` running at once, in
        order; each output is checked before it goes on."""
        name, meta = self.backend.name, self.backend.meta

        def failed(e: Exception, _: tuple[int, ...] | None) -> Exception:
            if isinstance(e, CgDeployError):
                return type(e)(f"{self.label}: {name} on a {shape_text(self.shape)} batch: {e}")
            return run_failure(e, self.label, name, self.shape, self.good_calls)  # out of memory, not a generator

        def tensor(b: _Batch) -> np.ndarray:
            assert b.tensor is not None
            return b.tensor

        if self.device_io:
            yield from self._infer_uint8(batches, failed)
            return
        with closing(ordered_outputs(self.backend, batches, tensor, self.inflight, failed)) as outputs:
            for b, shape, out in outputs:
                check_output(out, shape, meta, self.label, name)
                if not all_finite(out[: len(b.pts)]):
                    raise non_finite_error(self.label, f"frames {b.first + 1}-{b.first + len(b.pts)} of "
                                                       f"{self.info.path}")
                self.good_calls += 1
                b.out, b.tensor = out, None
                yield b

    def _infer_uint8(self, batches: Iterator[_Batch], failed: Any) -> Iterator[_Batch]:
        """infer() for a uint8-I/O backend: padded uint8 frames in, uint8 frames out, finiteness checked on
        the device (the float output never reaches the host)."""
        name, meta = self.backend.name, self.backend.meta

        def upload(b: _Batch) -> np.ndarray:
            assert b.upload is not None
            return b.upload

        calls = cast("Backend", _Uint8Calls(self.backend))  # ordered_outputs needs only its run_many
        with closing(ordered_outputs(calls, batches, upload, 1, failed)) as outputs:
            for b, shape, (rgb, finite) in outputs:
                n, h, w, c = shape
                check_output(rgb.transpose(0, 3, 1, 2), (n, c, h, w), meta, self.label, name)
                if not finite:
                    raise non_finite_error(self.label, f"frames {b.first + 1}-{b.first + len(b.pts)} of "
                                                       f"{self.info.path}")
                self.good_calls += 1
                b.out_rgb, b.upload = rgb, None
                yield b

    @property
    def shape(self) -> tuple[int, ...]:
        """Every batch's tensor shape (fixed: the last batch repeats its last frame)."""
        return (self.opts.batch, 3, *self.plan.padded)

    def _post_one(self, b: _Batch, i: int) -> Any:
        import av

        assert b.rgb is not None
        plan = self.plan
        if b.out_rgb is not None:  # already uint8 (the backend's device did it): crop the padding
            h, w = plan.model_in
            rgb = b.out_rgb[i, :plan.scale * h, :plan.scale * w]
        else:
            assert b.out is not None
            rgb = from_model(crop(b.out[i:i + 1], *plan.model_in, plan.scale), self.out_range)[0]
        if plan.side_by_side:
            rgb = np.concatenate([self._input_half(b.rgb[i]), rgb], axis=1)
        if any(plan.pad_even):
            rgb = np.pad(rgb, ((0, plan.pad_even[0]), (0, plan.pad_even[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        return self._sws("out").reformat(frame, threads=self.sws_threads, **self.reformat)

    def _input_half(self, rgb: np.ndarray) -> np.ndarray:
        """The model's input as the left half of --side-by-side: bicubic to the output size if the model scales."""
        import av

        h, w = self.plan.translated
        if rgb.shape[:2] == (h, w):
            return rgb
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        return self._sws("side").reformat(frame, width=w, height=h, format="rgb24", interpolation="BICUBIC",
                                          threads=self.sws_threads).to_ndarray()

    def postprocess(self, b: _Batch) -> _Batch:
        b.frames = list(self.pool.map(partial(self._post_one, b), range(len(b.pts))))
        b.out = b.rgb = b.out_rgb = None
        return b


class _Uint8Calls:
    """ordered_outputs' view of a uint8-I/O backend: run_many over its run_uint8_many."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def run_many(self, batches: Iterator[np.ndarray], inflight: int | None = None) -> Iterator[tuple[np.ndarray, bool]]:
        return self.backend.run_uint8_many(batches)  # torch CUDA with copy_overlap: uploads/downloads overlap
