"""The reliability floor for `video`, `translate` and `data sample-video`, one test per class of failure, driven
through the CLI as a user would (in-process `main([...])`, a real process for SIGTERM). Every failure must be
exit 1 (143 for SIGTERM) with one line on stderr naming the file, no traceback, no temp/partial file or lock
left, no folder the run created left empty, and the inputs unchanged."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
onnx = pytest.importorskip("onnx")

from PIL import Image  # noqa: E402

from cyclegan_deploy import machine  # noqa: E402
from cyclegan_deploy.cli import main  # noqa: E402
from cyclegan_deploy.sample_media import make_sample_video  # noqa: E402

GIB = 1 << 30


# ---- helpers ---------------------------------------------------------------------------------------------------

def sha(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def debris(folder: Path) -> list[str]:
    """Temp files, partial outputs and lock files anywhere under `folder`."""
    return sorted(str(p) for p in folder.rglob("*") if any(k in p.name for k in ("partial", ".tmp", ".lock",
                                                                                  "write-test")))


def failed(rc: int, capsys: pytest.CaptureFixture[str], *names: object, code: int = 1) -> str:
    """Assert a clean failure: the exit code, one `error:` line naming every `names`, no traceback."""
    err = capsys.readouterr().err
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def video_args(src: Path, dst: Path, model: Path, *extra: str) -> list[str]:
    return ["video", str(src), "-o", str(dst), "--model", str(model), "--no-progress", *extra]


def translate_args(src: Path, dst: Path, model: Path, *extra: str) -> list[str]:
    return ["translate", str(src), "-o", str(dst), "--model", str(model), "--no-progress", *extra]


def save_png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _graph(nodes: list, inputs: list, outputs: list, path: Path, initializers: list | None = None) -> Path:
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _image_input(name: str):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, "H", "W"])


@pytest.fixture(scope="module")
def models(tiny_onnx: Path, tmp_path_factory) -> dict[str, Path]:
    """The tiny generator, the same graph with its output multiplied by NaN (card kept), a classifier (image ->
    3 scores) and a 2-input graph."""
    from onnx import TensorProto, helper, numpy_helper

    d = tmp_path_factory.mktemp("models")
    nan = onnx.load(str(tiny_onnx))
    out = nan.graph.output[0].name
    for node in nan.graph.node:
        node.output[:] = [f"{o}_pre" if o == out else o for o in node.output]
    nan.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan_c"))
    nan.graph.node.append(helper.make_node("Mul", [f"{out}_pre", "nan_c"], [out]))
    onnx.save(nan, str(d / "nan.onnx"))
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])
    _graph([helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["scores"])], [_image_input("input")], [scores],
           d / "classifier.onnx")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])
    _graph([helper.make_node("Add", ["a", "b"], ["y"])], [_image_input("a"), _image_input("b")], [y],
           d / "two_inputs.onnx")
    return {"good": tiny_onnx, "nan": d / "nan.onnx", "classifier": d / "classifier.onnx",
            "two_inputs": d / "two_inputs.onnx"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_sample_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=8, size=(24, 32))


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "photos"
    save_png(src / "a.png", 20, 24, 0)
    save_png(src / "sub" / "b.png", 20, 24, 1)
    return src


# ---- 1. non-finite outputs -------------------------------------------------------------------------------------

def test_non_finite_outputs_fail_naming_the_model(models, clip, photos, tmp_path, capsys):
    inputs = [clip, models["nan"], *sorted(photos.rglob("*.png"))]
    before = sha(inputs)
    dst = tmp_path / "new" / "out.mp4"
    line = failed(main(video_args(clip, dst, models["nan"])), capsys, models["nan"], "NaN")
    assert "frames 1-4" in line and "--batch" not in line
    assert not (tmp_path / "new").exists()  # the folder it created is gone again
    line = failed(main(translate_args(photos, tmp_path / "out", models["nan"])), capsys, models["nan"], "NaN")
    assert "a.png" in line and not (tmp_path / "out").exists()
    assert debris(tmp_path) == [] and sha(inputs) == before


def test_non_finite_checkpoint_fails_naming_the_file(tiny_resnet, clip, tmp_path, capsys):
    """A checkpoint multiplied by NaN: refused naming the file (by the checkpoint loader, or else by the
    output check), never an all-black video with exit 0."""
    torch = pytest.importorskip("torch")
    import copy

    from cyclegan_deploy.train.checkpoints import save_generator

    model, meta = tiny_resnet
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for p in broken.parameters():
            p.mul_(float("nan"))
    ckpt = tmp_path / "ckpt" / "latest_net_G_A.pth"
    save_generator(broken, meta, ckpt)
    before = sha([clip, ckpt])
    dst = tmp_path / "out.mp4"
    failed(main(["video", str(clip), "-o", str(dst), "--checkpoint", str(ckpt), "--no-progress"]), capsys, ckpt)
    assert not dst.exists() and debris(tmp_path) == [] and sha([clip, ckpt]) == before


# ---- 2. OS errors on outputs -----------------------------------------------------------------------------------

def test_os_errors_on_outputs_are_one_line_and_leave_nothing(models, clip, photos, tmp_path, capsys, monkeypatch):
    from faults import refuse_writes

    from cyclegan_deploy import images
    from cyclegan_deploy.video import writer

    inputs = [clip, *sorted(photos.rglob("*.png"))]
    before = sha(inputs)
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    with monkeypatch.context() as m:
        refuse_writes(m, ro, errno.EACCES)
        refuse_writes(m, full, errno.ENOSPC)
        failed(main(video_args(clip, ro / "out.mp4", models["good"])), capsys, ro, "permission")
        failed(main(translate_args(photos, full / "out", models["good"])), capsys, full, "disk is full")
        failed(main(["data", "sample-video", str(ro / "s.mp4"), "--frames", "2", "--size", "16x16"]), capsys, ro)
    assert list(ro.iterdir()) == [] and list(full.iterdir()) == []  # checked before decoding: nothing made

    def disk_full(self, frames, pts):  # FFmpeg writes in C: fail where its Python caller is
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".out.partial-1-x.mp4"))

    with monkeypatch.context() as m:
        m.setattr(writer.Writer, "write", disk_full)
        dst = tmp_path / "mid" / "out.mp4"
        line = failed(main(video_args(clip, dst, models["good"])), capsys, dst, "disk is full")
        assert "partial" not in line and not (tmp_path / "mid").exists()

    real_write, calls = images._write, []

    def second_fails(item, rgb):
        calls.append(item)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(item.dst.parent / ".b.partial-1-x.png"))
        real_write(item, rgb)

    with monkeypatch.context() as m:
        m.setattr(images, "_write", second_fails)
        out = tmp_path / "half"
        line = failed(main(translate_args(photos, out, models["good"], "--batch", "1")), capsys,
                      out / "sub" / "b.png", "disk is full", "1 image(s) translated before this are kept")
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["a.png"]  # complete outputs stay, no empty sub/
    assert debris(tmp_path) == [] and sha(inputs) == before


# ---- 3. SIGTERM ------------------------------------------------------------------------------------------------

def test_sigterm_leaves_no_partial_and_stale_partials_are_cleaned(models, tmp_path, capsys):
    long_clip = make_sample_video(tmp_path / "long.mp4", frames=400, size=(128, 128), audio=None)
    before = sha([long_clip])
    out_dir = tmp_path / "out"
    dst = out_dir / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "cyclegan_deploy", *video_args(long_clip, dst, models["good"]),
                             "--batch", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out_dir.exists() and any("partial" in p.name for p in out_dir.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["terminated (SIGTERM)"]
    assert not dst.exists() and debris(tmp_path) == [] and sha([long_clip]) == before

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out_dir / f".out.partial-{dead.pid}-abc123.mp4"  # left by a process killed with SIGKILL
    out_dir.mkdir(exist_ok=True)
    stale.write_bytes(b"half a video")
    assert main(video_args(long_clip, dst, models["good"], "--duration", "0.1")) == 0, capsys.readouterr().err
    assert not stale.exists() and dst.exists() and debris(tmp_path) == []


# ---- 4. resource bounds ----------------------------------------------------------------------------------------

def test_batch_size_and_huge_inputs_are_bounded(models, tmp_path, capsys, monkeypatch):
    clip60 = make_sample_video(tmp_path / "c60.mp4", frames=60, size=(16, 16), audio=None)
    dst = tmp_path / "out.mp4"
    assert main(video_args(clip60, dst, models["good"], "--batch", "100000")) == 0, capsys.readouterr().err
    assert "batch 60" in capsys.readouterr().out  # capped at the clip's frame count, nothing huge allocated

    monkeypatch.setattr(machine, "available_memory", lambda: 8 * GIB)
    line = failed(main(video_args(clip60, tmp_path / "big.mp4", models["good"], "--size", "20000x20000")), capsys,
                  "--size 20000x20000", "GiB available")
    assert "needs ~" in line and "8.0 GiB available" in line
    save_png(tmp_path / "one" / "x.png", 8, 8)
    failed(main(translate_args(tmp_path / "one", tmp_path / "o", models["good"], "--size", "20000x20000")), capsys,
           "--size 20000x20000", "8.0 GiB available")
    assert not (tmp_path / "o").exists()
    failed(main(["data", "sample-video", str(tmp_path / "s.mp4"), "--size", "20000x20000"]), capsys,
           "--size 20000x20000", "8.0 GiB available")

    monkeypatch.setattr(machine, "available_memory", lambda: 3 << 20)  # room for a few 16x16 frames only
    assert main(video_args(clip60, tmp_path / "low.mp4", models["good"], "--batch", "32")) == 0
    out = capsys.readouterr().out
    assert "warning: --batch 32 lowered to" in out

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # PIL warns above it and refuses above twice it
    monkeypatch.setattr(machine, "available_memory", lambda: 20 << 20)
    src = tmp_path / "imgs"
    save_png(src / "ok.png", 16, 16)
    save_png(src / "mid.png", 30, 30)
    save_png(src / "warn.png", 350, 350)  # over the limit: PIL would only print a warning
    save_png(src / "bomb.png", 500, 500)  # over twice the limit: PIL's DecompressionBombError
    save_png(src / "huge.png", 300, 300)  # under the limit, over the memory this test leaves
    before = sha(sorted(src.iterdir()))
    assert main(translate_args(src, tmp_path / "imgs_out", models["good"])) == 0
    out = capsys.readouterr().out
    assert "translated 2 image(s), skipped 3" in out
    assert "bomb.png: too large to open safely" in out and "warn.png: too large to open safely" in out
    assert "decompression-bomb" in out
    assert "huge.png: 300x300 (HxW) needs ~" in out and "0.02 GiB available" in out
    assert sorted(p.name for p in (tmp_path / "imgs_out").iterdir()) == ["mid.png", "ok.png"]
    assert debris(tmp_path) == [] and sha(sorted(src.iterdir())) == before


# ---- 5. inputs smaller than the model --------------------------------------------------------------------------

def test_inputs_smaller_than_the_model_run(models, tmp_path, capsys):
    src = tmp_path / "tiny"
    sizes = {"a_normal.png": (20, 24), "b_2x2.png": (2, 2), "c_1x1.png": (1, 1), "d_1x5.png": (1, 5),
             "e_3x7.png": (3, 7)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        save_png(src / name, h, w, i)
    before = sha(sorted(src.iterdir()))
    out = tmp_path / "out"
    assert main(translate_args(src, out, models["good"])) == 0, capsys.readouterr().err
    assert "translated 5 image(s)" in capsys.readouterr().out
    for name, (h, w) in sizes.items():
        with Image.open(out / name) as im:
            assert im.size == (w, h)
    tiny_clip = make_sample_video(tmp_path / "2x2.mp4", frames=5, size=(2, 2))
    dst = tmp_path / "2x2_out.mp4"
    assert main(video_args(tiny_clip, dst, models["good"])) == 0, capsys.readouterr().err
    assert "5 frames 2x2 (HxW)" in capsys.readouterr().out
    with av.open(str(dst)) as c:
        assert [f.to_ndarray(format="rgb24").shape for f in c.decode(video=0)] == [(2, 2, 3)] * 5
    assert debris(tmp_path) == [] and sha(sorted(src.iterdir())) == before


# ---- 6. overwrite policy and locks -----------------------------------------------------------------------------

def test_existing_outputs_need_force_and_concurrent_runs_are_refused(models, clip, photos, tmp_path, capsys):
    from cyclegan_deploy.images import LOCK_NAME
    from cyclegan_deploy.outputs import locked

    dst = tmp_path / "out.mp4"
    assert main(video_args(clip, dst, models["good"])) == 0
    first = sha([dst])
    capsys.readouterr()
    failed(main(video_args(clip, dst, models["good"])), capsys, dst, "--force")
    assert sha([dst]) == first  # untouched
    assert main(video_args(clip, dst, models["good"], "--force")) == 0

    out = tmp_path / "imgs"
    assert main(translate_args(photos, out, models["good"])) == 0
    (out / "a.png").unlink()  # one of the two outputs is still there
    capsys.readouterr()
    line = failed(main(translate_args(photos, out, models["good"])), capsys, out, "sub/b.png", "--force")
    assert "1 of the 2" in line and not (out / "a.png").exists()  # refused before any work
    assert main(translate_args(photos, out, models["good"], "--force")) == 0 and (out / "a.png").exists()

    sample = tmp_path / "s.mp4"
    assert main(["data", "sample-video", str(sample), "--frames", "2", "--size", "16x16"]) == 0
    capsys.readouterr()
    failed(main(["data", "sample-video", str(sample), "--frames", "2", "--size", "16x16"]), capsys, sample,
           "--force")

    # another run holding the output: the second is refused at once, whatever --force says
    with locked(dst):
        failed(main(video_args(clip, dst, models["good"], "--force")), capsys, dst, "in use by another")
    with locked(out / LOCK_NAME):
        failed(main(translate_args(photos, out, models["good"], "--force")), capsys, out, "in use by another")
    assert debris(tmp_path) == []


# ---- 7. messages that name the real problem --------------------------------------------------------------------

def test_messages_blame_the_right_thing(models, clip, photos, tmp_path, capsys):
    inputs = [clip, *sorted(photos.rglob("*.png"))]
    before = sha(inputs)
    new = tmp_path / "new"
    for kind in ("classifier", "two_inputs"):
        m = models[kind]
        for args in (video_args(clip, new / "out.mp4", m), translate_args(photos, new / "imgs", m)):
            line = failed(main(args), capsys, m, "not a 3-channel image generator")
            assert "--batch" not in line and str(clip) not in line
            assert not new.exists()  # no empty output folder left behind

    torch = pytest.importorskip("torch")
    pth = tmp_path / "classifier.pth"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 10)).state_dict(),
               pth)
    # the checkpoint reader's own words (it names the file and the layouts it knows), or ours when it names none
    line = failed(main(["video", str(clip), "-o", str(new / "o.mp4"), "--checkpoint", str(pth), "--no-progress"]),
                  capsys, pth, "generator")
    assert "--batch" not in line and str(clip) not in line

    line = failed(main(video_args(clip, new / "o.mp4", models["good"], "--pix-fmt", "yuv421p")), capsys,
                  "--pix-fmt yuv421p", "yuv420p")
    assert ".mkv" not in line
    line = failed(main(video_args(clip, new / "o.mp4", models["good"], "--preset", "fastest")), capsys,
                  "--preset fastest", "veryfast")
    assert ".mkv" not in line
    image = photos / "a.png"
    failed(main(video_args(image, new / "o.mp4", models["good"])), capsys, image, "cgdeploy translate")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    failed(main(translate_args(broken, new / "imgs", models["good"])), capsys, broken, "x.png")
    assert not new.exists() and debris(tmp_path) == [] and sha(inputs) == before


# ---- 8. UX: progress, HxW everywhere ---------------------------------------------------------------------------

def test_progress_bar_and_sizes_in_hxw(models, photos, tmp_path, capsys, monkeypatch):
    for command in (["translate", "--help"], ["video", "--help"], ["data", "sample-video", "--help"]):
        assert main(command) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "HxW" in text or "HEIGHTxWIDTH" in text, command
    assert "--no-progress" in (main(["translate", "--help"]) == 0 and " ".join(capsys.readouterr().out.split()))

    sample = tmp_path / "s.mp4"
    assert main(["data", "sample-video", str(sample), "--frames", "2", "--size", "16x32"]) == 0
    assert "2 frames 16x32 (HxW)" in capsys.readouterr().out
    assert main(video_args(sample, tmp_path / "o.mp4", models["good"])) == 0
    assert "2 frames 16x32 (HxW)" in capsys.readouterr().out

    # not a terminal (captured): no bar, stderr stays empty; on a terminal: a bar counting images
    assert main(["translate", str(photos), "-o", str(tmp_path / "a"), "--model", str(models["good"])]) == 0
    assert capsys.readouterr().err == ""
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    assert main(["translate", str(photos), "-o", str(tmp_path / "b"), "--model", str(models["good"])]) == 0
    assert "2/2" in capsys.readouterr().err
    assert main(["translate", str(photos), "-o", str(tmp_path / "c"), "--model", str(models["good"]),
                 "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
