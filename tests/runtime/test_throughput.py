"""OpenVINO throughput mode: run_many keeps several batches in flight and still gives every output in input
order, equal to synchronous calls; an inference that fails inside the async pool is raised at its turn; a
stopped stream waits for its running requests; video and image folders through it give the same frames as
one batch at a time. No timings are asserted (those are `cgdeploy bench`'s and the README's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_error, run_cli

from cyclegan_deploy.backends import load_backend
from cyclegan_deploy.errors import ConfigError

ov = pytest.importorskip("openvino")
from cyclegan_deploy.backends import openvino as ovb  # noqa: E402


def _batches(shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    return [np.random.default_rng(i).uniform(-1, 1, s).astype(np.float32) for i, s in enumerate(shapes)]


@pytest.fixture(scope="module")
def throughput(tiny_onnx):
    backend = load_backend(tiny_onnx, "openvino", precision="f32", performance_hint="THROUGHPUT")
    yield backend
    backend.close()


def test_throughput_mode_reads_the_optimal_number_of_requests(tiny_onnx, throughput) -> None:
    compiled = next(iter(throughput._compiled.values())).model
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert throughput.max_inflight == int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) >= 1
    with load_backend(tiny_onnx, "openvino", precision="f32") as latency:  # the default: one at a time
        assert latency.max_inflight == 1
    with load_backend(tiny_onnx, "openvino", precision="f32", performance_hint="THROUGHPUT", inflight=5) as five:
        assert five.max_inflight == 5
    with pytest.raises(ConfigError, match="LATENCY or THROUGHPUT"):
        load_backend(tiny_onnx, "openvino", performance_hint="FASTEST")


def test_run_many_is_ordered_bounded_and_equal_to_sync_calls(throughput) -> None:
    shapes = [(2, 3, 32, 32)] * 5 + [(1, 3, 24, 40)] * 3 + [(2, 3, 32, 32)] * 2  # a shape change drains
    xs = _batches(shapes)
    want = [throughput(x) for x in xs]
    pulled = 0
    ahead: list[int] = []

    def feed():
        nonlocal pulled
        for x in xs:
            pulled += 1
            yield x

    got = []
    for y in throughput.run_many(feed(), inflight=3):
        ahead.append(pulled - len(got))  # batches taken from the input but not yet given back
        got.append(y)
    assert len(got) == len(xs)
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
    assert max(ahead) <= 3 + 1 and max(ahead) >= 2  # several in flight, never more than inflight (+ the next)


def test_run_many_outputs_are_copies(throughput) -> None:
    """The requests' output memory is reused by their next inference: earlier outputs must not change."""
    xs = _batches([(1, 3, 32, 32)] * 6)
    got = list(throughput.run_many(xs, inflight=2))
    assert all(np.array_equal(throughput(x), y) for x, y in zip(xs, got, strict=True))
    assert len({y.ctypes.data for y in got}) == len(got)


def _reshape_model():
    """y = Reshape(x, s): an inference fails (at run time, inside the request) when s does not fit x."""
    import openvino.opset13 as ops

    x = ops.parameter([-1], np.float32, name="x")
    s = ops.parameter([2], np.int64, name="s")
    return ovb.shared_core().compile_model(ov.Model([ops.reshape(x, s, special_zero=False)], [x, s]), "CPU")


def test_an_inference_failing_inside_the_pool_is_raised_at_its_turn() -> None:
    compiled = _reshape_model()
    x = np.arange(6, dtype=np.float32)
    good, bad = np.array([2, 3], np.int64), np.array([5, 5], np.int64)
    work = [(compiled, {0: x, 1: good})] * 3 + [(compiled, {0: x, 1: bad})] + [(compiled, {0: x, 1: good})] * 3
    got = []
    with pytest.raises(Exception, match="(?i)reshape|shape"):
        for y in ovb.infer_async(iter(work), jobs=2):
            got.append(y)
    assert len(got) == 3 and all(np.array_equal(y, x.reshape(2, 3)) for y in got)


def test_an_error_reading_a_result_is_raised_at_its_turn() -> None:
    compiled = _reshape_model()
    x = np.arange(6, dtype=np.float32)
    work = [(compiled, {0: x, 1: np.array([2, 3], np.int64)})] * 6
    calls = 0

    def collect(request):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise ValueError("result 4 unreadable")
        return np.array(request.get_output_tensor(0).data, copy=True)

    got = []
    with pytest.raises(ValueError, match="result 4 unreadable"):
        for y in ovb.infer_async(iter(work), jobs=3, collect=collect):
            got.append(y)
    assert len(got) == 3


def test_a_stream_stopped_early_waits_for_its_requests(throughput) -> None:
    xs = _batches([(2, 3, 32, 32)] * 8)
    outputs = throughput.run_many(iter(xs), inflight=3)
    first = next(outputs)
    outputs.close()  # the consumer stops (an error downstream, Ctrl-C): running requests end first
    assert np.array_equal(first, throughput(xs[0]))
    assert np.array_equal(list(throughput.run_many(xs[:3], inflight=3))[2], throughput(xs[2]))  # still usable


# ---- the pipelines ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    pytest.importorskip("av")
    from cyclegan_deploy.sample_media import make_sample_video

    return make_sample_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=14, size=(32, 48))


def _decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def test_video_with_batches_in_flight_gives_the_same_frames(throughput, clip, tmp_path) -> None:
    from cyclegan_deploy.video import VideoOptions, translate_video

    outs = {}
    for inflight in (1, 3):
        dst = tmp_path / f"out{inflight}.mkv"  # ffv1: lossless, so frames compare exactly
        report = translate_video(clip, dst, throughput, VideoOptions(progress=False, batch=2, codec="ffv1",
                                                                     inflight=inflight))
        assert report.inflight == inflight and report.frames == 14
        assert (" x3 in flight" in report.summary()) is (inflight == 3)
        outs[inflight] = _decoded(dst)
    assert outs[1].shape == (14, 32, 48, 3) and np.array_equal(outs[1], outs[3])


def test_video_inflight_option_is_checked(throughput, clip, tmp_path) -> None:
    from cyclegan_deploy.video import VideoOptions, translate_video

    with pytest.raises(ConfigError, match="--inflight 0"):
        translate_video(clip, tmp_path / "x.mp4", throughput, VideoOptions(progress=False, inflight=0))
    assert not (tmp_path / "x.mp4").exists()


def test_image_folder_with_batches_in_flight_gives_the_same_images(throughput, tmp_path) -> None:
    from PIL import Image

    from cyclegan_deploy.images import translate_images

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(7):  # two sizes, so batches of each size interleave with the other's
        h, w = (24, 32) if i % 3 else (20, 28)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / ("sub" if i % 2 else "")
                                                                               / f"im{i}.png")
    for inflight in (1, 3):
        report = translate_images(src, tmp_path / f"out{inflight}", throughput, batch=2, inflight=inflight)
        assert len(report.written) == 7 and not report.skipped
    for a in sorted((tmp_path / "out1").rglob("*.png")):
        b = tmp_path / "out3" / a.relative_to(tmp_path / "out1")
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_cli_throughput_and_inflight(tiny_onnx, clip, tmp_path, capsys) -> None:
    dst = tmp_path / "out.mp4"
    code, out, err = run_cli(capsys, "video", clip, "-o", dst, "--model", tiny_onnx, "--backend", "openvino",
                             "--throughput", "--inflight", "2", "--batch", "2", "--no-progress")
    assert code == 0, err
    assert "openvino-f32 batch 2 x2 in flight" in out and dst.exists()
    code, out, err = run_cli(capsys, "video", clip, "-o", tmp_path / "ort.mp4", "--model", tiny_onnx, "--backend",
                             "onnxruntime", "--throughput")
    assert code != 0 and "--throughput is OpenVINO" in one_error(err, alone=True)
    assert not (tmp_path / "ort.mp4").exists()


def test_a_backend_freed_on_another_thread_leaves_ctrl_c_working(tiny_onnx) -> None:
    """OpenVINO's CPU plugin points the compiling thread's signal stack at its own buffer and restores it on
    the thread that frees it. A backend dropped by a pipeline thread (or the garbage collector there) used to
    free its Core there, leaving the main thread's signal stack dangling: the next Ctrl-C was a SIGSEGV. One
    Core per process (shared_core) is never freed mid-run. Checked in a child process, which would crash."""
    import subprocess
    import sys

    code = ("import gc, os, signal, sys, threading, time\n"
            "from cyclegan_deploy.backends import load_backend\n"
            "box = [load_backend(sys.argv[1], 'openvino', precision='f32')]\n"
            "t = threading.Thread(target=lambda: (box.clear(), gc.collect())); t.start(); t.join()\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGINT); time.sleep(5)\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted cleanly')\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_onnx)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "interrupted cleanly", (proc.returncode, proc.stderr[-500:])
