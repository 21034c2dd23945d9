"""Video path on real media generated here with PyAV (h264/AAC mp4, odd sizes, 29.97, VFR, rotation, VP9/Opus).

Parity is checked against direct backend calls on the decoded input frames. Tolerances, measured:
- crf 0 (lossless x264): the output decodes to exactly the expected frames after the same RGB -> YUV ->
  RGB conversion the encoder input goes through (max diff 0; asserted <= 1);
- vs the expected RGB itself: yuv444p max diff 2 (RGB<->YUV rounding; asserted <= 3), yuv420p differs by
  chroma subsampling (tens of levels at colour edges), so 4:2:0 is compared through the conversion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from cyclegan_deploy import frames as F  # noqa: E402
from cyclegan_deploy.backends import Backend  # noqa: E402
from cyclegan_deploy.errors import ConfigError, MediaError, ShapeError  # noqa: E402
from cyclegan_deploy.metadata import ModelMeta  # noqa: E402
from cyclegan_deploy.sample_media import make_sample_video, sample_frame  # noqa: E402
from cyclegan_deploy.video import VideoOptions, probe_video, translate_video  # noqa: E402


class PixelModel:
    """A numpy 'generator': per-pixel colour mix + tanh. Deterministic, so parity can be exact."""

    name = "numpy-test"

    def __init__(self, multiple: int = 4, fail_at: int | None = None, on_call=None) -> None:
        self.meta = ModelMeta(arch="resnet_2blocks", ngf=8, n_blocks=2, multiple=multiple)
        self.w = np.array([[0.2, 0.7, 0.1], [0.6, -0.3, 0.5], [-0.4, 0.3, 0.9]], np.float32)
        self.shapes: list[tuple[int, ...]] = []
        self.fail_at, self.on_call = fail_at, on_call

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        if self.on_call is not None:
            self.on_call(len(self.shapes))
        if self.fail_at is not None and len(self.shapes) >= self.fail_at:
            raise RuntimeError("simulated backend failure")
        assert x.dtype == np.float32 and x.shape[2] % self.meta.multiple == 0 and x.shape[3] % self.meta.multiple == 0
        return np.tanh(np.einsum("oc,nchw->nohw", self.w, x) * 1.2).astype(np.float32)

    def close(self) -> None:
        pass


def run_model(model, rgb: np.ndarray) -> np.ndarray:
    """Direct backend call on (N,H,W,3) uint8 frames: the reference the video path must match."""
    h, w = rgb.shape[1:3]
    return F.from_model(F.crop(model(F.pad_to_multiple(F.to_model(rgb), model.meta.multiple)), h, w))


def decode(path: Path) -> tuple[list[Fraction], np.ndarray, list[int]]:
    """(times in s, upright RGB frames, rotations) the way a player shows them."""
    times, frames, rots = [], [], []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        for f in c.decode(vs):
            k = (round(f.rotation / 90) % 4)
            rgb = f.to_ndarray(format="rgb24")
            frames.append(np.rot90(rgb, k) if k else rgb)
            times.append(f.pts * Fraction(vs.time_base))
            rots.append(f.rotation)
    return times, np.stack(frames), rots


def through_yuv(rgb: np.ndarray, pix_fmt: str) -> np.ndarray:
    """What a lossless encoder keeps of RGB frames: RGB -> pix_fmt (limited range) -> RGB."""
    return np.stack([av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")
                     .reformat(format=pix_fmt, dst_color_range="MPEG").to_ndarray(format="rgb24") for a in rgb])


def audio_packets(path: Path) -> tuple[str, Fraction, list[tuple[int, int, bytes]]]:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        name, tb = a.codec_context.name, Fraction(a.time_base)
        return name, tb, [(p.pts, p.duration, bytes(p)) for p in c.demux(a) if p.size]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "even": make_sample_video(d / "even.mp4", frames=18, size=(48, 64)),
        "odd_ntsc": make_sample_video(d / "odd_ntsc.mp4", frames=18, size=(47, 63), fps="30000/1001"),
        "vfr": make_sample_video(d / "vfr.mp4", frames=18, size=(48, 64), vfr=True),
        "rotated": make_sample_video(d / "rotated.mp4", frames=12, size=(64, 48), rotation=-90, crf=0,
                                     pix_fmt="yuv444p"),
        "vp9_odd": make_sample_video(d / "vp9_odd.webm", frames=12, size=(47, 63), codec="libvpx-vp9",
                                     audio="libopus"),
        "lossless": make_sample_video(d / "lossless.mp4", frames=12, size=(40, 56), crf=0, pix_fmt="yuv444p"),
    }


@pytest.mark.parametrize("name", ["even", "odd_ntsc", "vfr", "rotated", "vp9_odd"])
def test_keeps_frames_size_timing_and_audio(clips, tmp_path, name):
    src = clips[name]
    dst = tmp_path / "out.mp4"
    report = translate_video(src, dst, PixelModel(), VideoOptions(progress=False, batch=4))
    t_in, f_in, _ = decode(src)
    t_out, f_out, rot_out = decode(dst)
    assert report.frames == len(t_out) == len(t_in)
    assert f_out.shape == f_in.shape  # displayed size kept (odd sizes too)
    assert t_out == t_in  # exact presentation times (29.97 and VFR included)
    assert set(rot_out) == {0}  # written upright, no display matrix left
    info_in, info_out = probe_video(src), probe_video(dst)
    if name == "vfr":
        assert abs(float(info_out.rate) / float(info_in.rate) - 1) < 0.05  # average of uneven frame durations
    elif name == "vp9_odd":  # WebM's millisecond clock: 33/34 ms steps average to 29.98 in the mp4
        assert abs(float(info_out.rate) / float(info_in.rate) - 1) < 1e-3
    else:
        assert info_out.rate == info_in.rate
    codec_in, tb_in, pk_in = audio_packets(src)
    codec_out, tb_out, pk_out = audio_packets(dst)
    assert codec_out == codec_in and report.audio == [codec_in]
    # copied, not re-encoded: the same bytes at the same times (durations may be re-derived by the muxer)
    assert [(p * tb_out, data) for p, _, data in pk_out] == [(p * tb_in, data) for p, _, data in pk_in]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_pixel_parity_lossless(clips, tmp_path, pix_fmt):
    src, dst, model = clips["even"], tmp_path / "out.mp4", PixelModel()
    translate_video(src, dst, model, VideoOptions(progress=False, crf=0, pix_fmt=pix_fmt, batch=4))
    _, f_in, _ = decode(src)
    _, f_out, _ = decode(dst)
    expected = run_model(PixelModel(), f_in)
    assert np.abs(f_out.astype(int) - through_yuv(expected, pix_fmt)).max() <= 1
    if pix_fmt == "yuv444p":
        assert np.abs(f_out.astype(int) - expected).max() <= 3
    assert all(s[0] == 4 for s in model.shapes)  # fixed batch shape, last batch padded (18 = 4*4 + 2)


def test_real_backend_parity_tiny_onnx(clips, tmp_path, tiny_onnx):
    from cyclegan_deploy.backends import load_backend

    src, dst = clips["odd_ntsc"], tmp_path / "out.mkv"
    backend = load_backend(tiny_onnx, backend="onnxruntime", device="cpu")
    try:
        report = translate_video(src, dst, backend, VideoOptions(progress=False, crf=0, batch=3))
        _, f_in, _ = decode(src)
        _, f_out, _ = decode(dst)
        expected = run_model(backend, f_in)
    finally:
        backend.close()
    assert report.pix_fmt == "yuv444p" and f_out.shape == f_in.shape == (18, 47, 63, 3)
    diff = np.abs(f_out.astype(int) - through_yuv(expected, "yuv444p"))
    assert diff.max() <= 2 and diff.mean() < 0.05  # batch 3 vs 18 may flip a rounding by one level
    assert audio_packets(dst)[0] == "aac"


def test_rotation_is_applied_upright(clips, tmp_path):
    """The clip displays sample_frame(i) upright; the model must see (and the output show) that image."""
    src, dst = clips["rotated"], tmp_path / "out.mp4"
    with av.open(str(src)) as c:
        first = next(c.decode(video=0))
        assert first.rotation == -90 and (first.height, first.width) == (48, 64)  # coded landscape
    translate_video(src, dst, PixelModel(), VideoOptions(progress=False, crf=0, pix_fmt="yuv444p"))
    _, f_out, rots = decode(dst)
    assert f_out.shape[1:3] == (64, 48) and set(rots) == {0}
    shown = np.stack([sample_frame(i, 64, 48) for i in range(len(f_out))])
    # independent of our rotation code: the procedural frames are what a player shows
    err = np.abs(f_out.astype(int) - run_model(PixelModel(), shown)).mean()
    flipped = np.abs(f_out.astype(int) - run_model(PixelModel(), shown[:, ::-1, ::-1])).mean()
    assert err < 1.0 and flipped > 20.0  # measured 0.66 (RGB<->YUV rounding) vs 75 for a 180-degree mistake


def test_trim_start_duration(clips, tmp_path):
    src, dst = clips["vfr"], tmp_path / "out.mp4"
    report = translate_video(src, dst, PixelModel(), VideoOptions(progress=False, start=0.2, duration=0.5))
    t_in, _, _ = decode(src)
    t_out, _, _ = decode(dst)
    window = [t - Fraction(1, 5) for t in t_in if Fraction(1, 5) <= t < Fraction(7, 10)]
    assert t_out == window and report.frames == len(window) > 3
    _, tb, packets = audio_packets(dst)
    a_start, a_end = packets[0][0] * tb, (packets[-1][0] + packets[-1][1]) * tb
    packet = Fraction(1024, 48000)
    assert 0 <= a_start <= packet and abs(a_end - Fraction(1, 2)) <= packet  # same window as the video


def test_side_by_side_and_size(clips, tmp_path):
    src = clips["lossless"]
    dst = tmp_path / "sbs.mp4"
    translate_video(src, dst, PixelModel(), VideoOptions(progress=False, side_by_side=True, crf=0, pix_fmt="yuv444p"))
    _, f_in, _ = decode(src)
    _, f_out, _ = decode(dst)
    assert f_out.shape == (12, 40, 112, 3)
    assert np.abs(f_out[:, :, :56].astype(int) - f_in).max() <= 3
    assert np.abs(f_out[:, :, 56:].astype(int) - run_model(PixelModel(), f_in)).max() <= 3
    small = tmp_path / "small.mp4"
    model = PixelModel()
    report = translate_video(src, small, model, VideoOptions(progress=False, size=(24, 32)))
    assert decode(small)[1].shape == (12, 24, 32, 3) and report.size == (24, 32)
    assert model.shapes[0] == (4, 3, 24, 32)


def test_odd_size_forced_yuv420p_pads_to_even(clips, tmp_path):
    dst = tmp_path / "out.mp4"
    report = translate_video(clips["odd_ntsc"], dst, PixelModel(), VideoOptions(progress=False, pix_fmt="yuv420p"))
    assert decode(dst)[1].shape[1:3] == (48, 64) and any("even" in w for w in report.warnings)


@pytest.mark.parametrize("codec,suffix", [("hevc", ".mp4"), ("mpeg4", ".mkv"), ("vp9", ".webm")])
def test_other_codecs(clips, tmp_path, codec, suffix):
    src = clips["vp9_odd"] if suffix == ".webm" else clips["even"]
    dst = tmp_path / f"out{suffix}"
    report = translate_video(src, dst, PixelModel(), VideoOptions(progress=False, codec=codec))
    times, frames, _ = decode(dst)
    assert len(times) == report.frames == (18 if src == clips["even"] else 12)
    assert frames.shape[1:3] == decode(src)[1].shape[1:3]


def test_audio_that_the_container_cannot_hold(clips, tmp_path):
    with pytest.raises(MediaError, match="mkv"):  # AAC is not allowed in WebM: says so, suggests .mkv
        translate_video(clips["even"], tmp_path / "out.webm", PixelModel(), VideoOptions(progress=False))
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.webm").exists()
    report = translate_video(clips["even"], tmp_path / "out.webm", PixelModel(),
                             VideoOptions(progress=False, audio=False))
    assert report.audio == []


def test_input_errors(clips, tmp_path):
    model, opts = PixelModel(), VideoOptions(progress=False)
    out = tmp_path / "out.mp4"
    with pytest.raises(MediaError, match="no such file"):
        translate_video(tmp_path / "missing.mp4", out, model, opts)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(MediaError, match="not a readable video"):
        translate_video(text, out, model, opts)
    data = clips["even"].read_bytes()  # moov at the end: cut in half there is no index at all
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="truncated"):
        translate_video(tmp_path / "cut.mp4", out, model, opts)
    faststart = tmp_path / "faststart.mp4"  # index first: the data ends early, the index says so
    with av.open(str(clips["even"])) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    data = faststart.read_bytes()
    (tmp_path / "cut2.mp4").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(MediaError, match="truncated"):
        translate_video(tmp_path / "cut2.mp4", out, model, opts)
    audio_only = tmp_path / "audio.m4a"
    make_sample_video(tmp_path / "tmp.mp4", frames=6, size=(16, 16))
    with av.open(str(tmp_path / "tmp.mp4")) as src, av.open(str(audio_only), "w") as dst:
        a = dst.add_stream_from_template(src.streams.audio[0])
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = a
                dst.mux(packet)
    with pytest.raises(MediaError, match="no video stream"):
        translate_video(audio_only, out, model, opts)
    assert not out.exists() and leftovers(tmp_path) == []


def test_output_errors(clips, tmp_path):
    model, opts = PixelModel(), VideoOptions(progress=False)
    with pytest.raises(ConfigError, match="output is the input"):
        translate_video(clips["even"], clips["even"], model, opts)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MediaError, match="cannot create the output folder"):
        translate_video(clips["even"], blocker / "out.mp4", model, opts)
    with pytest.raises(ConfigError, match="extension"):
        translate_video(clips["even"], tmp_path / "out", model, opts)
    with pytest.raises(ConfigError, match="codec"):
        translate_video(clips["even"], tmp_path / "out.mp4", model, VideoOptions(progress=False, codec="nope"))


def test_model_mismatch(clips, tmp_path):
    gray = PixelModel()
    gray.meta.input_nc = 1
    with pytest.raises(ConfigError, match="3 -> 3"):
        translate_video(clips["even"], tmp_path / "a.mp4", gray, VideoOptions(progress=False))

    class WrongShape(PixelModel):
        def __call__(self, x):
            return super().__call__(x)[:, :, ::2]

    with pytest.raises(ShapeError, match="returned"):
        translate_video(clips["even"], tmp_path / "b.mp4", WrongShape(), VideoOptions(progress=False))

    class Refuses(PixelModel):
        def __call__(self, x):
            raise ShapeError(f"{x.shape[2]}x{x.shape[3]} is outside the engine's profile (max 32x32)")

    with pytest.raises(ShapeError, match="outside the engine's profile"):
        translate_video(clips["even"], tmp_path / "c.mp4", Refuses(), VideoOptions(progress=False))
    assert leftovers(tmp_path) == [] and not list(tmp_path.glob("*.mp4"))


def _no_stage_threads() -> bool:
    return not any(t.name.startswith("cgdeploy-") and t.is_alive() for t in threading.enumerate())


def test_failure_mid_stream_leaves_no_file(clips, tmp_path):
    dst = tmp_path / "out.mp4"
    with pytest.raises(ShapeError, match="simulated backend failure"):
        translate_video(clips["even"], dst, PixelModel(fail_at=3), VideoOptions(progress=False, batch=2))
    assert not dst.exists() and leftovers(tmp_path) == [] and _no_stage_threads()


def test_ctrl_c_leaves_no_file(clips, tmp_path):
    """Ctrl-C lands in the main thread while the stages run: everything stops, nothing is left behind."""
    dst = tmp_path / "out.mp4"

    def on_call(n: int) -> None:
        if n == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, as a terminal's Ctrl-C sends
        time.sleep(0.05)  # a model slow enough that the clip cannot finish before the signal lands

    model = PixelModel(on_call=on_call)
    with pytest.raises(KeyboardInterrupt):
        translate_video(clips["even"], dst, model, VideoOptions(progress=False, batch=2))
    assert not dst.exists() and leftovers(tmp_path) == [] and _no_stage_threads()
    assert len(model.shapes) < 9  # stopped early, not after the whole clip


def test_cli_video_with_real_backend(clips, tmp_path, tiny_onnx, capsys):
    from cyclegan_deploy.cli import main

    dst = tmp_path / "cli.mp4"
    rc = main(["video", str(clips["rotated"]), "-o", str(dst), "--model", str(tiny_onnx), "--batch", "2",
               "--no-progress", "--duration", "0.2"])
    assert rc == 0, capsys.readouterr().err
    assert "6 frames 64x48 (HxW)" in capsys.readouterr().out  # sizes print HxW, the order --size takes
    assert decode(dst)[1].shape == (6, 64, 48, 3)
    rc = main(["video", str(tmp_path / "missing.mp4"), "-o", str(dst), "--model", str(tiny_onnx)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "missing.mp4" in err and len(err.strip().splitlines()) == 1



# ---- scale, value ranges and the pieces of cyclegan_deploy.video ------------------------------------------

class CardBackend(Backend):
    """A real Backend subclass (validated by Backend.__call__) whose card sets scale and value ranges.
    `_run` upsamples nearest-neighbour by `returns` (the card's scale unless a test lies about it)."""

    name = "numpy-card"

    def __init__(self, scale: int = 1, returns: int | None = None, input_range=(-1.0, 1.0),
                 output_range=(-1.0, 1.0)) -> None:
        self.meta = ModelMeta(arch="resnet_2blocks", multiple=4, scale=scale, input_range=input_range,
                              output_range=output_range)
        self.returns = scale if returns is None else returns
        self.batches: list[np.ndarray] = []

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        r = self.returns
        return batch.repeat(r, axis=2).repeat(r, axis=3) if r > 1 else batch.copy()

    def close(self) -> None:
        pass


def nearest2x(rgb: np.ndarray) -> np.ndarray:
    return rgb.repeat(2, axis=1).repeat(2, axis=2)


@pytest.fixture(scope="module")
def odd_lossless(tmp_path_factory) -> Path:
    return make_sample_video(tmp_path_factory.mktemp("odd") / "odd.mp4", frames=7, size=(23, 31), crf=0,
                             pix_fmt="yuv444p")


@pytest.mark.parametrize("which", ["lossless", "odd"])
def test_scale2_output_is_twice_the_size(clips, odd_lossless, tmp_path, which):
    src = clips["lossless"] if which == "lossless" else odd_lossless
    dst, model = tmp_path / "sr.mp4", CardBackend(scale=2)
    report = translate_video(src, dst, model, VideoOptions(progress=False, crf=0, pix_fmt="yuv444p", batch=3))
    _, f_in, _ = decode(src)
    _, f_out, _ = decode(dst)
    n, h, w, _ = f_in.shape
    assert f_out.shape == (n, 2 * h, 2 * w, 3) and report.size == (2 * h, 2 * w) and report.frames == n
    ph, pw = F.padded_size(h, w, 4)
    assert {b.shape for b in model.batches} == {(3, 3, ph, pw)}  # padded input; output 2x that, cropped back
    expected = nearest2x(f_in)
    assert np.abs(f_out.astype(int) - through_yuv(expected, "yuv444p")).max() <= 1
    assert np.abs(f_out.astype(int) - expected).max() <= 3


def test_scale2_side_by_side_halves_match(odd_lossless, tmp_path):
    dst = tmp_path / "sbs.mp4"
    report = translate_video(odd_lossless, dst, CardBackend(scale=2),
                             VideoOptions(progress=False, side_by_side=True, crf=0, pix_fmt="yuv444p"))
    _, f_in, _ = decode(odd_lossless)
    _, f_out, _ = decode(dst)
    n, h, w, _ = f_in.shape
    assert f_out.shape == (n, 2 * h, 4 * w, 3) and report.size == (2 * h, 4 * w)
    left, right = f_out[:, :, : 2 * w].astype(int), f_out[:, :, 2 * w:].astype(int)
    assert np.abs(right - nearest2x(f_in)).max() <= 3
    bicubic = np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(
        width=2 * w, height=2 * h, format="rgb24", interpolation="BICUBIC").to_ndarray() for f in f_in])
    assert np.abs(left - through_yuv(bicubic, "yuv444p")).max() <= 1 and np.abs(left - bicubic).max() <= 3
    # independent of swscale: PIL's bicubic agrees on average (measured 0.78; nearest-neighbour is 6.9 off)
    assert np.abs(left - F.resize_frames(f_in, 2 * h, 2 * w)).mean() < 1.5


def test_value_ranges_follow_the_card(clips, tmp_path):
    src = clips["lossless"]
    _, f_in, _ = decode(src)
    unit = CardBackend(input_range=(0.0, 1.0), output_range=(0.0, 1.0))
    translate_video(src, tmp_path / "unit.mp4", unit, VideoOptions(progress=False, crf=0, pix_fmt="yuv444p"))
    seen = np.concatenate(unit.batches)[: len(f_in)]  # (N, 3, H, W); the last batch repeats its final frame
    assert seen.min() >= 0.0 and seen.max() <= 1.0
    assert np.abs(seen * 255 - f_in.transpose(0, 3, 1, 2)).max() < 1e-3  # x/255, not x/127.5 - 1
    f_out = decode(tmp_path / "unit.mp4")[1].astype(int)
    assert np.abs(f_out - through_yuv(f_in, "yuv444p")).max() <= 1 and np.abs(f_out - f_in).max() <= 3
    # in by [-1, 1], out by [0, 1]: an identity model then maps x to 2x - 255 (clipped), which is only
    # right if each direction reads its own range from the card
    mixed = CardBackend(input_range=(-1.0, 1.0), output_range=(0.0, 1.0))
    translate_video(src, tmp_path / "mixed.mp4", mixed, VideoOptions(progress=False, crf=0, pix_fmt="yuv444p"))
    expected = np.clip(2 * f_in.astype(int) - 255, 0, 255).astype(np.uint8)
    f_out = decode(tmp_path / "mixed.mp4")[1].astype(int)
    assert np.abs(f_out - through_yuv(expected, "yuv444p")).max() <= 1


@pytest.mark.parametrize("scale,returns,says", [(2, 1, "2 x the size"), (1, 2, "the same size")])
def test_wrong_scale_is_refused(clips, tmp_path, scale, returns, says):
    dst = tmp_path / "out.mp4"
    with pytest.raises(ShapeError, match="returned") as err:
        translate_video(clips["even"], dst, CardBackend(scale=scale, returns=returns), VideoOptions(progress=False))
    message = str(err.value)
    assert says in message and len(message.splitlines()) == 1
    assert f"{4}x3x{48 * returns}x{64 * returns}" in message  # what came back, in numbers
    assert not dst.exists() and leftovers(tmp_path) == [] and _no_stage_threads()


def test_import_stays_light():
    code = ("import sys, cyclegan_deploy.video as v; v.VideoOptions, v.probe_video, v.translate_video; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'tensorrt', 'av') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stage_runner_is_generic_and_stops_on_first_error():
    from cyclegan_deploy.video.stages import StageRunner

    seen: list[int] = []
    runner = StageRunner(depth=2, thread_prefix="test-")
    runner.start(("numbers", iter(range(10))), [("double", lambda x: 2 * x), ("inc", lambda x: x + 1)],
                 ("collect", seen.append), finish=lambda: seen.append(-1))
    assert runner.wait(timeout=10)
    runner.shutdown(timeout=10)
    assert runner.error is None and seen == [2 * i + 1 for i in range(10)] + [-1]
    assert list(runner.busy) == ["numbers", "double", "inc", "collect"]

    def fails(x: int) -> int:
        if x == 3:
            raise ValueError("third item")
        return x

    produced: list[int] = []

    def numbers():
        for i in range(10_000):
            produced.append(i)
            yield i

    seen.clear()
    runner = StageRunner(depth=1, thread_prefix="test-")
    runner.start(("numbers", numbers()), [("check", fails)], ("collect", seen.append))
    assert runner.wait(timeout=10)
    runner.shutdown(timeout=10)
    assert isinstance(runner.error, ValueError) and str(runner.error) == "third item" and not runner.alive()
    # items before the failure may or may not have reached the sink; none after it, and the source stopped
    assert seen == list(range(len(seen))) and len(seen) <= 3 and len(produced) < 20


def test_streamed_stage_reads_ahead_keeps_order_and_is_closed_on_failure():
    """A Streamed map stage (the inference stage with batches in flight) sees the whole input stream: it may
    read ahead, its outputs keep their order, its busy time leaves out waiting for input, and when another
    stage fails its generator is closed (its cleanup runs)."""
    from cyclegan_deploy.video.stages import StageRunner, Streamed

    def slow_numbers(n: int):
        for i in range(n):
            time.sleep(0.02)  # the source is the slow stage: the stream mostly waits for input
            yield i

    def pairs(items):  # reads two items before giving either back, like two batches in flight
        held = []
        for x in items:
            held.append(x)
            if len(held) == 2:
                yield from (10 * h for h in held)
                held.clear()
        yield from (10 * h for h in held)

    seen: list[int] = []
    runner = StageRunner(depth=2, thread_prefix="test-")
    runner.start(("numbers", slow_numbers(7)), [("pairs", Streamed(pairs))], ("collect", seen.append))
    assert runner.wait(timeout=10)
    runner.shutdown(timeout=10)
    assert runner.error is None and seen == [10 * i for i in range(7)]
    assert runner.busy["pairs"] < 0.5 * runner.busy["numbers"]  # waiting on the slow source is not busy

    closed = threading.Event()

    def guarded(items):
        try:
            yield from items
        finally:
            closed.set()

    def sink(x: int) -> None:
        if x == 2:
            raise ValueError("sink failed")

    runner = StageRunner(depth=1, thread_prefix="test-")
    runner.start(("numbers", iter(range(10_000))), [("stream", Streamed(guarded))], ("collect", sink))
    assert runner.wait(timeout=10)
    runner.shutdown(timeout=10)
    assert isinstance(runner.error, ValueError) and not runner.alive() and closed.is_set()


def test_non_finite_batch_stops_the_run_naming_model_and_frames(clips, tmp_path):
    """A Backend whose second call returns NaN (an fp16 overflow on some frames): the run stops at that batch
    naming the model and the frames, instead of encoding black frames; nothing is left behind."""
    from cyclegan_deploy.errors import CgDeployError

    class GoesNaN(CardBackend):
        path = tmp_path / "model.onnx"

        def _run(self, batch: np.ndarray) -> np.ndarray:
            out = super()._run(batch)
            return out * np.nan if len(self.batches) == 2 else out

    dst = tmp_path / "out.mp4"
    with pytest.raises(CgDeployError) as err:
        translate_video(clips["even"], dst, GoesNaN(), VideoOptions(progress=False, batch=4))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'model.onnx'}: ") and "NaN/Inf" in message and "frames 5-8" in message
    assert len(message.splitlines()) == 1
    assert not dst.exists() and leftovers(tmp_path) == [] and _no_stage_threads()


def test_ordered_outputs_blames_the_model_only_for_the_models_errors():
    """inflight.ordered_outputs (the inference step of video and image folders): outputs in order with their
    items; a backend error goes through `failed` (which names the model), an input-side error does not."""
    from cyclegan_deploy.video.inflight import ordered_outputs

    class Fails(PixelModel):
        def __call__(self, x):
            if len(self.shapes) == 2:
                raise RuntimeError("kernel exploded")
            return super().__call__(x)

    def failed(e: Exception, shape):
        return ValueError(f"model.onnx: {e} on {shape}")

    xs = [np.full((1, 3, 4, 4), i / 10, np.float32) for i in range(5)]
    got = list(ordered_outputs(PixelModel(), range(5), lambda i: xs[i], 2, failed))
    assert [i for i, _, _ in got] == list(range(5)) and all(s == (1, 3, 4, 4) for _, s, _ in got)
    assert all(np.array_equal(y, PixelModel()(xs[i])) for i, _, y in got)
    with pytest.raises(ValueError, match=r"model.onnx: kernel exploded on \(1, 3, 4, 4\)"):
        list(ordered_outputs(Fails(), range(5), lambda i: xs[i], 2, failed))

    def bad_input(i: int) -> np.ndarray:
        if i == 3:
            raise KeyError("frame 3 unreadable")
        return xs[i]

    with pytest.raises(KeyError, match="frame 3 unreadable"):
        list(ordered_outputs(PixelModel(), range(5), bad_input, 2, failed))
