"""Input images are checked before anything is written: format, bytes, pixels, bombs, truncation."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from producer.errors import InvalidJobSpec
from producer.images import validate_input_image

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 1024 * 1024}


def _encoded(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    png = bytearray(_encoded("PNG", (1, 1)))
    ihdr = bytearray(png[12:29])  # b"IHDR" + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", width, height)
    png[12:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(png)


@pytest.mark.parametrize(("fmt", "extension"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
def test_accepted_formats(fmt: str, extension: str) -> None:
    checked = validate_input_image(_encoded(fmt), **LIMITS)
    assert (checked.format, checked.width, checked.height) == (extension, 40, 30)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"GIF89a not really", "cannot be read"),
        (_encoded("GIF"), "format GIF"),
        (_encoded("BMP"), "format BMP"),
        (b"\x00" * 1_000_001, "bytes"),
        (_png_declaring(2000, 2000), "pixels"),  # above our limit, below Pillow's
        (_png_declaring(30_000, 30_000), "too many pixels"),  # Pillow's own bomb error
        (_encoded("PNG")[:60], "cannot be read"),  # truncated
    ],
)
def test_bad_images_are_rejected_naming_the_field(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidJobSpec, match=reason) as caught:
        validate_input_image(data, **LIMITS)
    assert list(caught.value.errors) == ["image"]
