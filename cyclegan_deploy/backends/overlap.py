"""Copy/compute overlap for uint8 frames on a GPU: three streams (host -> device copies, the model, device ->
host copies) and two slots of pinned host and device buffers, so batch k+1 uploads and batch k-1 downloads
while batch k computes. Used by the torch backend's `run_uint8_many` with `copy_overlap` (video's path).

The order between streams is kept with events only, never a device-wide synchronize:
- the model waits for its batch's upload, the download for the model;
- a batch is handed out once its download finished, and a slot is reused (batch k+2 in batch k's buffers)
  only after batch k was handed out, so by then its upload, model and download are all done: the slot's
  buffers need no further waits (the tests check that removing either remaining wait corrupts frames).

The stream operations go through a small interface (`Streams`): `CudaStreams` is torch.cuda; the tests drive
the same pipeline with a simulator that runs queued work lazily, in adversarial orders, on CPU tensors, so a
missing wait corrupts frames there instead of passing by luck. Torch is never imported here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

SLOTS = 2  # batches in flight: one computing while the next uploads and the previous downloads


class Streams(Protocol):
    def stream(self) -> Any: ...
    def compute_stream(self) -> Any: ...
    def enqueue(self, stream: Any, work: Callable[[], None]) -> None: ...
    def record(self, stream: Any) -> Any: ...
    def wait(self, stream: Any, event: Any) -> None: ...
    def sync(self, event: Any) -> None: ...
    def host(self, shape: tuple[int, ...], dtype: Any) -> Any: ...
    def device(self, shape: tuple[int, ...], dtype: Any) -> Any: ...


class CudaStreams:
    """Streams on torch.cuda: work is issued on a stream inside `torch.cuda.stream(s)`; host buffers pinned."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def stream(self) -> Any:
        return self.torch.cuda.Stream()

    def compute_stream(self) -> Any:
        return self.torch.cuda.current_stream()

    def enqueue(self, stream: Any, work: Callable[[], None]) -> None:
        with self.torch.cuda.stream(stream):
            work()

    def record(self, stream: Any) -> Any:
        event = self.torch.cuda.Event(blocking=True)  # a host waiting on it sleeps instead of spinning a core
        event.record(stream)
        return event

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def sync(self, event: Any) -> None:
        event.synchronize()

    def host(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype, pin_memory=True)

    def device(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype, device="cuda")


@dataclass
class _Slot:
    pin_in: Any
    dev_in: Any
    dev_out: Any
    dev_finite: Any
    pin_out: Any
    pin_finite: Any
    downloaded: Any = None  # the event after the slot's last batch's download


def overlapped(streams: Streams, batches: Iterable[np.ndarray], forward: Callable[[Any], tuple[Any, Any]],
               out_shape: Callable[[tuple[int, ...]], tuple[int, ...]], uint8: Any, boolean: Any
               ) -> Iterator[tuple[np.ndarray, bool]]:
    """(uint8 output frames, all finite) per uint8 input batch, in order. `forward(device input)` gives the
    device output and its finite flag (a 0-d bool tensor); `out_shape` maps an input shape to the output's;
    `uint8`/`boolean` are the tensor library's dtypes."""
    upload, download, compute = streams.stream(), streams.stream(), streams.compute_stream()
    slots: list[_Slot] = []
    shape: tuple[int, ...] | None = None
    pending: deque[_Slot] = deque()

    def collect(slot: _Slot) -> tuple[np.ndarray, bool]:
        streams.sync(slot.downloaded)
        return np.array(slot.pin_out.numpy()), bool(slot.pin_finite.item())  # copies: the slot is reused

    try:
        for k, rgb in enumerate(batches):
            if rgb.shape != shape:  # a new size (a video's last, partial batch): finish what runs, new buffers
                while pending:
                    yield collect(pending.popleft())
                shape, out = tuple(rgb.shape), out_shape(tuple(rgb.shape))
                slots = [_Slot(streams.host(shape, uint8), streams.device(shape, uint8), streams.device(out, uint8),
                               streams.device((), boolean), streams.host(out, uint8), streams.host((), boolean))
                         for _ in range(SLOTS)]
            slot = slots[k % SLOTS]  # free: its previous batch was handed out (see the module doc)
            slot.pin_in.numpy()[...] = rgb

            def send(s: _Slot = slot) -> None:
                s.dev_in.copy_(s.pin_in, non_blocking=True)

            def run(s: _Slot = slot) -> None:
                y, finite = forward(s.dev_in)
                s.dev_out.copy_(y)
                s.dev_finite.copy_(finite)

            def fetch(s: _Slot = slot) -> None:
                s.pin_out.copy_(s.dev_out, non_blocking=True)
                s.pin_finite.copy_(s.dev_finite, non_blocking=True)

            streams.enqueue(upload, send)
            streams.wait(compute, streams.record(upload))
            streams.enqueue(compute, run)
            streams.wait(download, streams.record(compute))
            streams.enqueue(download, fetch)
            slot.downloaded = streams.record(download)
            pending.append(slot)
            if len(pending) == SLOTS:
                yield collect(pending.popleft())
        while pending:
            yield collect(pending.popleft())
    finally:
        # closed early (an error downstream, Ctrl-C) or failed while queueing (a forward that raised at issue
        # time leaves its batch's upload queued, outside `pending`): nothing may still write into the buffers
        # about to be freed, so every stream's queued work is waited for
        for stream in (upload, compute, download):
            streams.sync(streams.record(stream))
