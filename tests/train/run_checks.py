"""What the training tests share to split a run: Ctrl-C at a chosen iteration, as train()'s on_step callback."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable


def ctrl_c_at(stop_at: int) -> Callable[[int, dict[str, float]], None]:
    """An on_step callback that sends this process SIGINT (what Ctrl-C sends) after iteration `stop_at`."""
    def on_step(iteration: int, _losses: dict[str, float]) -> None:
        if iteration == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    return on_step
