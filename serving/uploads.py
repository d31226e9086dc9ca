"""An upload as the model sees it: the serving caps and the one safe decode path, shrunk to the model's
side (``images.model_side``) as training decodes. The service and in-process ``popularity predict`` both
decode here, so the same photo gets the same score either way."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from PIL import Image

from pipelines.data.images import decode
from pipelines.settings import Settings


# An upload or a declared bitmap of this many bytes or more leaves pages worth handing back after its
# decode; below it glibc reuses what was freed, and trimming every small photo cost about 1 ms of the API's
# 8 ms of CPU a request under load (docs/BENCHMARKS.md).
TRIM_BYTES = 4 * 1024 * 1024
BITMAP_BYTES_PER_PIXEL = 4  # Pillow's widest common mode (RGBA, RGBX) while decoding


def decode_upload(data: bytes, settings: Settings) -> Image.Image:
    """The RGB picture the scorer gets for ``data``; :class:`~pipelines.data.images.ImageError` says what
    was wrong with a refused one."""
    limits = settings.images
    trim = True  # a refused upload may have left a partial bitmap behind: always trimmed
    try:
        img, info = decode(data, limits.max_bytes, settings.serving.max_pixels, limits.min_side,
                           max_side=limits.model_side, max_jpeg_pixels=settings.serving.max_jpeg_pixels)
        trim = len(data) >= TRIM_BYTES or info.declared_pixels * BITMAP_BYTES_PER_PIXEL >= TRIM_BYTES
    finally:
        if trim:
            release_freed_memory()  # the full-size bitmaps are freed by now: give their pages back
    img.info = {}  # pixels only: an upload's ICC profile or EXIF (megabytes) would be pickled to the scorer with it
    return img


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator returns memory in its own way
        return None


def release_freed_memory() -> None:
    """Hand the pages that freed allocations leave in glibc's heaps back to the system (``malloc_trim``):
    without it a burst of large decodes left the service hundreds of MB above idle for good. About a
    millisecond of CPU on a busy heap, hence only after large uploads (:data:`TRIM_BYTES`)."""
    if (trim := _malloc_trim()) is not None:
        trim(0)
