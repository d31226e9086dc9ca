"""Safe image decoding shared by the collector, the models and the service.

Every image that enters the stack passes through :func:`decode`: size cap on the bytes, a check of
the magic bytes, the pixel cap read from the header before any pixel is decoded (decompression
bombs), EXIF orientation, and conversion of every mode (CMYK, 16-bit, palette, alpha, grey) to RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

FORMATS = {"JPEG", "PNG", "WEBP", "GIF"}
FIT = Image.Resampling.BILINEAR  # the shrink to ``max_side`` (bicubic before issue 29: 1.2-1.45x its cost)


class ImageError(ValueError):
    """An input that is not a usable image; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    declared_pixels: int  # the upload's own width × height, before any shrink


def sniff_format(data: bytes) -> str | None:
    """The format named by the magic bytes, whatever the file name or Content-Type says."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.clip(np.asarray(img), 0, 65535)  # integer steps only: a float64 copy of 50 MP is 400 MB
        eight_bit = arr // 257 if arr.max(initial=0) > 255 else arr
        return Image.fromarray(eight_bit.astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode(data: bytes, max_bytes: int, max_pixels: int, min_side: int = 1,
           max_side: int | None = None, max_jpeg_pixels: int | None = None) -> tuple[Image.Image, ImageInfo]:
    """Decode ``data`` into an RGB image or raise :class:`ImageError` saying what was wrong.

    With ``max_side`` (the service) the image is shrunk to fit it before it is converted to RGB, and a
    JPEG is decoded at the smallest DCT scale still at least that large: memory follows ``max_side``,
    not the upload's pixel count. That is why a JPEG may have its own, higher, declared-pixel cap
    (``max_jpeg_pixels``, with ``max_side`` only): a 24 MP photo decodes at 1/8 scale, 750×500. The
    shrink is bilinear (:data:`FIT`): after the DCT scaling a JPEG has less than 2× left to lose, where
    bicubic cost as much as the decode itself and differs from it by about one level of 255."""
    if not data:
        raise ImageError("empty", "the upload is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError("too_large", f"the image is {len(data)} bytes, above the cap of {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("not_an_image", "not a JPEG, PNG, WebP or GIF image (unrecognised magic bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", f"decompression bomb refused: {exc}") from exc
    except Exception as exc:  # PIL raises many types for broken headers
        raise ImageError("corrupt", f"the {fmt} header cannot be read: {exc}") from exc
    width, height = img.size
    cap = max_jpeg_pixels if fmt == "JPEG" and max_side and max_jpeg_pixels else max_pixels
    if width * height > cap:
        raise ImageError("too_many_pixels", f"{width}x{height} is above the {fmt} cap of {cap} pixels")
    if min(width, height) < min_side:
        raise ImageError("too_small", f"{width}x{height} is below the minimum side of {min_side} px")
    mode = img.mode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.seek(0)
            if max_side and fmt == "JPEG":
                img.draft("RGB", (max_side, max_side))
            img.load()
        ImageOps.exif_transpose(img, in_place=True)
        if max_side and img.mode not in ("P", "PA", "1"):  # palette indices would shrink by nearest neighbour
            img.thumbnail((max_side, max_side), FIT,
                          reducing_gap=None if img.mode.startswith("I") else 2.0)  # no 16-bit reduce()
        rgb = _to_rgb(img)
        if max_side:
            rgb.thumbnail((max_side, max_side), FIT)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError("corrupt", f"the {fmt} data is truncated or corrupt: {exc}") from exc
    return rgb, ImageInfo(format=fmt, width=rgb.width, height=rgb.height, mode=mode, declared_pixels=width * height)


def to_array(img: Image.Image, size: int) -> np.ndarray:
    """A ``size``×``size`` uint8 RGB array: the shortest side resized, then centre-cropped."""
    return np.asarray(ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def to_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
