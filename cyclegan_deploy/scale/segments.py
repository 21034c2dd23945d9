"""Cutting one video into segments at keyframes, and joining the translated segments back without re-encoding.

A segment is a window [start, start + duration) of the input's presentation time whose start is a keyframe's
exact timestamp (a Fraction, so no rounding moves a frame across a boundary): `cgdeploy video` with that
window seeks straight to the keyframe, and every frame of the input lands in exactly one segment. The
translated segments are encoded with the same settings, so their streams share one set of codec parameters
(checked), and each starts with a keyframe: their packets can follow one another in one stream. Joining
shifts each segment's packets back to the input's timeline and muxes the input's audio packets beside them,
in time order, as `video` does for the whole file.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from cyclegan_deploy.artifacts import atomic_output
from cyclegan_deploy.errors import MediaError
from cyclegan_deploy.video.probe import VideoInfo, one_line


@dataclass(frozen=True)
class Segment:
    index: int
    start: Fraction  # seconds from the input's origin (container start), a keyframe's exact time
    duration: Fraction | None  # None: to the end of the file
    frames: int  # expected, for progress (from the frame rate)


def origin_of(info: VideoInfo) -> Fraction:
    """The time `--start 0` means: the container's start (the job uses the same expression)."""
    return Fraction(max(info.start, 0.0)).limit_denominator(10**6)


def keyframe_times(path: Path) -> list[Fraction]:
    """Presentation times (s) of the video's keyframes, read from the packets (nothing is decoded)."""
    import av

    times: list[Fraction] = []
    try:
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            tb = Fraction(vs.time_base or 1)  # demuxed streams always have one
            for packet in c.demux(vs):
                if packet.is_keyframe and packet.pts is not None:
                    times.append(packet.pts * tb)
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: cannot read its packets ({one_line(e)}); the file is damaged") from e
    return sorted(times)


def plan_segments(info: VideoInfo, seconds: float) -> list[Segment]:
    """Windows of at least `seconds` each (the last may be shorter), cut at the first keyframe at or after each
    `seconds` mark. A clip with one keyframe, or shorter than 2 x `seconds`, is one segment."""
    origin, rate = origin_of(info), float(info.rate)
    cuts = [Fraction(0)]
    for t in keyframe_times(info.path):
        t -= origin
        if t >= cuts[-1] + Fraction(str(seconds)):
            cuts.append(t)
    total = Fraction(str(info.duration)) if info.duration else None
    if total is not None and len(cuts) > 1 and total - cuts[-1] < Fraction(str(seconds)) / 4:
        cuts.pop()  # a sliver at the end: its own worker start-up would cost more than it brings
    segments = []
    for i, start in enumerate(cuts):
        end = cuts[i + 1] if i + 1 < len(cuts) else None
        span = (end if end is not None else (total or start)) - start
        segments.append(Segment(i, start, None if end is None else end - start, max(1, round(float(span) * rate))))
    return segments


def _video_packets(part: Path, shift_s: Fraction, stream: Any) -> Iterator[tuple[Fraction, int, Any]]:
    import av

    with av.open(str(part)) as c:
        vs = c.streams.video[0]
        tb = Fraction(vs.time_base or 1)  # demuxed streams always have one
        shift, step = round(shift_s / tb), max(1, round(1 / (Fraction(vs.average_rate or 30) * tb)))
        for packet in _with_dts(c.demux(vs), step):
            packet.pts = None if packet.pts is None else packet.pts + shift
            packet.dts += shift
            packet.stream = stream
            yield packet.dts * tb, 0, packet


def _with_dts(packets: Iterator[Any], step: int) -> Iterator[Any]:
    """Real packets (not the demuxer's empty flush one), each with a decode timestamp. Matroska stores none: its
    demuxer leaves the first B-frame delay's packets without one, and a muxer refuses those, so they get the
    frame steps before the first known one (never after their pts); a later gap gets the previous one + 1."""
    waiting: list[Any] = []
    last: int | None = None
    for packet in packets:
        if not packet.size:
            continue
        if packet.dts is None and last is None:
            waiting.append(packet)
            continue
        if packet.dts is None:
            packet.dts = last + 1 if last is not None else 0
        for k, early in enumerate(waiting):
            early.dts = packet.dts - (len(waiting) - k) * step
            if early.pts is not None:
                early.dts = min(early.dts, early.pts)
            yield early
        waiting = []
        last = packet.dts
        yield packet
    for k, early in enumerate(waiting):  # a part too short to ever show a dts
        early.dts = early.pts if early.pts is not None else k
        yield early


def _audio_packets(src: Path, origin: Fraction, streams: dict[int, Any]) -> Iterator[tuple[Fraction, int, Any]]:
    import av

    with av.open(str(src)) as c:
        audio = list(c.streams.audio)
        for packet in c.demux(audio):
            if packet.dts is None or not packet.size:
                continue
            tb = Fraction(packet.time_base)
            shift = round(origin / tb)  # as `video` does: the output's time 0 is the input's origin
            packet.pts = None if packet.pts is None else packet.pts - shift
            packet.dts -= shift
            t = packet.dts * tb
            packet.stream = streams[packet.stream.index]
            yield t, 1, packet


def _same_parameters(parts: list[Path]) -> None:
    import av

    first: tuple[Any, ...] | None = None
    for part in parts:
        with av.open(str(part)) as c:
            cc = c.streams.video[0].codec_context
            key = (cc.name, cc.width, cc.height, cc.pix_fmt, bytes(cc.extradata or b""))
        if first is None:
            first = key
        elif key != first:
            raise MediaError(f"{part}: encoded with other codec parameters than the first segment ({key[:4]} vs "
                             f"{first[:4]}); translate this file with `cgdeploy video` instead")


def join_segments(info: VideoInfo, parts: list[Path], starts: list[Fraction], dst: Path, audio: bool,
                  frames: int | None = None) -> int:
    """Write `dst` (atomically) from the translated `parts` (segment i begins at starts[i] s after the origin)
    plus, if `audio`, every audio packet of the input. Returns the number of video packets written; if that is
    not `frames` (what the segments reported), nothing is written and the join fails."""
    import av

    _same_parameters(parts)
    written = 0
    try:
        with atomic_output(dst) as tmp, av.open(str(tmp), "w") as out:
            with av.open(str(parts[0])) as first:
                template = first.streams.video[0]
                vs = out.add_stream_from_template(template)
                # the stream's frame rate (Matroska's DefaultDuration; what players and probes read) comes from
                # the codec context, which a template leaves unset
                vs.codec_context.framerate = template.average_rate or info.rate
            audio_map: dict[int, Any] = {}
            if audio:
                with av.open(str(info.path)) as src:
                    for a in src.streams.audio:
                        audio_map[a.index] = out.add_stream_from_template(a)
            # the segments' timestamps start at their window's start; the input's at its origin
            video = (p for part, start in zip(parts, starts, strict=True) for p in _video_packets(part, start, vs))
            sources = [video] + ([_audio_packets(info.path, origin_of(info), audio_map)] if audio_map else [])
            for _, kind, packet in heapq.merge(*sources, key=lambda x: (x[0], x[1])):
                out.mux(packet)
                written += kind == 0
            if frames is not None and written != frames:  # a part lost or gained frames: not the input's video
                raise MediaError(f"{dst}: the joined video would have {written} frames, its segments made {frames}; "
                                 f"delete {parts[0].parent} and run again")
    except av.error.FFmpegError as e:
        raise MediaError(f"{dst}: joining the translated segments failed ({one_line(e)})") from e
    return written
