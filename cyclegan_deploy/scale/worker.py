"""The Ray actor of `cgdeploy batch`: loads the backend once, then translates segments with the video pipeline.

Runs in a Ray worker process (any node of the cluster): paths must be visible there (one machine, or a shared
filesystem), and cyclegan-deploy with the backend's extras installed. Two methods may run at once
(max_concurrency=2): `translate` in one thread, `progress` answering the driver's polls in the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from cyclegan_deploy.errors import CgDeployError


@dataclass(frozen=True)
class SegmentResult:
    frames: int
    wall_s: float
    pid: int  # the worker process that made it (a restarted worker has another)
    reused: bool  # the part was already there (--resume after an interrupted run)
    retried: int = 0  # set by the driver: 1 if a worker died on this segment and a restarted one made it


class SegmentWorker:
    def __init__(self, artifact: str, load: dict[str, Any], video: dict[str, Any], tile: int | None = None,
                 tile_overlap: int = 16) -> None:
        from cyclegan_deploy.backends import load_backend
        from cyclegan_deploy.tiling import maybe_tiled

        self.backend = maybe_tiled(load_backend(Path(artifact), **load), tile, tile_overlap)
        self.artifact, self.video = Path(artifact), video
        self.frames = 0  # written by the segment running now

    def describe(self) -> tuple[int, str]:
        """(process id, backend name): the driver tells a restarted worker by its new pid."""
        return os.getpid(), self.backend.name

    def progress(self) -> int:
        return self.frames

    def _count(self, n: int) -> None:
        self.frames = n

    def translate(self, src: str, part: str, start: Fraction, duration: Fraction | None) -> SegmentResult:
        """Translate [start, start + duration) of `src` into `part` (video only; written atomically, so a part
        that exists is complete)."""
        from cyclegan_deploy.video import VideoOptions, translate_video

        if Path(part).exists():
            return SegmentResult(_packets(Path(part)), 0.0, os.getpid(), True)
        self.frames = 0
        opts = VideoOptions(**self.video, start=start, duration=duration, audio=False, progress=False, force=False,
                            model=self.artifact, on_frames=self._count)
        try:
            report = translate_video(src, part, self.backend, opts)
        except CgDeployError:
            raise
        except Exception as e:  # a Ray worker has no --debug: keep what failed in one line
            raise CgDeployError(f"{src}: segment from {float(start):.3f}s failed ({type(e).__name__}: {e})") from e
        finally:
            self.frames = 0
        return SegmentResult(report.frames, report.wall_s, os.getpid(), False)


def _packets(path: Path) -> int:
    """Frames in a finished part: its video packets (one per frame for every encoder `video` writes)."""
    import av

    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)
