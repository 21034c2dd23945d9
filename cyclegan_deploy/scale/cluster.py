"""The Ray side of `cgdeploy batch`: start (or join) Ray, start the workers, hand out segments, collect results.

Each worker is a Ray actor restarted by Ray when its process dies (max_restarts=-1); the call it was running
is then run again on the restarted actor (max_task_retries), so a dead worker costs only its in-flight
segment. An error the pipeline raises (a damaged input) is not retried: it fails that input.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cyclegan_deploy import machine
from cyclegan_deploy.errors import BackendUnavailableError, CgDeployError
from cyclegan_deploy.scale.worker import SegmentResult, SegmentWorker
from cyclegan_deploy.video.probe import one_line

if TYPE_CHECKING:
    from cyclegan_deploy.scale.batch import BatchOptions


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise BackendUnavailableError("Ray is not installed: `cgdeploy batch` and `serve` need the [scale] extra "
                                      "(pip install 'cyclegan-deploy[scale]')") from e
    return ray


def _cause(e: Exception) -> str:
    """The one-line error a worker raised, without Ray's wrapping and remote traceback."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, CgDeployError):
        return str(cause)
    if cause is not None:
        return f"{type(cause).__name__}: {one_line(cause)}"
    return one_line(e)


def start_ray(address: str | None) -> str:
    """ray.init for `batch` and `serve`, unless the caller's Ray is already up. Returns "existing", "local" (an
    instance of our own: stop it after) or "joined" (a cluster: disconnect after, leave it running).

    address None means a local instance, never a cluster that RAY_ADDRESS or an earlier `ray start` left on this
    machine (attaching to that by surprise would run on someone else's resources). ray.init replaces the
    driver's SIGINT/SIGTERM handlers with ones that exit at once (exit 1, workers and temp files left behind):
    the CLI's own are put back, which turn SIGTERM into the interrupt every cleanup path handles (exit 143)."""
    ray = import_ray()
    if ray.is_initialized():
        return "existing"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-report thread or prompt for a CLI
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if address is None:
            ray.init(address="local", num_cpus=machine.allowed_cpus(), include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        root: BaseException = e
        while root.__cause__ is not None:  # "Failed to connect" hides why (a missing auth token...)
            root = root.__cause__
        why = one_line(e)[:160] + ("" if root is e else f": {one_line(root)[:300]}")
        raise BackendUnavailableError(f"--address {address or 'local'}: Ray did not start or connect ({why}); "
                                      "check the address (`ray start --head` makes a cluster), or leave --address "
                                      "out for a local instance") from e
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
    return "local" if address is None else "joined"


class RayWorkers:
    def __init__(self, artifact: Path, opts: BatchOptions) -> None:
        self.artifact, self.opts = artifact, opts
        self.actors: list[Any] = []
        self.pids: list[int] = []
        self.idle: list[int] = []
        self.busy: dict[Any, tuple[int, Any]] = {}  # object ref -> (worker index, the caller's tag)
        self.restarts = 0
        self.backend = self.address = ""
        self.mode = "existing"  # start_ray's answer

    @property
    def size(self) -> int:
        return len(self.actors)

    @property
    def running(self) -> bool:
        return bool(self.busy)

    def __enter__(self) -> RayWorkers:
        from cyclegan_deploy.scale.batch import default_workers

        ray = import_ray()
        self.mode = start_ray(self.opts.address)
        try:
            self._start_workers(ray, default_workers)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start_workers(self, ray: Any, default_workers: Any) -> None:
        opts = self.opts
        res = ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        if opts.gpus_per_worker > gpus:
            raise BackendUnavailableError(f"--gpus-per-worker {opts.gpus_per_worker}: the Ray cluster has {gpus:g} "
                                          "GPUs; leave it out to run on CPUs")
        n = opts.workers or default_workers(cpus, gpus, opts.gpus_per_worker)
        per = max(0.01, cpus / n)  # fractional: more workers than CPUs still schedule (they share the cores)
        load = {**opts.load, "threads": opts.threads or max(1, int(per))}
        actor = ray.remote(SegmentWorker).options(num_cpus=per, num_gpus=opts.gpus_per_worker, max_restarts=-1,
                                                  max_task_retries=opts.retries, max_concurrency=2)
        self.actors = [actor.remote(str(self.artifact), load, opts.video, opts.tile, opts.tile_overlap)
                       for _ in range(n)]
        try:
            described = ray.get([a.describe.remote() for a in self.actors])
        except ray.exceptions.RayError as e:
            raise CgDeployError(f"{self.artifact}: the workers could not load the model ({_cause(e)})") from e
        self.pids = [pid for pid, _ in described]
        self.backend = described[0][1]
        self.idle = list(range(n))
        self.address = str(ray.get_runtime_context().gcs_address)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        ray = import_ray()
        if self.mode != "local":  # a cluster others use: stop only our workers (shutdown stops all of a local one)
            for a in self.actors:
                with contextlib.suppress(Exception):
                    ray.kill(a, no_restart=True)
        self.actors = []
        if self.mode != "existing":
            ray.shutdown()

    def submit(self, tag: Any, src: str, part: str, start: Fraction, duration: Fraction | None) -> None:
        i = self.idle.pop(0)
        self.busy[self.actors[i].translate.remote(src, part, start, duration)] = (i, tag)

    def collect(self, timeout: float) -> Iterator[tuple[Any, SegmentResult | None, str | None]]:
        """(tag, result, None) or (tag, None, error) for each call that has ended, waiting at most `timeout`
        seconds for the first: returning as soon as one ends lets the driver hand its worker the next segment
        at once, instead of leaving it idle until the timeout or every other worker is done."""
        ray = import_ray()
        refs = list(self.busy)
        if not refs:  # the queue held only segments of inputs that had failed meanwhile
            return
        first, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        ready = first + (ray.wait(rest, num_returns=len(rest), timeout=0)[0] if first and rest else [])
        for ref in ready:
            i, tag = self.busy.pop(ref)
            self.idle.append(i)
            try:
                result: SegmentResult = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                yield tag, None, (f"a worker died {self.opts.retries + 1} times on this input's segment "
                                  f"({_cause(e)}); out of memory? see the Ray logs (/tmp/ray/session_latest/logs)")
                continue
            except ray.exceptions.RayError as e:
                yield tag, None, _cause(e)
                continue
            if result.pid != self.pids[i]:  # Ray restarted this worker while it ran the segment
                self.restarts += 1
                self.pids[i] = result.pid
                result = replace(result, retried=1)
            yield tag, result, None

    def busy_pids(self) -> list[int]:
        return [self.pids[i] for i, _ in self.busy.values()]

    def running_frames(self) -> int:
        """Frames the busy workers have written of their current segments (0 for one not answering now): all
        asked at once, one wait of at most 0.2 s for the lot."""
        ray = import_ray()
        asked = [self.actors[i].progress.remote() for i, _ in self.busy.values()]
        if not asked:
            return 0
        ready, _ = ray.wait(asked, num_returns=len(asked), timeout=0.2)
        total = 0
        for ref in ready:
            with contextlib.suppress(Exception):  # a worker that died meanwhile
                total += ray.get(ref)
        return total
