"""Video translation with PyAV: decode -> batches -> backend -> encode, audio copied, stages overlapped.

Layout: options.py is what a run is asked (VideoOptions); probe.py reads the input (streams, rotation, rate,
colour) and picks the encoder and pixel format; stages.py is a generic chain of threads joined by bounded
queues; job.py is the run (decode, pre-process, inference, post-process, encode) and writer.py the output
side, both reading one OutputPlan made before any thread starts; inflight.py feeds the backend's run_many
in order with several batches in flight (OpenVINO throughput mode; image folders use it too). PyAV is
imported inside functions, so importing this package stays light.

What is kept from the input, and how:
- Frame count and timestamps: every decoded frame in the window is encoded with the source pts (same
  time base), so 29.97 (30000/1001) and variable-rate clips keep their exact timing. A source without
  pts, or with a non-increasing one, gets the next tick (counted in the report's warnings).
- Size: output size == displayed input size (or --size) times the model card's scale (1 for CycleGAN/
  pix2pix, 2/4 for super-resolution), twice the width with --side-by-side; there the input half is the
  model's input resized (bicubic) to the output size, so both halves match.
  H.264/HEVC in 4:2:0 cannot code an odd width or height, so for odd sizes the default pixel format
  becomes yuv444p (same size, High 4:4:4 profile: plays in ffmpeg/VLC/mpv, not in every browser).
  `pix_fmt="yuv420p"` forces 4:2:0 and then pads the odd dimension by one repeated row/column.
- Values: uint8 pixels map onto the card's input_range before the model and back from its output_range.
- Rotation: phones store portrait clips as landscape pixels plus a display matrix. Frames are rotated
  upright before the model (CycleGAN models are trained on upright images) and written upright with
  no display matrix, so the output displays exactly like the input. Flips in the matrix are ignored.
- Audio: every audio stream is copied packet for packet (no re-encode). With --start/--duration the
  packets that start inside the window are kept and shifted by the same offset as the video.
- Colour: frames are converted with the input's matrix and range, and the output is tagged with the
  input's colour space, primaries and transfer (limited range), so HD BT.709 clips keep their colours.
- Other streams (subtitles, data) are not copied. MKV output of a clip whose audio starts before 0 (AAC
  priming) shifts all timestamps by that amount (Matroska has no negative times); MP4/MOV keep them.
- The output is written to a hidden "partial" file beside it and renamed only when complete; any error,
  Ctrl-C or SIGTERM removes it, and a later run removes those of runs that were killed outright.
- Frames smaller than the model can take (a ResNet needs 8x8: frames.min_size) are padded up to it and
  cropped back, so a 2x2 clip runs.

Refused before the output side is touched (one line each, naming the file): an image given as the video
(`cgdeploy translate` takes those), a model whose card is not 3 -> 3 channels, an --pix-fmt the encoder
does not take or an unknown x264/x265 --preset, an existing output without force (checked again under the
output's lock, so two runs to one file never both succeed), and a frame size whose pipeline cannot fit in
the available memory even one frame at a time (--batch is lowered to what fits, and to the clip's frames).
While running: a model output that is not (N, 3, scale*H, scale*W) or holds NaN/Inf stops the run naming
the model file and the frames; a full disk or a refused write is named as the output file.
"""

from cyclegan_deploy.video.options import VideoOptions
from cyclegan_deploy.video.probe import VideoInfo, output_codec, pick_pix_fmt, probe_video
from cyclegan_deploy.video.translate import VideoReport, translate_video

__all__ = ["VideoInfo", "VideoOptions", "VideoReport", "output_codec", "pick_pix_fmt", "probe_video",
           "translate_video"]
