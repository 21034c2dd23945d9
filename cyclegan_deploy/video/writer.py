"""The output side: the plan of every output size and format (made once, before any thread starts), the batch
that fits the clip and the memory, the checks on the output path, the writer that encodes frames and
interleaves the copied audio packets, and the report of what was written. Sizes are (H, W) and are printed
HxW, the order --size takes them."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from cyclegan_deploy import machine
from cyclegan_deploy.errors import ConfigError, MediaError, OutputError
from cyclegan_deploy.frames import model_size
from cyclegan_deploy.machine import gib
from cyclegan_deploy.metadata import ModelMeta
from cyclegan_deploy.model_checks import bytes_per_pixel
from cyclegan_deploy.outputs import os_error_message
from cyclegan_deploy.video.probe import SWS_COLORSPACE, VideoInfo, one_line, pick_pix_fmt

AudioQueue = deque[tuple[float, int, Any]]  # (time in s from the output's start, input stream index, packet)


@dataclass(frozen=True)
class OutputPlan:
    """Sizes are (H, W), upright. The stages and the writer read it; nothing changes it once made."""

    display: tuple[int, int]  # the input as a player shows it
    model_in: tuple[int, int]  # what each frame is resized to for the model: --size, else display
    multiple: int  # the card's: the model takes multiples of it
    padded: tuple[int, int]  # model_in padded to the multiple and the model's minimum: the batch tensor's H, W
    scale: int  # the card's: the model returns (scale x padded), cropped back to scale x model_in
    translated: tuple[int, int]  # one translated frame: scale x model_in
    canvas: tuple[int, int]  # translated, twice as wide with --side-by-side (input half resized to match)
    pad_even: tuple[int, int]  # rows, columns of edge padding a forced 4:2:0 needs on an odd canvas
    frame: tuple[int, int]  # what is encoded: canvas + pad_even
    encoder: str
    pix_fmt: str
    time_base: Fraction  # the output stream's clock (the input's, unless the encoder cannot take it)
    reformat: tuple[tuple[str, str], ...]  # swscale arguments for RGB -> pix_fmt (matrix, range)

    @property
    def side_by_side(self) -> bool:
        return self.canvas[1] != self.translated[1]


@dataclass
class VideoReport:
    src: Path
    dst: Path
    frames: int
    size: tuple[int, int]  # output (H, W)
    rate: Fraction
    codec: str
    pix_fmt: str
    audio: list[str]
    rotation: int
    backend: str
    batch: int
    wall_s: float
    busy_s: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    inflight: int = 1  # batches the backend ran at once

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        h, w = self.size
        audio = ", ".join(self.audio) + " (copied)" if self.audio else "none"
        busy = ", ".join(f"{k} {v:.2f}s" for k, v in self.busy_s.items())
        infer = self.busy_s.get("inference", 0.0)
        turn = {90: "90 deg counter-clockwise", 180: "180 deg", 270: "90 deg clockwise"}.get(self.rotation, "")
        rotated = f", turned {turn} to upright (display matrix)" if turn else ""
        lines = [f"wrote {self.dst}: {self.frames} frames {h}x{w} (HxW) @ {float(self.rate):.3f} fps, {self.codec} "
                 f"{self.pix_fmt}, audio: {audio}{rotated}",
                 f"{self.wall_s:.2f}s = {self.fps:.2f} fps end-to-end with {self.backend} batch {self.batch}"
                 + (f" x{self.inflight} in flight" if self.inflight > 1 else "") + ", "
                 f"model busy {infer / self.wall_s if self.wall_s else 0:.0%} of the time; stage busy: {busy}"]
        return "\n".join(lines + [f"warning: {m}" for m in self.warnings])



def plan_output(info: VideoInfo, meta: ModelMeta, encoder: str, size: tuple[int, int] | None = None,
                side_by_side: bool = False, pix_fmt: str | None = None) -> OutputPlan:
    model_in = size or info.display_size
    multiple, scale = max(1, int(meta.multiple)), int(meta.scale)
    translated = (model_in[0] * scale, model_in[1] * scale)
    canvas = (translated[0], translated[1] * (2 if side_by_side else 1))
    fmt, pad = pick_pix_fmt(encoder, *canvas, pix_fmt)
    pad_even = (canvas[0] % 2, canvas[1] % 2) if pad else (0, 0)
    time_base = info.time_base
    if encoder == "mpeg4" and time_base.denominator > 65535:  # MPEG-4 part 2 limit on the clock
        time_base = Fraction(1, 60000)
    cs = SWS_COLORSPACE.get(info.colorspace)
    # RGB -> YUV with the input's matrix (HD clips: BT.709), limited range: what the stream is tagged with
    reformat = (("format", fmt), ("dst_color_range", "MPEG"), *((("dst_colorspace", cs),) if cs else ()))
    return OutputPlan(info.display_size, model_in, multiple, model_size(*model_in, meta), scale, translated,
                      canvas, pad_even, (canvas[0] + pad_even[0], canvas[1] + pad_even[1]), encoder, fmt, time_base,
                      reformat)


def fit_batch(info: VideoInfo, plan: OutputPlan, meta: ModelMeta, device: str, batch: int, depth: int,
              frames: int | None, size_given: bool, calls: tuple[int, int] | None = None) -> tuple[int, str | None]:
    """The batch to run: at most the clip's frames, and what the memory holds: every frame in flight (decoded,
    model input, tensors, output frames) in each of the pipeline's queues (depth + 1 batches per stage
    boundary), plus the model's own memory for a call of `calls` (H, W) (a tile when tiled; default the padded
    frame). Refuses, with the numbers, a size that cannot run even one frame at a time. Returns (batch, warning
    or None)."""
    if frames:
        batch = min(batch, frames)
    (h, w), (ph, pw), (ch, cw) = plan.model_in, plan.padded, plan.frame
    pipeline = 3 * info.width * info.height + 3 * h * w + 4 * 3 * ph * pw * (1 + plan.scale ** 2) + 2 * 3 * ch * cw
    mh, mw = calls or (ph, pw)
    per_frame = (depth + 1) * pipeline + bytes_per_pixel(meta, device) * mh * mw
    free = machine.available_memory()
    if free is None:
        return batch, None
    if per_frame > free:
        what = f"--size {h}x{w}" if size_given else f"{info.path}: its {h}x{w} (HxW) frames"
        fix = "choose a smaller --size" if size_given else "shrink them with --size HxW"
        if meta.norm != "instance" and (mh, mw) == (ph, pw):
            fix += " or run the model in tiles (--tile 512)"
        raise ConfigError(f"{what}: translating needs ~{gib(per_frame)} GiB even one frame at a time, "
                          f"{gib(free)} GiB available; {fix}, or free memory")
    fits = max(1, int(free * 0.9) // per_frame)
    if batch > fits:
        return fits, (f"--batch {batch} lowered to {fits}: ~{gib(per_frame)} GiB per frame in flight, "
                      f"{gib(free)} GiB available")
    return batch, None


def check_output_path(src: Path, dst: Path) -> None:
    """Refuse outputs that cannot or must not be written (nothing is created here)."""
    if dst.exists() and dst.is_dir():
        raise ConfigError(f"{dst}: is a folder; give the output video's file name, e.g. {dst / 'out.mp4'}")
    if src.exists() and (dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst))):
        raise ConfigError(f"{dst}: output is the input file; choose another output name")
    if not dst.suffix:
        raise ConfigError(f"{dst}: no file extension to choose the container from; use .mp4, .mkv, .mov or .webm")
    blocker = next((p for p in dst.absolute().parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise MediaError(f"{dst.parent}: cannot create the output folder (a file is in the way: {blocker}); "
                         "choose another -o")


def output_error(e: BaseException, dst: Path) -> OutputError | MediaError:
    """An error from writing the output as one line naming `dst` (not its temp name)."""
    if isinstance(e, OSError) and e.errno:
        return OutputError(os_error_message(OSError(e.errno, e.strerror), dst))
    return MediaError(f"{dst}: cannot write the output ({one_line(e)})")


class Writer:
    """Owns the output container (written to `tmp`, reported as `dst`): encodes frames, interleaves the
    copied audio packets by time. Runs in the last stage's thread; `frames` is safe to read from others."""

    def __init__(self, tmp: Path, dst: Path, info: VideoInfo, plan: OutputPlan, *, crf: int, preset: str | None,
                 audio: AudioQueue | None) -> None:
        import av

        self.info, self.plan, self.audio = info, plan, audio
        try:
            self.out = av.open(str(tmp), "w")
        except ValueError as e:
            raise ConfigError(f"{dst}: cannot tell the container from the extension; use .mp4, .mkv, "
                              ".mov or .webm") from e
        except Exception as e:
            raise output_error(e, dst) from e
        try:
            self.vs = self._video_stream(crf, preset)
            self.audio_map: dict[int, Any] = {}
            if audio is not None:
                with av.open(str(info.path)) as src:
                    for a in src.streams.audio:
                        self.audio_map[a.index] = self.out.add_stream_from_template(a)
            self.out.start_encoding()  # header now: container/codec mismatches fail before any work
        except Exception as e:
            self.out.close()
            with_audio = f" + audio {', '.join(info.audio)}" if audio is not None and info.audio else ""
            raise MediaError(f"{dst}: cannot set up {plan.encoder}/{plan.pix_fmt}{with_audio} in a {dst.suffix} "
                             f"file ({one_line(e)}); try .mkv (takes any codec) or --no-audio") from e
        self.frames, self.last_pts, self.repaired = 0, -(2**62), 0

    def _video_stream(self, crf: int, preset: str | None) -> Any:
        info, plan, encoder = self.info, self.plan, self.plan.encoder
        vs: Any = self.out.add_stream(encoder, rate=info.rate)
        vs.height, vs.width = plan.frame
        vs.pix_fmt = plan.pix_fmt
        vs.time_base = vs.codec_context.time_base = plan.time_base
        cc: Any = vs.codec_context
        if info.colorspace not in (0, 2):
            cc.colorspace = info.colorspace
        if info.color_primaries not in (0, 2):
            cc.color_primaries = info.color_primaries
        if info.color_trc not in (0, 2):
            cc.color_trc = info.color_trc
        cc.color_range = 1  # limited: what players assume for video
        options: dict[str, str] = {}
        if encoder in ("libx264", "libx265", "libvpx-vp9"):
            options["crf"] = str(crf)
        if encoder == "libvpx-vp9":
            options.update({"b": "0", "row-mt": "1"})  # b=0: pure constant quality
        if preset and encoder in ("libx264", "libx265"):
            options["preset"] = preset
        if encoder == "libx265":
            options["x265-params"] = "log-level=error"
            if self.out.format.name.startswith("mov"):
                vs.codec_tag = "hvc1"  # the tag Apple players need for HEVC in .mp4/.mov
        if encoder == "mpeg4":  # fixed quantiser, scaled from --crf (18 -> q 3)
            cc.qscale = True
            cc.global_quality = max(1, min(31, round(crf / 6))) * 118
        vs.options = options
        return vs

    def write(self, frames: Sequence[Any], pts: Sequence[int]) -> None:
        """Encode `frames` at `pts` (input time base), then mux the audio that plays before them."""
        tb = self.plan.time_base
        rescale = self.info.time_base / tb
        for frame, p in zip(frames, pts, strict=True):
            p = round(p * rescale) if rescale != 1 else p
            if p <= self.last_pts:  # encoders reject non-increasing pts
                p = self.last_pts + 1
                self.repaired += 1
            self.last_pts = p
            frame.pts, frame.time_base = p, tb
            self.out.mux(self.vs.encode(frame))
            self.frames += 1
        self._mux_audio(float((self.last_pts + 1) * tb))

    def _mux_audio(self, until: float) -> None:
        q = self.audio
        while q and q[0][0] <= until:
            _, index, packet = q.popleft()
            # the index was taken at demux time: the input container (and its streams) may be closed by now
            packet.stream = self.audio_map[index]
            self.out.mux(packet)

    def finish(self) -> None:
        """Flush the encoder and the audio left after the last frame (runs in the writer's thread)."""
        self.out.mux(self.vs.encode(None))
        self._mux_audio(float("inf"))

    def close(self) -> None:
        self.out.close()
