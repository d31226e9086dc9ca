"""Every image entering the stack is decoded safely: caps first, then pixels, always RGB."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines.data.images import ImageError, decode, sniff_format, to_array
from tests.conftest import encode

MB = 1024 * 1024


def _decode(data: bytes, **kw):
    return decode(data, kw.get("max_bytes", 20 * MB), kw.get("max_pixels", 50_000_000), kw.get("min_side", 1))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_each_supported_format_of_a_photograph_decodes_to_rgb(photographs, fmt):
    img, info = _decode(encode(photographs["astronaut"], fmt))
    assert img.mode == "RGB"
    assert info.format == fmt
    assert (info.width, info.height) == (512, 512)


def test_format_comes_from_magic_bytes_not_the_name(photographs):
    assert sniff_format(encode(photographs["coffee"], "PNG")) == "PNG"
    assert sniff_format(b"GIF89a....") == "GIF"
    assert sniff_format(b"<html>not an image</html>") is None


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"just some text named photo.jpg", "not_an_image"),
    (b"BM\x00\x00 a bitmap is not accepted", "not_an_image"),
])
def test_non_images_are_refused_with_a_reason(data, reason):
    with pytest.raises(ImageError) as err:
        _decode(data)
    assert err.value.reason == reason


def test_truncated_jpeg_is_refused(photographs):
    data = encode(photographs["chelsea"])
    with pytest.raises(ImageError) as err:
        _decode(data[: len(data) // 2])
    assert err.value.reason == "corrupt"


def test_byte_cap_is_checked_before_decoding(photographs):
    with pytest.raises(ImageError) as err:
        _decode(encode(photographs["astronaut"], "PNG"), max_bytes=1000)
    assert err.value.reason == "too_large"


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8000, 30000])
def test_pixel_cap_refuses_bombs_before_decoding(side):
    with pytest.raises(ImageError) as err:
        _decode(_png_header_only(side, side))
    assert err.value.reason == "too_many_pixels"


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "I;16"])
def test_every_mode_is_converted_to_rgb(photographs, mode):
    base = Image.fromarray(photographs["coffee"])
    if mode == "I;16":
        converted = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))
        data = io.BytesIO()
        converted.save(data, format="PNG")
        payload = data.getvalue()
    else:
        fmt = "JPEG" if mode in ("CMYK", "L") else "PNG"
        buf = io.BytesIO()
        base.convert(mode).save(buf, format=fmt)
        payload = buf.getvalue()
    img, _ = _decode(payload)
    assert img.mode == "RGB"
    assert np.asarray(img).mean() > 20  # not a black frame


def test_exif_orientation_is_applied(photographs):
    base = Image.fromarray(photographs["chelsea"])  # 451 wide, 300 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    base.save(buf, format="JPEG", exif=exif)
    img, info = _decode(buf.getvalue())
    assert (info.width, info.height) == (300, 451)


def test_minimum_side_is_enforced():
    with pytest.raises(ImageError) as err:
        _decode(encode(np.zeros((1, 1, 3), np.uint8), "PNG"), min_side=32)
    assert err.value.reason == "too_small"


def test_to_array_is_a_centre_crop_of_the_requested_size(photographs):
    arr = to_array(Image.fromarray(photographs["chelsea"]), 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "JPEG"), ("CMYK", "JPEG"), ("L", "PNG"), ("P", "PNG"),
                                           ("RGBA", "PNG"), ("I;16", "PNG"), ("RGB", "WEBP")])
def test_the_services_decode_is_the_full_decode_shrunk(photographs, mode, fmt):
    """``max_side`` (JPEG draft decoding, shrinking before the RGB copy) changes memory, not the picture."""
    base = Image.fromarray(photographs["astronaut"]).resize((1600, 1200))
    source = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257) if mode == "I;16" else base.convert(mode)
    buffer = io.BytesIO()
    source.save(buffer, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    full, _ = _decode(buffer.getvalue())
    small, info = decode(buffer.getvalue(), 20 * MB, 50_000_000, max_side=256)
    assert small.mode == "RGB" and max(small.size) == 256 and info.format == fmt
    full.thumbnail((256, 256))
    assert small.size == full.size
    assert np.abs(np.asarray(small, dtype=float) - np.asarray(full, dtype=float)).mean() < 4


def test_a_served_jpeg_has_its_own_pixel_cap_as_it_decodes_at_a_reduced_scale(settings):
    """A phone's 24 MP JPEG is served (decoded at 1/8 scale, 750×500, then shrunk); a PNG of the same size
    still meets the 16 MP cap, and a JPEG past its own 50 MP cap is refused before any pixel is decoded."""
    from serving.uploads import decode_upload

    ramp = np.add.outer(np.arange(4000, dtype=np.uint16), np.arange(6000, dtype=np.uint16)) // 40
    camera = encode(np.stack([ramp % 256, (ramp * 3) % 256, ramp[::-1] % 256], axis=-1).astype(np.uint8),
                    quality=80)
    img = decode_upload(camera, settings)
    assert img.mode == "RGB" and max(img.size) == settings.images.model_side and img.size[0] > img.size[1]
    with pytest.raises(ImageError) as err:
        decode_upload(_png_header_only(6000, 4000), settings)
    assert err.value.reason == "too_many_pixels" and "16000000" in str(err.value)
    declared = bytearray(camera)  # the same JPEG declaring 10000×8000 in its frame header (SOF0)
    sof = declared.index(b"\xff\xc0")
    declared[sof + 5:sof + 9] = struct.pack(">HH", 8000, 10000)
    with pytest.raises(ImageError) as err:
        decode_upload(bytes(declared), settings)
    assert err.value.reason == "too_many_pixels" and "50000000" in str(err.value)


def test_a_served_upload_reaches_the_scorer_as_pixels_without_its_metadata(settings, photographs):
    """A JPEG carrying a 4 MB ICC profile: what the service pickles to the scorer is the 512 px picture,
    not the profile with it (eight such uploads at once grew the service by 873 MB)."""
    import pickle

    from serving.uploads import decode_upload

    icc = bytes(range(256)) * (4 * 4096)  # 4 MB: PIL splits it over APP2 markers
    data = encode(photographs["astronaut"], icc_profile=icc)
    assert Image.open(io.BytesIO(data)).info["icc_profile"] == icc
    img = decode_upload(data, settings)
    assert "icc_profile" not in img.info
    assert len(pickle.dumps(img)) < 1024 * 1024


def test_the_service_hands_memory_back_after_large_or_refused_uploads_not_after_every_photo(settings, monkeypatch):
    """``malloc_trim`` after a large decode returns a burst's memory (bench/bench_memory.py); after a small
    photo it only cost the API about 1 ms of CPU a request, so it is skipped there."""
    from serving import uploads

    trims = []
    monkeypatch.setattr(uploads, "release_freed_memory", lambda: trims.append(1))
    rng = np.random.default_rng(0)

    def trimmed(data: bytes) -> bool:
        trims.clear()
        try:
            uploads.decode_upload(data, settings)
        except ImageError:
            pass
        return bool(trims)

    assert not trimmed(encode(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)))
    assert trimmed(encode(np.zeros((2000, 2000, 3), dtype=np.uint8)))  # 4 MP declared: a large bitmap
    assert trimmed(b"\xff\xd8\xff" + bytes(64))  # refused mid-way
