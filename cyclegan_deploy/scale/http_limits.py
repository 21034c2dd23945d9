"""What `cgdeploy serve` accepts and how it refuses, apart from Ray: content types, the body and pixel caps,
decoding and encoding one image.

Every refusal is an HttpError(status, message); the replica answers it as the one-line JSON
`{"error": message}`. Sizes are checked before the work they guard: the declared Content-Length before reading,
the bytes while reading (a client may lie or stream), the pixel count from the image header before decoding
(PIL reads it lazily), so a small file declaring 30000x30000 pixels never allocates its pixels.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

# The formats the endpoint answers in kind: PIL format names by media type
FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}  # seen in clients
# Lossy outputs at images.py's quality (translate writes the same); PNG at level 1: the CPU is the model's,
# and on loopback a larger body costs nothing
SAVE_OPTIONS: dict[str, dict[str, int]] = {"PNG": {"compress_level": 1}, "JPEG": {"quality": 95},
                                           "WEBP": {"quality": 95}}


class HttpError(Exception):
    """A request refused with `status`; `message` is the one line the client reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Decoded:
    rgb: np.ndarray  # (H, W, 3) uint8, upright
    alpha: np.ndarray | None  # (H, W) uint8 where the input had transparency
    fmt: str  # PIL format name, the reply's format


def image_format(content_type: str | None) -> str:
    """The PIL format of a request's Content-Type (parameters ignored); 415 naming the accepted types."""
    media = (content_type or "").split(";")[0].strip().lower()
    media = ALIASES.get(media, media)
    if media not in FORMATS:
        raise HttpError(415, f"Content-Type {media or '(none)'!r} is not accepted; send the image as "
                             f"{', '.join(FORMATS)}")
    return FORMATS[media]


def reply_type(fmt: str) -> str:
    """The Content-Type of a reply in `fmt` (a PIL format name)."""
    return next(k for k, v in FORMATS.items() if v == fmt)


def check_length(header: str | None, max_bytes: int) -> None:
    """Refuse a declared body over the cap before reading any of it."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise HttpError(400, f"Content-Length {header!r} is not a number") from None
    if length > max_bytes:
        raise HttpError(413, too_large_body(max_bytes))


def too_large_body(max_bytes: int) -> str:
    return f"body over {max_bytes} bytes (the server's --max-body-mb); send a smaller image"


async def read_body(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The body, counted as it arrives: a chunked upload or a wrong Content-Length still stops at the cap."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise HttpError(413, too_large_body(max_bytes))
        parts.append(chunk)
    if not size:
        raise HttpError(400, "empty body; POST the image bytes")
    return b"".join(parts)


def decode(data: bytes, fmt: str, max_pixels: int) -> Decoded:
    """Decode as `fmt` only (the declared type: no format sniffing, a PNG sent as image/jpeg is a 400), refusing
    more than max_pixels from the header before the pixels are decoded. EXIF orientation is applied as
    `cgdeploy translate` does, so the model sees the photo upright and the reply is upright without the tag."""
    from PIL import Image

    from cyclegan_deploy.images import upright_rgb
    from cyclegan_deploy.video.probe import one_line

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's limit is a refusal here
            opened = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # the replica set PIL's limit
        raise HttpError(413, f"image over the server's limit of {max_pixels} pixels (--max-pixels; "
                             f"{str(e).split(', could')[0]}); shrink it first") from e
    except Exception as e:  # UnidentifiedImageError, SyntaxError, ValueError... from PIL's parsers
        raise HttpError(400, f"not a decodable {fmt} image ({type(e).__name__}); send a valid file") from e
    with opened:
        w, h = opened.size
        if w * h > max_pixels:
            raise HttpError(413, f"image {h}x{w} (HxW) has {w * h} pixels, over the server's limit of {max_pixels} "
                                 "(--max-pixels); shrink it first")
        try:
            rgb, alpha = upright_rgb(opened)
        except Exception as e:  # truncated or corrupt pixel data: the header parsed, the rest did not
            raise HttpError(400, f"not a decodable {fmt} image ({type(e).__name__}: {one_line(e)[:120]}); send a "
                                 "complete file") from e
    return Decoded(rgb, alpha, fmt)


def encode(rgb: np.ndarray, alpha: np.ndarray | None, fmt: str) -> bytes:
    """`rgb` (sH, sW, 3) in `fmt`, with the input's alpha put back (resized by the card's scale) where the
    format keeps it; JPEG has none."""
    from PIL import Image

    im = Image.fromarray(rgb)
    if alpha is not None and fmt != "JPEG":
        mask = Image.fromarray(alpha)
        if alpha.shape != rgb.shape[:2]:
            mask = mask.resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.BICUBIC)
        im.putalpha(mask)
    out = io.BytesIO()
    im.save(out, format=fmt, **SAVE_OPTIONS[fmt])
    return out.getvalue()
