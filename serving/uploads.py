"""An upload as the model sees it: the serving caps and the one safe decode path, shrunk to the model's
side (``images.model_side``) as training decodes. The service and in-process ``popularity predict`` both
decode here, so the same photo gets the same score either way."""

from __future__ import annotations

from PIL import Image

from pipelines.data.images import decode
from pipelines.settings import Settings


def decode_upload(data: bytes, settings: Settings) -> Image.Image:
    """The RGB picture the scorer gets for ``data``; :class:`~pipelines.data.images.ImageError` says what
    was wrong with a refused one."""
    limits = settings.images
    img, _ = decode(data, limits.max_bytes, settings.serving.max_pixels, limits.min_side, max_side=limits.model_side,
                    max_jpeg_pixels=settings.serving.max_jpeg_pixels)
    img.info = {}  # pixels only: an upload's ICC profile or EXIF (megabytes) would be pickled to the scorer with it
    return img
