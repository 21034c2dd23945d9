"""`translate_video`: everything that can be refused is refused before the output side is touched, then the
stage threads of one run (job._Job) write a temp file that is committed under the final name."""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cyclegan_deploy.artifacts import commit
from cyclegan_deploy.errors import CgDeployError, ConfigError, MediaError
from cyclegan_deploy.model_checks import check_generator, model_label
from cyclegan_deploy.outputs import (
    check_writable,
    clean_stale_partials,
    locked,
    missing_dirs,
    refuse_existing,
    remove_empty_dirs,
    temp_name,
)
from cyclegan_deploy.tiling import call_size
from cyclegan_deploy.video.inflight import inflight_for
from cyclegan_deploy.video.job import _Job
from cyclegan_deploy.video.options import (
    VideoOptions,
    check_engine_profile,
    check_options,
    engine_of,
    expected_frames,
)
from cyclegan_deploy.video.probe import VideoInfo, check_encoder_options, one_line, output_codec, probe_video
from cyclegan_deploy.video.stages import StageRunner, Streamed, watch
from cyclegan_deploy.video.writer import (
    OutputPlan,
    VideoReport,
    Writer,
    check_output_path,
    fit_batch,
    output_error,
    plan_output,
)

if TYPE_CHECKING:
    from cyclegan_deploy.backends import Backend


def translate_video(src: str | Path, dst: str | Path, backend: Backend, opts: VideoOptions | None = None
                    ) -> VideoReport:
    """Translate every frame of `src` with `backend` into `dst` (see the package doc for what is kept).

    Everything that can be refused is refused before the output side is touched: options, the input, the
    output path (and an existing output unless opts.force), the model's card, the encoder's options, the
    memory the frame size needs, a TensorRT engine's profile against the frame size and batch. Then the output
    folder is created and proven writable, the output is locked against a second run, and a failed run removes
    the folders it created.
    """
    src, dst, opts = Path(src), Path(dst), opts or VideoOptions()
    check_options(opts)
    info = probe_video(src)  # before touching the output side: a bad input must not create folders
    check_output_path(src, dst)
    refuse_existing(dst, opts.force)
    if info.duration is not None and opts.start >= info.duration:
        raise ConfigError(f"--start {opts.start}: {src} is only {info.duration:.2f}s long")
    meta = backend.meta
    check_generator(meta, model_label(backend, opts.model), "video")
    encoder = output_codec(opts.codec, dst)
    check_encoder_options(encoder, opts.pix_fmt, opts.preset)
    plan = plan_output(info, meta, encoder, opts.size, opts.side_by_side, opts.pix_fmt)
    # batches in flight inside the backend are held too: they count like queued ones
    depth = opts.queue_batches + inflight_for(backend, opts.inflight) - 1
    calls = call_size(backend, *plan.padded)  # a tiled backend's model sees tiles, not whole frames
    batch, warning = fit_batch(info, plan, meta, getattr(backend, "device", "cpu"), opts.batch, depth,
                               expected_frames(info, opts), opts.size is not None, calls)
    opts = replace(opts, batch=batch)
    engine = engine_of(opts.model, backend)
    if engine is not None:  # every batch has this one shape (the last repeats its last frame)
        check_engine_profile(engine, src, batch, calls, opts.size is not None)
    created = missing_dirs(dst.parent)
    try:
        check_writable(dst.parent)
        with locked(dst):
            refuse_existing(dst, opts.force)  # again, under the lock: a run that just finished wrote it
            clean_stale_partials(dst)  # temp files of runs that were killed
            report = _run(info, dst, backend, opts, plan)
    except BaseException:
        remove_empty_dirs(created)
        raise
    if warning:
        report.warnings.insert(0, warning)
    return report


def _run(info: VideoInfo, dst: Path, backend: Backend, opts: VideoOptions, plan: OutputPlan) -> VideoReport:
    src = info.path
    pool = ThreadPoolExecutor(max(1, min(opts.batch, os.cpu_count() or 1, 8)), thread_name_prefix="cgdeploy-frames")
    job = _Job(info, backend, opts, plan, pool)
    runner = StageRunner(opts.queue_batches, thread_prefix="cgdeploy-")
    tmp: Path | None = None
    writer: Writer | None = None
    ok = False
    t0 = time.perf_counter()
    try:
        # the real suffix stays last: PyAV picks the container from it
        fd, name = tempfile.mkstemp(prefix=temp_name(dst), suffix=dst.suffix, dir=dst.parent)
        os.close(fd)
        tmp = Path(name)
        # `writer` is for the cleanup below (None until opened); `out` for the stage callables
        writer = out = Writer(tmp, dst, info, plan, crf=opts.crf, preset=opts.preset,
                              audio=job.audio if opts.audio else None)
        runner.start(("decode", job.decode()), [("preprocess", job.preprocess), ("inference", Streamed(job.infer)),
                                                ("postprocess", job.postprocess)],
                     ("encode", lambda b: out.write(b.frames, b.pts)), out.finish)
        def written() -> int:
            if opts.on_frames is not None:
                opts.on_frames(out.frames)
            return out.frames

        watch(runner, info.path.name, expected_frames(info, opts), written, unit="frames", rate_unit="fps",
              show=opts.progress)
        runner.shutdown()
        if runner.error is not None:
            raise runner.error
        if out.frames == 0:
            raise MediaError(f"{src}: no video frames from {opts.start}s on; check --start/--duration (the video "
                             f"is {info.duration or 0:.2f}s long)")
        out.close()
        commit(tmp, dst)
        ok = True
    except (CgDeployError, KeyboardInterrupt):
        raise
    except OSError as e:  # the disk filled up, the folder went away...: named as the output, not its temp file
        raise output_error(e, dst) from e
    except Exception as e:  # codec/muxer failures surface as av errors
        raise MediaError(f"{dst}: writing the video failed ({type(e).__name__}: {one_line(e)})") from e
    finally:
        if not ok:
            runner.shutdown()
            if writer is not None and not runner.running("encode"):  # a live encode thread still uses it
                try:
                    writer.close()
                except Exception:  # noqa: BLE001 - the file is deleted next; closing is best effort
                    pass
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        pool.shutdown(wait=True, cancel_futures=True)  # per-frame tasks are short
    warnings: list[str] = []
    if out.repaired:
        warnings.append(f"{out.repaired} frame timestamps were missing or not increasing: gave each the next tick")
    if job.no_pts:
        warnings.append(f"{job.no_pts} frames had no timestamp: spaced them at {float(info.rate):.3f} fps")
    if any(plan.pad_even):
        warnings.append(f"{plan.pix_fmt} needs even sizes: padded the odd side by one repeated row/column")
    busy = {k: round(v, 4) for k, v in runner.busy.items()}
    return VideoReport(src, dst, out.frames, plan.frame, info.rate, plan.encoder, plan.pix_fmt,
                       info.audio if out.audio_map else [], info.rotation, backend.name, opts.batch,
                       time.perf_counter() - t0, busy, warnings, job.inflight)
