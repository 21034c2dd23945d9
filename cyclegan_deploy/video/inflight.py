"""Items through a backend in order, several batches in flight: the inference step of the video pipeline (its
Streamed inference stage) and of image folders (images.py).

The backend's run_many reads the tensors lazily, so the caller's own work on the next item (pre-processing,
reading files) and on the last output (checks, encoding, writing) overlaps the batches the backend is running
(OpenVINO throughput mode keeps OPTIMAL_NUMBER_OF_INFER_REQUESTS of them going). Errors the backend raises go
through the caller's `failed` (which names the model); errors of the input side are raised as they are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from cyclegan_deploy.backends import Backend

T = TypeVar("T")
Failed = Callable[[Exception, "tuple[int, ...] | None"], Exception]  # (backend error, its batch's shape) -> raise


def inflight_for(backend: Backend, asked: int | None) -> int:
    """Batches to keep running in the backend: `asked`, else what the backend runs best (max_inflight)."""
    return max(1, asked or getattr(backend, "max_inflight", 1))


def run_many(backend: Backend, batches: Iterable[np.ndarray], inflight: int) -> Iterator[np.ndarray]:
    """backend.run_many, or one call per batch for a plain callable with a card (test doubles, user code)."""
    many = getattr(backend, "run_many", None)
    return many(batches, inflight) if many is not None else map(backend, batches)


def ordered_outputs(backend: Backend, items: Iterable[T], tensor: Callable[[T], np.ndarray], inflight: int,
                    failed: Failed) -> Generator[tuple[T, tuple[int, ...], np.ndarray], None, None]:
    """(item, its input shape, the backend's output) for each item, in order, up to `inflight` batches running
    at once. Closing this iterator early closes run_many (which waits for the batches still running)."""
    pending: deque[tuple[T, tuple[int, ...]]] = deque()  # given to the backend, output not back yet
    input_error: BaseException | None = None

    def tensors() -> Iterator[np.ndarray]:
        nonlocal input_error
        try:
            for item in items:
                x = tensor(item)
                pending.append((item, x.shape))
                yield x
        except BaseException as e:  # the input side's own error (or a stop): not the model's
            input_error = e
            raise

    outputs = run_many(backend, tensors(), inflight)
    try:
        while True:
            try:
                out = next(outputs, None)
            except Exception as e:
                if e is input_error:
                    raise
                raise failed(e, pending[0][1] if pending else None) from e
            if out is None:
                return
            item, shape = pending.popleft()
            yield item, shape, out
    finally:
        close = getattr(outputs, "close", None)
        if close is not None:
            close()
