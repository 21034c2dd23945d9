"""`cgdeploy batch`: many videos (and long ones cut into keyframe segments) over Ray actors, joined losslessly.

The driver (this module) lists the inputs, refuses existing outputs (unless --resume skips them or --force
replaces them), probes each input and cuts it at keyframes (segments.py), then hands segments to the workers
(worker.py: one Ray actor per worker, the backend loaded once) one at a time, the next as soon as one is
free, so a long video spreads over all workers and a short one takes one. Each translated segment is a
complete file in OUT_DIR/.cgdeploy-parts/<input key>/ (written atomically); when an input's last segment is
in, the driver joins its parts without re-encoding, muxes the input's audio back and renames the result onto
its final name. A worker that dies (killed, out of memory) is restarted by Ray and the segment it was on is
run again (Ray's max_task_retries); the others are not affected. After Ctrl-C, --resume skips finished
outputs and reuses finished parts of the others.

Ray is imported only in here and worker.py (the `[scale]` extra): without an --address this starts a local
Ray instance for the run and stops it after; with one, it joins that cluster (inputs and OUT_DIR must then
be on a filesystem every node sees, and cyclegan-deploy installed on each).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cyclegan_deploy.artifacts import read_card
from cyclegan_deploy.errors import CgDeployError, ConfigError
from cyclegan_deploy.outputs import locked, refuse_existing
from cyclegan_deploy.scale.inputs import WorkInput, collect_inputs
from cyclegan_deploy.scale.progress import BatchProgress
from cyclegan_deploy.scale.report import BatchReport, InputResult
from cyclegan_deploy.scale.segments import Segment, join_segments, plan_segments
from cyclegan_deploy.scale.worker import SegmentResult
from cyclegan_deploy.tiling import check_tiling
from cyclegan_deploy.video.options import VideoOptions, check_options
from cyclegan_deploy.video.probe import VideoInfo, check_encoder_options, output_codec, probe_video

PARTS = ".cgdeploy-parts"


@dataclass
class BatchOptions:
    workers: int | None = None  # None: GPUs / gpus_per_worker, else one per 2 CPUs of the cluster (at least 1)
    gpus_per_worker: float = 0.0
    threads: int | None = None  # backend threads per worker; None: the CPUs Ray gives each worker
    # long enough that a worker's start-up and the keyframe cut cost little, short enough that one long video
    # keeps several workers busy
    segment_seconds: float = 20.0
    retries: int = 3  # attempts per segment after its worker died (Ray's max_task_retries)
    resume: bool = False  # skip outputs that exist, reuse finished parts
    force: bool = False  # replace outputs that exist
    address: str | None = None  # None: a local Ray instance for this run; "auto" or "ray://host:10001": a cluster
    audio: bool = True
    video: dict[str, Any] = field(default_factory=dict)  # VideoOptions fields: batch, crf, codec, preset, ...
    load: dict[str, Any] = field(default_factory=dict)  # load_backend arguments: backend, device, precision, ...
    tile: int | None = None  # run the model on tiles of this many pixels (tiling.TiledBackend); None: whole frames
    tile_overlap: int = 16
    progress: bool = True
    # called each time the driver looks at the workers (about twice a second) with the progress so far and the
    # process ids of the busy workers (tests kill one; an embedding app can show its own progress)
    on_poll: Callable[[BatchProgress, list[int]], None] | None = None


@dataclass
class _Input:
    item: WorkInput
    dst: Path
    result: InputResult
    info: VideoInfo | None = None
    segments: list[Segment] = field(default_factory=list)
    parts: Path | None = None
    finished: dict[int, SegmentResult] = field(default_factory=dict)
    t0: float | None = None


def _key(src: Path, artifact: Path, opts: BatchOptions) -> str:
    """Names an input's parts folder: a changed input, model or encoding makes new parts, not reused old ones."""
    s, a = src.stat(), artifact.stat()
    text = repr((str(src.resolve()), s.st_size, s.st_mtime_ns, str(artifact.resolve()), a.st_size, a.st_mtime_ns,
                 sorted(opts.video.items()), opts.segment_seconds))
    return f"{src.stem[:40]}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _plan(items: list[WorkInput], out_dir: Path, artifact: Path, opts: BatchOptions) -> list[_Input]:
    states, existing = [], []
    for item in items:
        dst = item.dst(out_dir)
        st = _Input(item, dst, InputResult(str(item.src), str(dst), "pending"))
        states.append(st)
        if dst.exists() and opts.resume:
            st.result.status = "skipped"
        elif dst.exists() and not opts.force:
            existing.append(dst)
    if existing:
        shown = ", ".join(map(str, existing[:3])) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ConfigError(f"{shown}: already there; pass --resume to skip finished outputs or --force to replace them")
    for st in states:
        if st.result.status != "pending":
            continue
        try:
            st.info = probe_video(st.item.src)
            st.segments = plan_segments(st.info, opts.segment_seconds)
        except CgDeployError as e:
            st.result.status, st.result.error = "failed", str(e)
            continue
        st.parts = out_dir / PARTS / _key(st.item.src, artifact, opts)
        if not opts.resume:
            shutil.rmtree(st.parts, ignore_errors=True)
        st.result.segments = len(st.segments)
    return states


def _check_options(opts: BatchOptions, states: list[_Input], artifact: Path) -> None:
    """The options a worker would refuse, refused here before Ray starts."""
    check_options(VideoOptions(**opts.video))
    if opts.segment_seconds <= 0:
        raise ConfigError(f"--segment-seconds {opts.segment_seconds}: must be > 0")
    if opts.tile is not None:
        check_tiling(read_card(artifact), opts.tile, opts.tile_overlap)
    for st in states:
        check_encoder_options(output_codec(opts.video.get("codec"), st.dst), opts.video.get("pix_fmt"),
                              opts.video.get("preset", "veryfast"))


def run_batch(inputs: list[Path], out_dir: Path, artifact: Path, opts: BatchOptions | None = None) -> BatchReport:
    """Translate every input video into OUT_DIR with Ray workers; returns the report (also written as JSON).
    Inputs that fail are reported (status "failed", with the error) without stopping the others."""
    opts, out_dir, artifact = opts or BatchOptions(), Path(out_dir), Path(artifact)
    if not artifact.exists():
        raise ConfigError(f"{artifact}: no such model file")
    items = collect_inputs(inputs, out_dir)
    with locked(out_dir, "-o"):
        states = _plan(items, out_dir, artifact, opts)
        _check_options(opts, states, artifact)
        if any(st.result.status == "pending" for st in states):
            report = _translate(states, artifact, out_dir, opts)
        else:  # nothing to do (--resume after a finished run, or every input unreadable): no Ray
            report = BatchReport(out_dir, str(artifact), "none", 0, "none")
            report.inputs = [st.result for st in states]
        parts = out_dir / PARTS
        if parts.is_dir() and not any(parts.iterdir()):
            parts.rmdir()
        report.write()
    return report


def _translate(states: list[_Input], artifact: Path, out_dir: Path, opts: BatchOptions) -> BatchReport:
    from cyclegan_deploy.scale.cluster import RayWorkers

    with RayWorkers(artifact, opts) as pool:
        report = BatchReport(out_dir, str(artifact), pool.backend, pool.size, pool.address)
        report.inputs = [st.result for st in states]
        t0 = time.perf_counter()
        _Driver(states, pool, opts).run()
        report.wall_s = time.perf_counter() - t0
        report.worker_restarts = pool.restarts
    return report


class _Driver:
    """Hands out segments, collects results, joins finished inputs, shows progress."""

    def __init__(self, states: list[_Input], pool: Any, opts: BatchOptions) -> None:
        self.states, self.pool, self.opts = states, pool, opts
        self.queue: deque[tuple[_Input, Segment]] = deque(
            (st, seg) for st in states if st.result.status == "pending" for seg in st.segments)
        total = sum(seg.frames for _, seg in self.queue)
        self.progress = BatchProgress(len([s for s in states if s.result.status == "pending"]), total, opts.progress)

    def run(self) -> None:
        with self.progress:
            while self.queue or self.pool.running:
                while self.queue and self.pool.idle:
                    st, seg = self.queue.popleft()
                    if st.result.status != "pending":  # failed meanwhile: its other segments are dropped
                        continue
                    assert st.parts is not None and st.info is not None
                    st.parts.mkdir(parents=True, exist_ok=True)
                    st.t0 = st.t0 or time.perf_counter()
                    part = st.parts / f"{seg.index:05d}{st.dst.suffix}"
                    self.pool.submit((st, seg), str(st.item.src), str(part), seg.start, seg.duration)
                for (st, seg), result, error in self.pool.collect(timeout=0.5):
                    self._finished(st, seg, result, error)
                self.progress.update(running=self.pool.running_frames())
                if self.opts.on_poll is not None:
                    self.opts.on_poll(self.progress, self.pool.busy_pids())

    def _finished(self, st: _Input, seg: Segment, result: SegmentResult | None, error: str | None) -> None:
        if st.result.status != "pending":
            return
        if error is not None or result is None:
            st.result.status, st.result.error = "failed", error
            self.progress.input_done(failed=True)
            return
        st.finished[seg.index] = result
        st.result.frames += result.frames
        st.result.retried_segments += result.retried
        st.result.reused_segments += result.reused
        self.progress.segment_done(result.frames)
        if len(st.finished) == len(st.segments):
            self._join(st)

    def _join(self, st: _Input) -> None:
        assert st.info is not None and st.parts is not None
        parts = [st.parts / f"{seg.index:05d}{st.dst.suffix}" for seg in st.segments]
        try:
            st.dst.parent.mkdir(parents=True, exist_ok=True)
            refuse_existing(st.dst, self.opts.force or self.opts.resume)
            join_segments(st.info, parts, [seg.start for seg in st.segments], st.dst, self.opts.audio,
                          frames=st.result.frames)
        except (CgDeployError, OSError) as e:
            st.result.status, st.result.error = "failed", str(e)
            self.progress.input_done(failed=True)
            return
        shutil.rmtree(st.parts, ignore_errors=True)
        st.result.status = "done"
        st.result.seconds = time.perf_counter() - (st.t0 or time.perf_counter())
        self.progress.input_done(failed=False)


def default_workers(cpus: float, gpus: float, gpus_per_worker: float) -> int:
    """One worker per GPU share asked for, else one per two CPUs (decode, pre/post and encode threads want
    the cores a CPU model leaves); at least one."""
    if gpus_per_worker > 0:
        return max(1, int(gpus // gpus_per_worker))
    return max(1, int(cpus // 2))

