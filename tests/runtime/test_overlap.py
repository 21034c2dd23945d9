"""The copy/compute overlap pipeline (backends/overlap.py) against a stream simulator: queued work runs lazily,
only when the host waits on an event, and the simulator picks which stream advances (seeded at random, or
always the uploads first, or the model last). Any missing wait then lets an upload overwrite a buffer the model
has not read yet, or a download read an output not yet written, and the frames come out wrong."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cyclegan_deploy.backends.overlap import SLOTS, overlapped  # noqa: E402


class SimStreams:
    """Streams as queues of work / event records / event waits; nothing runs until the host syncs on an event.
    `pick` chooses which runnable stream advances next."""

    def __init__(self, pick: Callable[[list[int]], int]) -> None:
        self.queues: list[deque[tuple[str, Any]]] = []
        self.recorded: set[int] = set()
        self.events = 0
        self.pick = pick
        self.compute: deque[tuple[str, Any]] | None = None
        self.max_queued = 0  # the most work items ever queued at once: > 1 means batches really overlapped

    def stream(self) -> deque[tuple[str, Any]]:
        self.queues.append(deque())
        return self.queues[-1]

    def compute_stream(self) -> deque[tuple[str, Any]]:
        self.compute = self.stream()
        return self.compute

    def enqueue(self, stream: deque[tuple[str, Any]], work: Callable[[], None]) -> None:
        stream.append(("work", work))
        self.max_queued = max(self.max_queued, sum(k == "work" for q in self.queues for k, _ in q))

    def record(self, stream: deque[tuple[str, Any]]) -> int:
        self.events += 1
        stream.append(("record", self.events))
        return self.events

    def wait(self, stream: deque[tuple[str, Any]], event: int) -> None:
        stream.append(("wait", event))

    def sync(self, event: int) -> None:
        while event not in self.recorded:
            runnable = [i for i, q in enumerate(self.queues) if q and (q[0][0] != "wait" or q[0][1] in self.recorded)]
            assert runnable, "deadlock: every stream waits on an event nobody will record"
            kind, item = self.queues[self.pick(runnable)].popleft()
            if kind == "work":
                item()
            elif kind == "record":
                self.recorded.add(item)

    def host(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return torch.full(shape, 0xAB, dtype=dtype) if shape else torch.zeros(shape, dtype=dtype)

    device = host


def _forward(x: Any) -> tuple[Any, Any]:
    """A 'model' with scale 2 whose output depends on every input pixel's value; frames starting with 7 are
    'non-finite'."""
    y = ((x.to(torch.int16) * 3 + 1) % 256).to(torch.uint8)
    return y.repeat_interleave(2, 1).repeat_interleave(2, 2), (x[:, 0, 0, 0] != 7).all()


def _expected(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    y, finite = _forward(torch.from_numpy(rgb))
    return y.numpy(), bool(finite)


def _batches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(2, 8, 12, 3)] * 5 + [(1, 8, 12, 3), (2, 4, 4, 3), (2, 4, 4, 3)]  # partial batch, then a new size
    out = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    out[3][1, 0, 0, 0] = 7
    return out


def _run(streams: SimStreams, batches: list[np.ndarray]) -> list[tuple[np.ndarray, bool]]:
    return list(overlapped(streams, iter(batches), _forward, lambda s: (s[0], 2 * s[1], 2 * s[2], s[3]),
                           torch.uint8, torch.bool))


def _policies() -> list[tuple[str, Callable[[list[int]], int]]]:
    policies: list[tuple[str, Callable[[list[int]], int]]] = [
        ("uploads first", lambda ready: ready[0]),  # queues: 0 upload, 1 download, 2 compute
        ("model last", lambda ready: max((i for i in ready if i != 2), default=2)),
        ("downloads first", lambda ready: 1 if 1 in ready else ready[-1])]
    for seed in range(24):
        rng = random.Random(seed)
        policies.append((f"random {seed}", lambda ready, r=rng: r.choice(ready)))
    return policies


@pytest.mark.parametrize(("name", "pick"), _policies(), ids=[n for n, _ in _policies()])
def test_overlapped_frames_equal_one_at_a_time_in_any_stream_order(name: str, pick: Any) -> None:
    batches = _batches()
    streams = SimStreams(pick)
    got = _run(streams, batches)
    assert len(got) == len(batches)
    for (out, finite), rgb in zip(got, batches, strict=True):
        want, want_finite = _expected(rgb)
        np.testing.assert_array_equal(out, want)
        assert finite == want_finite
    assert [f for _, f in got] == [True, True, True, False, True, True, True, True]
    assert streams.max_queued > 3  # uploads, the model and downloads of different batches were queued together


def test_the_host_keeps_at_most_two_batches_in_flight() -> None:
    """The next batch is pulled only after the one before the previous was handed out (SLOTS buffers each)."""
    pulled: list[int] = []
    batches = _batches()[:5]

    def source() -> Any:
        for i, b in enumerate(batches):
            pulled.append(i)
            yield b

    gen = overlapped(SimStreams(lambda ready: ready[0]), source(), _forward,
                     lambda s: (s[0], 2 * s[1], 2 * s[2], s[3]), torch.uint8, torch.bool)
    next(gen)
    assert pulled == list(range(SLOTS))
    next(gen)
    assert pulled == list(range(SLOTS + 1))


def test_closing_early_waits_for_the_work_in_flight() -> None:
    """An error downstream closes the generator mid-video: the buffers are freed only after every queued upload,
    model call and download ran (else a late copy would write into memory given to someone else)."""
    streams = SimStreams(lambda ready: ready[-1])
    gen = overlapped(streams, iter(_batches()[:5]), _forward, lambda s: (s[0], 2 * s[1], 2 * s[2], s[3]),
                     torch.uint8, torch.bool)
    next(gen)
    next(gen)
    assert any(streams.queues)  # the third batch is still queued
    gen.close()
    assert not any(streams.queues)


def test_work_queued_before_a_failure_is_waited_for() -> None:
    """On a GPU the model's Python runs when its work is queued: if it raises there (out of memory on a new
    size), that batch's upload is already queued. The buffers are released only after every stream drained."""
    class FailingStreams(SimStreams):
        def enqueue(self, stream: Any, work: Callable[[], None]) -> None:
            if stream is self.compute and self.events >= 6:  # the third batch's model call fails as it is issued
                raise RuntimeError("CUDA out of memory")
            super().enqueue(stream, work)

    streams = FailingStreams(lambda ready: ready[-1])
    gen = overlapped(streams, iter(_batches()[:5]), _forward, lambda s: (s[0], 2 * s[1], 2 * s[2], s[3]),
                     torch.uint8, torch.bool)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(gen)
    assert not any(streams.queues)  # the failed batch's queued upload ran before its buffers could go


def test_real_generator_through_the_pipeline_matches_run_uint8(tiny_generator_file: Any) -> None:
    """The torch backend's own uint8 forward (CPU, device_io) in the pipeline: the frames run_uint8 gives."""
    from cyclegan_deploy.backends import load_backend

    with load_backend(tiny_generator_file, backend="torch", device="cpu", device_io=True) as backend:
        rng = np.random.default_rng(1)
        batches = [rng.integers(0, 256, (2, 16, 20, 3), dtype=np.uint8) for _ in range(4)]
        got = list(overlapped(SimStreams(random.Random(5).choice), iter(batches), backend._overlap_forward,
                              lambda s: (s[0], s[1], s[2], 3), torch.uint8, torch.bool))
        for (out, finite), rgb in zip(got, batches, strict=True):
            want, want_finite = backend.run_uint8(rgb)
            np.testing.assert_array_equal(out, want)
            assert finite == want_finite


def test_copy_overlap_is_cuda_only_and_needs_device_io(tiny_generator_file: Any) -> None:
    from cyclegan_deploy.backends import load_backend
    from cyclegan_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="copy_overlap applies to CUDA only"):
        load_backend(tiny_generator_file, backend="torch", device="cpu", device_io=True, copy_overlap=True)


def test_cuda_streams_map_onto_torch_cuda() -> None:
    """CudaStreams is the thin layer the simulator stands in for: each call lands on the torch.cuda API."""
    import contextlib
    import types

    from cyclegan_deploy.backends.overlap import CudaStreams

    log: list[Any] = []

    class Stream:
        def wait_event(self, event: Any) -> None:
            log.append(("wait_event", self, event))

    class Event:
        def __init__(self, blocking: bool = False) -> None:
            log.append(("event", blocking))

        def record(self, stream: Any) -> None:
            log.append(("record", self, stream))

        def synchronize(self) -> None:
            log.append(("synchronize", self))

    @contextlib.contextmanager
    def on(stream: Any) -> Any:
        log.append(("enter", stream))
        yield
        log.append(("exit", stream))

    current = Stream()
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Stream=Stream, Event=Event, stream=on,
                                                            current_stream=lambda: current),
                                 empty=lambda shape, **kw: ("empty", shape, kw))
    streams = CudaStreams(fake)
    side = streams.stream()
    assert isinstance(side, Stream) and streams.compute_stream() is current
    streams.enqueue(side, lambda: log.append("work"))
    assert log == [("enter", side), "work", ("exit", side)]
    event = streams.record(side)
    streams.wait(current, event)
    streams.sync(event)
    assert log[3:] == [("event", True), ("record", event, side), ("wait_event", current, event),
                       ("synchronize", event)]
    assert streams.host((2, 3), "u8") == ("empty", (2, 3), {"dtype": "u8", "pin_memory": True})
    assert streams.device((2, 3), "u8") == ("empty", (2, 3), {"dtype": "u8", "device": "cuda"})
