"""`cgdeploy batch`: inputs, keyframe segments and the lossless join without Ray; then, on one local Ray
instance for the module (start-up costs seconds on 2 cores), that batch equals `video` per file, that a
worker killed mid-run still ends with every output complete, and that --resume skips finished files."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from cli_checks import one_error, run_cli
from video_checks import assert_same_video

av = pytest.importorskip("av")

from cyclegan_deploy.backends import load_backend  # noqa: E402
from cyclegan_deploy.errors import ConfigError  # noqa: E402
from cyclegan_deploy.sample_media import make_sample_video  # noqa: E402
from cyclegan_deploy.scale.inputs import collect_inputs  # noqa: E402
from cyclegan_deploy.scale.segments import join_segments, keyframe_times, plan_segments  # noqa: E402
from cyclegan_deploy.video import VideoOptions, probe_video, translate_video  # noqa: E402


def test_inputs_folders_lists_and_clashes(tmp_path):
    root = tmp_path / "season"
    (root / "ep1").mkdir(parents=True)
    for p in (root / "ep1" / "a.mp4", root / "b.mkv", root / "notes.txt", tmp_path / "c.mov"):
        p.write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# one per line\nc.mov\n\n")
    items = collect_inputs([root, listing], tmp_path / "out")
    assert [(i.src.name, str(i.rel)) for i in items] == [("b.mkv", "b.mkv"), ("a.mp4", "ep1/a.mp4"),
                                                         ("c.mov", "c.mov")]
    assert len(collect_inputs([root, root], tmp_path / "out")) == 2  # the same file twice: once
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.mkv").write_bytes(b"x")
    with pytest.raises(ConfigError, match="both would be written"):
        collect_inputs([root, tmp_path / "other" / "b.mkv"], tmp_path / "out")
    with pytest.raises(ConfigError, match="no such file"):
        collect_inputs([tmp_path / "missing.mp4"], tmp_path / "out")
    listing.write_text("gone.mp4\n")
    with pytest.raises(ConfigError, match="lists .*gone.mp4"):
        collect_inputs([listing], tmp_path / "out")
    # OUT_DIR inside the input folder: earlier outputs are not inputs
    (root / "out").mkdir()
    (root / "out" / "b.mkv").write_bytes(b"x")
    assert len(collect_inputs([root], root / "out")) == 2


def test_segments_cut_at_keyframes_and_join_like_video(tmp_path, tiny_onnx):
    """Without Ray: a 29.97 fps Matroska clip (its demuxer gives no dts for the first B-frames) cut at its
    keyframes, each window translated by `video`, joined: the same file as `video` on the whole clip."""
    src = make_sample_video(tmp_path / "ntsc.mkv", frames=40, size=(32, 48), fps="30000/1001", gop=10)
    info = probe_video(src)
    kf = keyframe_times(src)
    segments = plan_segments(info, 0.3)
    assert len(segments) >= 3 and all(s.start in kf for s in segments)  # exact keyframe times (Fractions)
    assert all(s.duration == b.start - s.start for s, b in zip(segments, segments[1:], strict=False))
    with load_backend(tiny_onnx) as be:
        whole = translate_video(src, tmp_path / "whole.mkv", be, VideoOptions(crf=0, progress=False))
        parts = []
        for s in segments:
            parts.append(tmp_path / f"part{s.index}.mkv")
            translate_video(src, parts[-1], be, VideoOptions(crf=0, progress=False, start=s.start,
                                                             duration=s.duration, audio=False))
    join_segments(info, parts, [s.start for s in segments], tmp_path / "joined.mkv", audio=True)
    assert whole.frames == 40
    assert_same_video(tmp_path / "joined.mkv", tmp_path / "whole.mkv")


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def season(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("season")
    make_sample_video(d / "with_audio.mp4", frames=24, size=(48, 64))
    (d / "odd").mkdir()
    make_sample_video(d / "odd" / "odd_size.mkv", frames=15, size=(33, 47), audio=None)
    make_sample_video(d / "long.mp4", frames=75, size=(48, 64), fps="30000/1001", gop=12)
    return d


def _video(src: Path, dst: Path, model: Path) -> None:
    with load_backend(model) as be:
        translate_video(src, dst, be, VideoOptions(crf=0, progress=False))


def test_batch_equals_video_per_file_and_resume(local_ray, season, tiny_onnx, tmp_path):
    from cyclegan_deploy.scale.batch import BatchOptions, run_batch

    out = tmp_path / "out"
    opts = BatchOptions(workers=2, segment_seconds=0.75, video={"crf": 0}, progress=False)
    report = run_batch([season], out, tiny_onnx, opts)
    by_name = {Path(r.src).name: r for r in report.inputs}
    assert {r.status for r in report.inputs} == {"done"}
    assert by_name["long.mp4"].segments >= 3 and by_name["with_audio.mp4"].segments == 1
    for rel in ("with_audio.mp4", "odd/odd_size.mkv", "long.mp4"):
        _video(season / rel, tmp_path / "video" / rel, tiny_onnx)
        assert_same_video(out / rel, tmp_path / "video" / rel)
    assert probe_video(out / "odd/odd_size.mkv").display_size == (33, 47)
    saved = json.loads(report.path.read_text())
    assert saved["done"] == 3 and saved["frames"] == 24 + 15 + 75
    assert not (out / ".cgdeploy-parts").exists()
    assert sorted(p.name for p in out.rglob("*") if "partial" in p.name) == []

    # a second run refuses the existing outputs; --resume skips them (untouched) and redoes a missing one
    with pytest.raises(ConfigError, match="already there.*--resume"):
        run_batch([season], out, tiny_onnx, opts)
    before = {p: p.stat().st_mtime_ns for p in (out / "long.mp4", out / "odd/odd_size.mkv")}
    (out / "with_audio.mp4").unlink()
    again = run_batch([season], out, tiny_onnx, BatchOptions(**{**opts.__dict__, "resume": True}))
    assert {Path(r.src).name: r.status for r in again.inputs} == {"with_audio.mp4": "done", "odd_size.mkv": "skipped",
                                                                  "long.mp4": "skipped"}
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert_same_video(out / "with_audio.mp4", tmp_path / "video" / "with_audio.mp4")


def test_killed_worker_only_costs_its_segment(local_ray, tiny_onnx, tmp_path):
    from cyclegan_deploy.scale.batch import BatchOptions, run_batch

    src = make_sample_video(tmp_path / "in" / "long.mp4", frames=240, size=(192, 256), gop=30)
    killed: list[int] = []

    def kill_one(progress, busy):  # mid-segment: a busy worker that has already written frames of it
        if not killed and progress.running > 0 and busy:
            killed.append(busy[0])
            os.kill(busy[0], signal.SIGKILL)

    opts = BatchOptions(workers=2, segment_seconds=2, video={"crf": 0}, progress=False, on_poll=kill_one)
    report = run_batch([src], tmp_path / "out", tiny_onnx, opts)
    assert killed and report.worker_restarts >= 1
    (result,) = report.inputs
    assert result.status == "done" and result.retried_segments >= 1 and result.segments == 4
    _video(src, tmp_path / "video.mp4", tiny_onnx)
    assert_same_video(tmp_path / "out" / "long.mp4", tmp_path / "video.mp4")


def test_interrupted_run_resumes_from_its_segments(local_ray, tiny_onnx, tmp_path):
    from cyclegan_deploy.scale.batch import PARTS, BatchOptions, run_batch

    src = make_sample_video(tmp_path / "in" / "clip.mkv", frames=60, size=(48, 64), gop=6)

    def interrupt(progress, busy):
        if progress.segments_done >= 2:
            raise KeyboardInterrupt

    opts = BatchOptions(workers=1, segment_seconds=0.2, video={"crf": 0}, progress=False, on_poll=interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_batch([src], tmp_path / "out", tiny_onnx, opts)
    kept = sorted((tmp_path / "out" / PARTS).glob("*/0*.mkv"))
    assert len(kept) >= 2 and not (tmp_path / "out" / "clip.mkv").exists()
    report = run_batch([src], tmp_path / "out", tiny_onnx, BatchOptions(**{**opts.__dict__, "on_poll": None,
                                                                            "resume": True}))
    assert report.inputs[0].status == "done" and report.inputs[0].frames == 60
    assert report.inputs[0].reused_segments == len(kept)
    _video(src, tmp_path / "video.mkv", tiny_onnx)
    assert_same_video(tmp_path / "out" / "clip.mkv", tmp_path / "video.mkv")


def test_cli_errors_are_one_line(capsys, tmp_path, tiny_onnx):
    code, _, err = run_cli(capsys, "batch", tmp_path / "missing.mp4", "-o", tmp_path / "o", "--model", tiny_onnx)
    assert code == 1
    one_error(err, "missing.mp4", alone=True)
    assert not (tmp_path / "o").exists()
    clip = make_sample_video(tmp_path / "c.mp4", frames=2, size=(16, 16))
    code, _, err = run_cli(capsys, "batch", clip, "-o", tmp_path / "o", "--model", tiny_onnx, "--preset", "warp")
    assert code == 1
    one_error(err, "warp", alone=True)


def test_tile_is_checked_before_ray_starts(capsys, tmp_path, tiny_onnx, monkeypatch):
    """`batch --tile` on an instance-norm model: the driver refuses it in one line, before any worker."""
    from cyclegan_deploy.scale import cluster

    def no_ray(*_a, **_k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster, "import_ray", no_ray)
    clip = make_sample_video(tmp_path / "c.mp4", frames=2, size=(16, 16))
    code, _, err = run_cli(capsys, "batch", clip, "-o", tmp_path / "o", "--model", tiny_onnx, "--tile", "64")
    assert code == 1
    one_error(err, "instance norm", alone=True)
