"""One progress view over a whole `cgdeploy batch` run: videos done of all, frames translated (finished
segments plus the frames the busy workers report), frames/s and ETA. Shown on stderr when it is a terminal."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any


class BatchProgress:
    def __init__(self, videos: int, frames: int, show: bool) -> None:
        self.videos, self.frames = videos, frames
        self.videos_done = self.videos_failed = self.segments_done = self.frames_done = 0
        self.running = 0  # frames written by segments still in progress
        self.show = show
        self.t0 = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> BatchProgress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                             TextColumn("{task.fields[rate]:.1f} fps"), TimeRemainingColumn(), console=console,
                             disable=not (self.show and console.is_terminal))
        self._bar.__enter__()
        self._task = self._bar.add_task(self._label(), total=self.frames or None, rate=0.0)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.update()
        self._bar.__exit__(kind, value, tb)

    def _label(self) -> str:
        failed = f", {self.videos_failed} failed" if self.videos_failed else ""
        return f"videos {self.videos_done}/{self.videos}{failed}"

    @property
    def fps(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return (self.frames_done + self.running) / elapsed if elapsed > 0 else 0.0

    def segment_done(self, frames: int) -> None:
        self.segments_done += 1
        self.frames_done += frames

    def input_done(self, failed: bool) -> None:
        self.videos_done += not failed
        self.videos_failed += failed
        self.update()

    def update(self, running: int | None = None) -> None:
        if running is not None:
            self.running = running
        if self._bar is not None:
            done = self.frames_done + self.running
            self._bar.update(self._task, completed=done, total=max(self.frames, done) or None, rate=self.fps,
                             description=self._label())
