"""Comparing two encoded videos frame by frame (tests of `batch` and `batch --tile` against `video`)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cyclegan_deploy.video import probe_video


def frames_of(path: Path) -> tuple[list[Fraction], np.ndarray]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        got = [(f.pts * Fraction(vs.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(vs)]
    return [t for t, _ in got], np.stack([a for _, a in got]).astype(np.int16)


def audio_of(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        a = c.streams.audio[0]
        return [(p.pts, bytes(p)) for p in c.demux(a) if p.size]


def assert_same_video(got: Path, want: Path) -> None:
    """What `video` made of the whole file and what batch made of it: frame count, times, fps, duration, audio
    packets, and pixels (both lossless here, so equal up to rounding in the colour conversion)."""
    gi, wi = probe_video(got), probe_video(want)
    assert (gi.rate, gi.display_size, gi.audio) == (wi.rate, wi.display_size, wi.audio)
    assert gi.duration == pytest.approx(wi.duration, abs=1 / float(wi.rate))
    gt, gf = frames_of(got)
    wt, wf = frames_of(want)
    assert gt == wt  # same count and the same timestamps, frame by frame
    assert np.abs(gf - wf).max() <= 1
    assert audio_of(got) == audio_of(want)
