"""A chain of threads joined by bounded queues: a source, any number of map stages, a sink.

Threads, not processes: the work each stage hands to a library (codecs, swscale, numpy, inference runtimes)
releases the GIL, and items (frames, batches) pass between stages without being copied or pickled. Bounded
queues keep memory flat when one stage is slower than the others. The first error anywhere stops every
stage and is kept for the caller to raise; each stage's busy time says which one limits the rate.
A map stage is a function of one item, or a Streamed function of the whole input stream (for a backend that
keeps several batches in flight and returns them in order).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any


@dataclass(frozen=True)
class Streamed:
    """A map stage given the whole input stream: fn(iterator of items) -> iterator of items, one out per item
    in, in order; it may read ahead (a backend with several batches in flight). Its busy time is the time spent
    producing outputs, less the time it waited for input."""

    fn: Callable[[Iterator[Any]], Iterator[Any]]


MapStage = tuple[str, Callable[[Any], Any] | Streamed]  # (name, item -> item | Streamed(items -> items))


class _Stopped(BaseException):
    """Raised inside a stage waiting on a queue once another stage failed or the caller stopped the run.
    A BaseException, like GeneratorExit: it passes through a Streamed stage's `except Exception` handlers."""


class StageRunner:
    """Runs one chain once: start(), wait() (or poll alive()/stop), shutdown(), then raise `error` if set."""

    _END = object()  # passed down the chain after the last item

    def __init__(self, depth: int, thread_prefix: str = "stage-") -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.busy: dict[str, float] = {}  # seconds each stage spent in its own callable, in chain order
        self.depth = depth
        self.thread_prefix = thread_prefix
        self.threads: dict[str, threading.Thread] = {}

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():  # short timeouts: a stopped run must not leave a thread blocked
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        raise _Stopped

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while not self.stop.is_set():
            try:
                return q.put(item, timeout=0.05)
            except queue.Full:
                continue
        raise _Stopped

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - any failure in a stage must stop the others
            if self.error is None:
                self.error = e
            self.stop.set()

    def _timed(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.busy[name] += time.perf_counter() - t

    def start(self, source: tuple[str, Iterator[Any]], maps: Sequence[MapStage],
              sink: tuple[str, Callable[[Any], None]], finish: Callable[[], None] | None = None) -> None:
        """Start one thread per stage. `finish` runs in the sink's thread after the last item (flush, trailer);
        a source with a close() method (a generator) is closed when its thread ends, early stops included; so is
        a Streamed stage's output iterator."""
        (source_name, items), (sink_name, consume_one) = source, sink
        names = [source_name, *(n for n, _ in maps), sink_name]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self.busy = dict.fromkeys(names, 0.0)
        queues: list[queue.Queue[Any]] = [queue.Queue(self.depth) for _ in range(len(maps) + 1)]

        def produce() -> None:
            try:
                while True:
                    item = self._timed(source_name, next, items, self._END)
                    self._put(queues[0], item)
                    if item is self._END:
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()

        def transform(name: str, fn: Callable[[Any], Any] | Streamed, src: queue.Queue[Any],
                      dst: queue.Queue[Any]) -> None:
            if isinstance(fn, Streamed):
                stream(name, fn, src, dst)
            else:
                while (item := self._get(src)) is not self._END:
                    self._put(dst, self._timed(name, fn, item))
            self._put(dst, self._END)

        def stream(name: str, fn: Streamed, src: queue.Queue[Any], dst: queue.Queue[Any]) -> None:
            waited = 0.0  # seconds the stream spent blocked on its input queue: not busy

            def inputs() -> Iterator[Any]:
                nonlocal waited
                while True:
                    t = time.perf_counter()
                    item = self._get(src)
                    waited += time.perf_counter() - t
                    if item is self._END:
                        return
                    yield item

            outputs = fn.fn(inputs())
            try:
                while True:
                    t, before = time.perf_counter(), waited
                    item = next(outputs, self._END)
                    self.busy[name] += time.perf_counter() - t - (waited - before)
                    if item is self._END:
                        return
                    self._put(dst, item)
            finally:
                close = getattr(outputs, "close", None)
                if close is not None:  # a generator stopped early: its own cleanup (in-flight batches) runs now
                    close()

        def consume() -> None:
            while (item := self._get(queues[-1])) is not self._END:
                self._timed(sink_name, consume_one, item)
            if finish is not None:
                self._timed(sink_name, finish)

        bodies = [produce, *(partial(transform, n, f, queues[i], queues[i + 1]) for i, (n, f) in enumerate(maps)),
                  consume]
        for name, body in zip(names, bodies, strict=True):
            # daemon: a stage stuck in a long library call must not keep the process alive after Ctrl-C
            th = threading.Thread(target=self._guard, args=(body,), name=f"{self.thread_prefix}{name}", daemon=True)
            self.threads[name] = th
            th.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every stage has ended or one failed (True) or `timeout` seconds passed (False).
        Polls in short sleeps, so Ctrl-C in the calling thread lands promptly."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive() and not self.stop.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads.values())

    def running(self, name: str) -> bool:
        """Is the thread of stage `name` still running (e.g. still using a resource the caller wants to close)?"""
        th = self.threads.get(name)
        return th is not None and th.is_alive()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every stage and wait up to `timeout` seconds in all for their threads."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads.values():
            t.join(max(0.0, deadline - time.monotonic()))


def watch(runner: StageRunner, label: str, total: int | None, done: Callable[[], int], *, unit: str = "items",
          rate_unit: str = "items/s", show: bool = True) -> None:
    """In the calling thread: a progress bar of done() out of total until the stages end. Keeping the caller
    here (not blocked in a join) is what lets Ctrl-C land promptly. The bar goes to stderr, and only when that
    is a terminal: in a log or a pipe it would be one more line next to an error message."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TextColumn(f"{{task.fields[rate]:.1f}} {rate_unit}"), TimeRemainingColumn())
    start = time.perf_counter()
    console = Console(stderr=True)
    with Progress(*columns, console=console, disable=not (show and console.is_terminal), transient=False) as bar:
        task = bar.add_task(label, total=total, rate=0.0)
        while not runner.wait(0.1):
            elapsed, n = time.perf_counter() - start, done()
            bar.update(task, completed=n, rate=n / elapsed if elapsed else 0.0)
        n = done()
        bar.update(task, completed=n, total=max(total or 0, n))
