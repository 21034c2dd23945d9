"""The torch backend's uint8 path (run_uint8: normalise, model, scale/clip/round on the backend's device) and
`video` through it. On CPU (device_io=True) it runs the same torch code as on CUDA, so the pixels are compared
with the host path's exactly; CUDA graphs and the CUDA path itself are checked where a GPU is present (`gpu`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cyclegan_deploy.backends.torch import TorchBackend  # noqa: E402
from cyclegan_deploy.errors import ConfigError, ModelError, ShapeError  # noqa: E402
from cyclegan_deploy.frames import from_model, pad_frames, pad_to_model, to_model  # noqa: E402
from cyclegan_deploy.sample_media import make_sample_video  # noqa: E402
from cyclegan_deploy.video import VideoOptions, translate_video  # noqa: E402


@pytest.fixture(scope="module")
def sr_generator_file(tmp_path_factory) -> Path:
    """A x2 RRDBNet ([0, 1] in and out) as a generator file: the other value ranges."""
    from cyclegan_deploy.train.checkpoints import save_generator
    from cyclegan_deploy.train.models import seeded_generator
    from cyclegan_deploy.train.registry import GeneratorConfig

    cfg = GeneratorConfig(arch="rrdbnet_x2", ngf=8, n_blocks=1, grow=4)
    model = seeded_generator(cfg, 0)
    with torch.no_grad():
        model.conv_last.bias += 0.5  # outputs around the middle of [0, 1]: clipping must not hide differences
    path = tmp_path_factory.mktemp("sr") / "latest_net_G.pth"
    save_generator(model, cfg.to_meta(source="sr.pth"), path)
    return path


def host_path(backend: TorchBackend, rgb: np.ndarray) -> np.ndarray:
    """What video's host path makes of these frames: frames.to_model, the float call, frames.from_model."""
    return from_model(backend(to_model(rgb, backend.meta.input_range)), backend.meta.output_range)


@pytest.mark.parametrize("model", ["tiny_generator_file", "sr_generator_file"])
def test_run_uint8_gives_the_host_paths_pixels(model: str, request: pytest.FixtureRequest) -> None:
    backend = TorchBackend(request.getfixturevalue(model), device="cpu", options={"device_io": True})
    assert backend.uint8_io is True
    rgb = np.random.default_rng(0).integers(0, 256, (2, 36, 44, 3), dtype=np.uint8)
    got, finite = backend.run_uint8(rgb)
    s = backend.meta.scale
    assert finite and got.dtype == np.uint8 and got.shape == (2, 36 * s, 44 * s, 3)
    np.testing.assert_array_equal(got, host_path(backend, rgb))


def test_uint8_io_is_off_on_cpu_unless_asked(tiny_generator_file: Path) -> None:
    assert TorchBackend(tiny_generator_file, device="cpu").uint8_io is False


def test_run_uint8_refuses_what_it_cannot_take(tiny_generator_file: Path) -> None:
    backend = TorchBackend(tiny_generator_file, device="cpu", options={"device_io": True})
    with pytest.raises(ShapeError, match="uint8 frames"):
        backend.run_uint8(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ShapeError, match="not multiples of 4; pad them first .frames.pad_frames."):
        backend.run_uint8(np.zeros((1, 33, 32, 3), np.uint8))


def test_non_finite_outputs_are_flagged(tiny_generator_file: Path) -> None:
    backend = TorchBackend(tiny_generator_file, device="cpu", options={"device_io": True})
    backend.model = lambda x: x * float("nan")
    _, finite = backend.run_uint8(np.zeros((1, 32, 32, 3), np.uint8))
    assert finite is False


def test_pad_frames_is_pad_to_model_on_frames() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    want = pad_to_model(rgb.transpose(0, 3, 1, 2), (8, 12)).transpose(0, 2, 3, 1)
    got = pad_frames(rgb, (8, 12))
    assert got.flags.c_contiguous and got.shape == (2, 8, 12, 3)
    np.testing.assert_array_equal(got, want)
    assert pad_frames(rgb, (5, 7)) is rgb


@pytest.mark.parametrize("size,frames,batch", [((48, 64), 5, 2), ((33, 47), 3, 1)])
def test_video_through_uint8_io_equals_the_host_path(tiny_generator_file: Path, tmp_path: Path,
                                                     size: tuple[int, int], frames: int, batch: int) -> None:
    """Same frames, bit for bit (lossless ffv1): a partial last batch, and an odd size that needs padding."""
    import av

    src = make_sample_video(tmp_path / "in.mkv", frames=frames, size=size, audio=None)
    outs = {}
    for io in (False, True):
        with TorchBackend(tiny_generator_file, device="cpu", options={"device_io": io}) as be:
            assert be.uint8_io is io
            dst = tmp_path / f"out_{io}.mkv"
            report = translate_video(src, dst, be, VideoOptions(codec="ffv1", batch=batch, progress=False))
        assert report.frames == frames
        with av.open(str(dst)) as c:
            outs[io] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert outs[True].shape == (frames, *size, 3)
    np.testing.assert_array_equal(outs[True], outs[False])


def test_video_names_non_finite_frames_on_the_uint8_path(tiny_generator_file: Path, tmp_path: Path) -> None:
    src = make_sample_video(tmp_path / "in.mp4", frames=2, size=(32, 32), audio=None)
    backend = TorchBackend(tiny_generator_file, device="cpu", options={"device_io": True})
    backend.model = lambda x: x * float("nan")
    with pytest.raises(ModelError, match="NaN/Inf values for frames 1-2 of"):
        translate_video(src, tmp_path / "out.mp4", backend, VideoOptions(progress=False))
    assert not (tmp_path / "out.mp4").exists()


def test_a_failing_model_on_the_uint8_path_is_one_line_and_leaves_nothing(tiny_generator_file: Path,
                                                                          tmp_path: Path) -> None:
    from cyclegan_deploy.errors import CgDeployError

    src = make_sample_video(tmp_path / "in.mp4", frames=3, size=(32, 32), audio=None)
    backend = TorchBackend(tiny_generator_file, device="cpu", options={"device_io": True})

    def oom(x):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    backend.model = oom
    with pytest.raises(CgDeployError, match=r"ran out of memory on a \d+x3x32x32 batch .* use a smaller --batch"):
        translate_video(src, tmp_path / "out.mp4", backend, VideoOptions(progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_cuda_only_options_and_a_lone_compile_mode_are_refused_on_cpu(tiny_generator_file: Path) -> None:
    with pytest.raises(ConfigError, match="cuda_graphs applies to CUDA only"):
        TorchBackend(tiny_generator_file, device="cpu", options={"cuda_graphs": True})
    with pytest.raises(ConfigError, match="compile_mode='max-autotune' needs compile=true"):
        TorchBackend(tiny_generator_file, device="cpu", options={"compile_mode": "max-autotune"})


def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graphs_replay_what_eager_computes(tiny_generator_file: Path, precision: str) -> None:
    _cuda()
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    rgb = np.random.default_rng(3).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    eager = TorchBackend(tiny_generator_file, device="cuda", precision=precision)
    graphs = TorchBackend(tiny_generator_file, device="cuda", precision=precision, options={"cuda_graphs": True})
    assert graphs.name.endswith("-graphs") and eager.uint8_io and graphs.uint8_io
    tol = 1e-5 if precision == "fp32" else 2e-3
    for _ in range(2):  # the first call captures, the second replays
        assert float(np.abs(graphs(x) - eager(x)).max()) <= tol
        got, finite = graphs.run_uint8(rgb)
        want, _ = eager.run_uint8(rgb)
        assert finite and int(np.abs(got.astype(int) - want).max()) <= 1


@pytest.mark.gpu
def test_cuda_uint8_path_matches_the_cpu_host_path(tiny_generator_file: Path) -> None:
    """fp32 on CUDA without TF32: within 1 grey level of the CPU host path."""
    _cuda()
    rgb = np.random.default_rng(4).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    cpu = TorchBackend(tiny_generator_file, device="cpu")
    got, finite = TorchBackend(tiny_generator_file, device="cuda").run_uint8(rgb)
    assert finite and int(np.abs(got.astype(int) - host_path(cpu, rgb)).max()) <= 1


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_copy_overlap_gives_what_one_batch_at_a_time_gives(tiny_generator_file: Path, graphs: bool) -> None:
    """copy_overlap on real CUDA streams: the same frames as run_uint8 batch by batch, a partial last batch and
    a size change included (the stream logic itself is checked under a simulator in test_overlap.py)."""
    _cuda()
    rng = np.random.default_rng(5)
    shapes = [(2, 64, 96, 3)] * 5 + [(1, 64, 96, 3), (2, 32, 32, 3)]
    batches = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    plain = TorchBackend(tiny_generator_file, device="cuda", options={"cuda_graphs": graphs})
    overlap = TorchBackend(tiny_generator_file, device="cuda", options={"cuda_graphs": graphs, "copy_overlap": True})
    assert overlap.name.endswith("-overlap")
    got = list(overlap.run_uint8_many(iter(batches)))
    assert len(got) == len(batches)
    for (out, finite), rgb in zip(got, batches, strict=True):
        want, want_finite = plain.run_uint8(rgb)
        assert finite == want_finite and np.array_equal(out, want)
