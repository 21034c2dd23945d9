"""`cgdeploy video` with a TensorRT engine checks the clip's padded frame size and the batch against the profile
recorded in the engine's sidecar before it decodes a frame (issue #12: a 1280-wide 720p clip with a default
engine used to fail on its first batch, after the decode/encode pipeline had started). No TensorRT needed: the
engine here is a sidecar plus a stand-in backend."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from cli_checks import one_error, run_cli  # noqa: E402

from cyclegan_deploy.artifacts import sidecar_path  # noqa: E402
from cyclegan_deploy.backends import Backend  # noqa: E402
from cyclegan_deploy.engine_sidecar import EngineSidecar, Profile, read_engine_sidecar, write_sidecar  # noqa: E402
from cyclegan_deploy.errors import ShapeError  # noqa: E402
from cyclegan_deploy.metadata import ModelMeta  # noqa: E402
from cyclegan_deploy.sample_media import make_sample_video  # noqa: E402
from cyclegan_deploy.video import VideoOptions, translate_video  # noqa: E402
from cyclegan_deploy.video import job as video_job  # noqa: E402

OLD_DEFAULT = ((1, 3, 64, 64), (1, 3, 256, 256), (4, 3, 1024, 1024))  # the default profile before issue #12


def make_engine(folder: Path, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> Path:
    """A .plan (not a real engine) with a real sidecar recording the profile."""
    meta = ModelMeta(arch="resnet_2blocks", ngf=8, n_blocks=2, precision="fp16")
    plan = folder / "g_AtoB.plan"
    plan.write_bytes(b"stand-in: never deserialized here")
    profile = Profile("input", (lo[0], 3, lo[2], lo[3]), (opt[0], 3, opt[2], opt[3]), (hi[0], 3, hi[2], hi[3]))
    write_sidecar(sidecar_path(plan), EngineSidecar(
        tensorrt_version="10.13.3.9", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        profile=profile.as_dict(), precision="fp16", source_onnx="g_AtoB.fp16.onnx", source_onnx_sha256="ab" * 32,
        model_card=asdict(meta)))
    return plan


class StandInEngine(Backend):
    """What the TensorRT backend looks like to the video job (name, path, card from the sidecar); tanh(x)."""

    name, device, precision = "tensorrt", "cuda", "fp16"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta = read_engine_sidecar(self.path).meta
        self.shapes: list[tuple[int, ...]] = []

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return np.tanh(batch)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {"720p": make_sample_video(d / "720p.mp4", frames=4, size=(720, 1280), audio=None),
            "small": make_sample_video(d / "small.mp4", frames=8, size=(48, 64), audio=None),
            "portrait": make_sample_video(d / "portrait.mp4", frames=4, size=(64, 48), rotation=-90, audio=None)}


@pytest.fixture
def no_decoding(monkeypatch):
    def decode(self):  # noqa: ANN001 - replaces _Job.decode
        raise AssertionError("the clip was decoded before the engine's profile was checked")
        yield

    monkeypatch.setattr(video_job._Job, "decode", decode)


def test_uncovered_frame_size_is_refused_before_decoding(clips, tmp_path, no_decoding):
    engine = make_engine(tmp_path, *OLD_DEFAULT)
    backend, dst = StandInEngine(engine), tmp_path / "out" / "out.mp4"
    with pytest.raises(ShapeError) as info:
        translate_video(clips["720p"], dst, backend, VideoOptions(progress=False, model=engine))
    message = str(info.value)
    assert message.startswith(f"{engine}: 720p.mp4's frames, padded to 720x1280 (HxW), in batches of 4 are outside "
                              "the engine's optimization profile (batch 1-4, 64x64 to 1024x1024 (HxW), opt 1x256x256;")
    assert "rebuild it with `cgdeploy export CHECKPOINT -o DIR --engine --max-shape 4x1024x1280`" in message
    assert "or pass --size HxW within 64x64 to 1024x1024" in message and "\n" not in message
    assert backend.shapes == [] and not dst.parent.exists()  # nothing run, nothing created


def test_batch_above_the_profile_is_refused_then_runs_within_it(clips, tmp_path, no_decoding, monkeypatch):
    engine = make_engine(tmp_path, (1, 3, 16, 16), (2, 3, 48, 64), (2, 3, 64, 64))
    with pytest.raises(ShapeError, match=r"small\.mp4's frames, padded to 48x64 \(HxW\), in batches of 4 are "
                                         r"outside .*batch 1-2, .*; pass --batch 2$"):
        translate_video(clips["small"], tmp_path / "a.mp4", StandInEngine(engine), VideoOptions(progress=False))
    monkeypatch.undo()  # decode for real now: the same engine takes the clip at --batch 2
    backend = StandInEngine(engine)  # found by the backend's path (no opts.model)
    report = translate_video(clips["small"], tmp_path / "b.mp4", backend, VideoOptions(progress=False, batch=2))
    assert report.frames == 8 and set(backend.shapes) == {(2, 3, 48, 64)}


def test_portrait_clip_with_a_landscape_profile_is_refused(clips, tmp_path, no_decoding):
    """The check uses the upright (displayed) size the model sees: a phone clip coded 64 wide, shown 64 high."""
    engine = make_engine(tmp_path, (1, 3, 16, 16), (4, 3, 48, 64), (4, 3, 48, 64))
    with pytest.raises(ShapeError, match=r"padded to 64x48 .*--max-shape 4x64x64`, or pass --size HxW within "
                                         r"16x16 to 48x64"):
        translate_video(clips["portrait"], tmp_path / "out.mp4", StandInEngine(engine), VideoOptions(progress=False))


def test_resized_frames_are_what_is_checked(clips, tmp_path, no_decoding):
    engine = make_engine(tmp_path, (1, 3, 16, 16), (4, 3, 48, 64), (4, 3, 48, 64))
    with pytest.raises(ShapeError, match=r"small\.mp4's frames at --size, padded to 100x64 \(HxW\)"):
        translate_video(clips["small"], tmp_path / "out.mp4", StandInEngine(engine),
                        VideoOptions(progress=False, size=(99, 64)))


def test_cli_video_refuses_in_one_line(clips, tmp_path, capsys, monkeypatch, no_decoding):
    from cyclegan_deploy.commands import media_cmd

    engine = make_engine(tmp_path, *OLD_DEFAULT)
    monkeypatch.setattr(media_cmd, "_open_backend", lambda artifact, *a, **k: StandInEngine(artifact))
    out = tmp_path / "out.mp4"
    code, _, err = run_cli(capsys, "video", clips["720p"], "-o", out, "--engine", engine, "--no-progress")
    line = one_error(err, str(engine), "720x1280", "1024x1024", "--max-shape 4x1024x1280", alone=True)
    assert code == 1 and "video: none of 720p, 1080p, 1440p, 4K" in line and not out.exists()
