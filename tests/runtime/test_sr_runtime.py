"""Super-resolution through the runtime: tiling (cyclegan_deploy.tiling): tiled equals untiled within 1e-4
on an fp32 backend when the overlap covers the receptive field (x4, and x2 with its pixel-unshuffle), every
call has one shape, instance-norm models and bad sizes are refused; a video upscaled x4 keeps its frames, rate
and audio; bench counts MACs per output pixel."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cyclegan_deploy.backends import load_backend  # noqa: E402
from cyclegan_deploy.errors import ConfigError  # noqa: E402
from cyclegan_deploy.sample_media import make_sample_video  # noqa: E402
from cyclegan_deploy.tiling import TiledBackend  # noqa: E402
from cyclegan_deploy.video import VideoOptions, probe_video, translate_video  # noqa: E402


def _sr_onnx(arch: str, folder: Path) -> Path:
    from cyclegan_deploy.export.onnx import export_onnx
    from cyclegan_deploy.train.models import seeded_generator
    from cyclegan_deploy.train.registry import GeneratorConfig

    cfg = GeneratorConfig(arch=arch, ngf=8, n_blocks=1, grow=4)
    model = seeded_generator(cfg, 0)
    with torch.no_grad():  # outputs centred in [0, 1]: the clamp must not hide differences
        model.conv_last.bias += 0.5
    return export_onnx(model, cfg.to_meta(source=f"{arch}.pth"), folder / "g_AtoB.onnx")


@pytest.fixture(scope="module")
def sr_models(tmp_path_factory) -> dict[str, Path]:
    return {arch: _sr_onnx(arch, tmp_path_factory.mktemp(arch)) for arch in ("rrdbnet_x4", "rrdbnet_x2")}


class _Shapes:
    """Records the shapes a backend is called with, and the run_many calls (one per tiled batch)."""

    def __init__(self, inner) -> None:
        self.inner, self.meta, self.shapes, self.many = inner, inner.meta, [], 0
        self.name, self.precision, self.device, self.threads = inner.name, inner.precision, "cpu", None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        return self.inner(x)

    def run_many(self, batches, inflight=None):
        self.many += 1
        for x in batches:
            yield self(x)

    def close(self) -> None:
        self.inner.close()


# receptive field of the 1-block RRDBNet: ~18 input pixels (17 3x3 convs before upsampling, 4 after); the x2 one
# sees twice as far in input pixels (it runs at half resolution after its pixel-unshuffle)
@pytest.mark.parametrize(("arch", "size", "tile", "overlap"), [("rrdbnet_x4", (56, 76), 64, 20),
                                                                ("rrdbnet_x2", (100, 122), 96, 40)])
def test_tiled_equals_untiled(sr_models, arch, size, tile, overlap) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 3, *size)).astype(np.float32)  # (N, C, H, W) in the card's [0, 1]
    with load_backend(sr_models[arch]) as be:
        want = be(x)
        spy = _Shapes(be)
        tiled = TiledBackend(spy, tile, overlap)  # type: ignore[arg-type]
        got = tiled(x)
    s = 4 if arch.endswith("x4") else 2
    assert got.shape == want.shape == (2, 3, s * size[0], s * size[1])
    assert len(spy.shapes) == tiled.calls > 1 and spy.many == 1  # the frame's tiles in one run_many
    assert {sh for sh in spy.shapes} == {(2, 3, min(tile, size[0]), min(tile, size[1]))}  # one shape for all calls
    assert np.abs(got - want).max() <= 1e-4


def test_tiles_run_through_openvinos_async_queue(sr_models) -> None:
    """An OpenVINO backend in THROUGHPUT mode gets a frame's tiles through run_many (several requests in
    flight) and the frame is the same as untiled."""
    pytest.importorskip("openvino")
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 72, 84)).astype(np.float32)
    with load_backend(sr_models["rrdbnet_x4"], "openvino", precision="f32", performance_hint="THROUGHPUT",
                      inflight=3) as be:
        assert be.max_inflight == 3
        tiled = TiledBackend(be, 64, 20)
        want, got = be(x), tiled(x)
    assert tiled.calls > be.max_inflight
    assert np.abs(got - want).max() <= 1e-4


def test_tiling_refusals(sr_models, tiny_onnx) -> None:
    with load_backend(tiny_onnx) as be, pytest.raises(ConfigError, match="instance norm"):
        TiledBackend(be, 64, 8)
    with load_backend(sr_models["rrdbnet_x2"]) as be:
        with pytest.raises(ConfigError, match="--tile 63: must be a multiple of 2"):
            TiledBackend(be, 63, 8)
        with pytest.raises(ConfigError, match="--tile-overlap 32: must be >= 0, leave at least 2 pixels"):
            TiledBackend(be, 64, 32)
        small = TiledBackend(be, 64, 8)
        x = np.zeros((1, 3, 32, 40), np.float32)
        assert small(x).shape == (1, 3, 64, 80) and small.calls == 1  # fits in one tile: passed through


def test_video_upscaled_x4_keeps_frames_rate_and_audio(sr_models, tmp_path) -> None:
    src = make_sample_video(tmp_path / "small.mp4", frames=12, size=(24, 32), fps="30000/1001")
    with load_backend(sr_models["rrdbnet_x4"]) as be:
        report = translate_video(src, tmp_path / "big.mp4", be, VideoOptions(progress=False))
        tiled = translate_video(src, tmp_path / "tiled.mkv", TiledBackend(be, 16, 4), VideoOptions(progress=False))
    info, out = probe_video(src), probe_video(tmp_path / "big.mp4")
    assert report.frames == tiled.frames == 12
    assert out.display_size == (96, 128) and probe_video(tmp_path / "tiled.mkv").display_size == (96, 128)
    assert out.rate == info.rate and out.audio == info.audio == ["aac"]
    assert out.duration == pytest.approx(info.duration, abs=1 / float(info.rate))


def test_batch_worker_tiles_like_video(sr_models, tmp_path) -> None:
    """`batch --tile`: the Ray actor class (run here in-process) wraps its backend in the same TiledBackend, so a
    segment equals `video` through TiledBackend frame for frame (crf 0)."""
    from video_checks import assert_same_video

    from cyclegan_deploy.scale.worker import SegmentWorker

    src = make_sample_video(tmp_path / "small.mp4", frames=6, size=(24, 32), audio=None)
    worker = SegmentWorker(str(sr_models["rrdbnet_x4"]), {}, {"crf": 0}, tile=16, tile_overlap=4)
    assert isinstance(worker.backend, TiledBackend) and (worker.backend.tile, worker.backend.overlap) == (16, 4)
    done = worker.translate(str(src), str(tmp_path / "part.mkv"), Fraction(0), None)
    with load_backend(sr_models["rrdbnet_x4"]) as be:
        translate_video(src, tmp_path / "video.mkv", TiledBackend(be, 16, 4), VideoOptions(crf=0, progress=False))
    assert done.frames == 6 and worker.backend.calls > 6
    assert_same_video(tmp_path / "part.mkv", tmp_path / "video.mkv")


def test_serve_replicas_tile_and_refuse_bad_tiles_before_ray(sr_models, tiny_onnx, capsys, monkeypatch) -> None:
    """`serve --tile`: each replica's backend is tiled (open_backend, what the replicas and the preflight call);
    an instance-norm model is refused by the preflight, in one line, before Ray starts."""
    from cli_checks import one_error, run_cli

    from cyclegan_deploy.scale.serve import ServeOptions, open_backend

    be = open_backend(ServeOptions(artifact=str(sr_models["rrdbnet_x4"]), tile=16, tile_overlap=4))
    try:
        assert isinstance(be, TiledBackend) and "tiled 16px/4" in be.name
    finally:
        be.close()
    pytest.importorskip("ray")
    import socket

    from cyclegan_deploy.scale import cluster

    def no_ray(*_a, **_k):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(cluster, "start_ray", no_ray)
    with socket.socket() as sock:  # a port free now (check_port runs before the model is opened)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = run_cli(capsys, "serve", "--model", tiny_onnx, "--tile", "64", "--port", str(port))
    assert code == 1
    one_error(err, "instance norm", alone=True)


def test_bench_counts_macs_per_output_pixel(sr_models, tmp_path, capsys) -> None:
    """bench on a x4 model: MACs counted by hand for the 1-block RRDBNet (feat 8, grow 4), and per output
    pixel they divide by the 4x-sized output."""
    import json

    from cli_checks import run_cli

    code, _, err = run_cli(capsys, "bench", "--model", sr_models["rrdbnet_x4"], "--backends", "onnxruntime",
                           "--sizes", "16x20", "--repeats", "2", "--warmup", "1", "-o", tmp_path / "b")
    assert code == 0, err
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    macs = results["model"]["macs"]["16x20"]
    # 3x3 convs: conv_first, 3 RDBs of 5 dense convs (inputs 8, 12, 16, 20, 24; outputs 4, 4, 4, 4, 8), conv_body
    # at 16x20; conv_up1 at 32x40, conv_up2 and conv_hr at 64x80, conv_last (8 -> 3) at 64x80
    lr = 16 * 20 * (3 * 8 + 3 * (8 * 4 + 12 * 4 + 16 * 4 + 20 * 4 + 24 * 8) + 8 * 8)
    hr = 32 * 40 * 8 * 8 + 2 * 64 * 80 * 8 * 8 + 64 * 80 * 8 * 3
    assert macs["macs"] == 9 * (lr + hr) and macs["from"] == "onnx"
    assert macs["output"] == "64x80" and macs["macs_per_output_px"] == round(macs["macs"] / (64 * 80))
    assert "MAC per output pixel (64x80)" in (tmp_path / "b" / "results.md").read_text()


def test_cli_tile_option(sr_models, tiny_onnx, tmp_path, capsys) -> None:
    """`translate --tile`: the same picture as untiled (within a uint8 level); CycleGAN models refuse tiling."""
    from cli_checks import one_error, run_cli
    from PIL import Image

    rgb = (np.random.default_rng(1).uniform(0, 255, (80, 90, 3))).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    outs = {}
    for name, extra in (("whole", []), ("tiled", ["--tile", "64", "--tile-overlap", "20"])):
        code, _, err = run_cli(capsys, "translate", tmp_path / "in.png", "-o", tmp_path / name, "--model",
                               sr_models["rrdbnet_x4"], *extra)
        assert code == 0, err
        outs[name] = np.asarray(Image.open(tmp_path / name / "in.png")).astype(int)
    assert outs["whole"].shape == (320, 360, 3)
    assert np.abs(outs["whole"] - outs["tiled"]).max() <= 1
    code, _, err = run_cli(capsys, "translate", tmp_path / "in.png", "-o", tmp_path / "cg", "--model", tiny_onnx,
                           "--tile", "64")
    assert code == 1
    one_error(err, "instance norm", alone=True)
