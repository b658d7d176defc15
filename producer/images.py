"""Input images for image-to-image jobs, checked before anything is written.

Pillow only *warns* about a decompression bomb below twice its pixel limit, and a crafted header
can declare billions of pixels in a few bytes: the declared size is checked against our own
limit before any pixel is decoded, and Pillow's warning is turned into an error.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from producer.errors import InvalidJobSpec

ACCEPTED_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


@dataclass(frozen=True)
class InputImage:
    data: bytes
    format: str  # file extension: png, jpg, webp
    width: int
    height: int


def validate_input_image(data: bytes, *, max_bytes: int, max_pixels: int) -> InputImage:
    """Check an uploaded image; raises InvalidJobSpec naming ``image`` with the reason."""

    def reject(reason: str) -> InvalidJobSpec:
        return InvalidJobSpec({"image": reason})

    if not data:
        raise reject("is empty")
    if len(data) > max_bytes:
        raise reject(f"is {len(data)} bytes, more than the limit of {max_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in ACCEPTED_FORMATS:
                    raise reject(f"format {image.format} is not one of PNG, JPEG, WebP")
                width, height = image.size
                if width * height > max_pixels:
                    raise reject(f"is {width}x{height} pixels, more than the limit of {max_pixels}")
                # Decode it all: a truncated or corrupt file fails here, not in a worker.
                image.load()
                extension = ACCEPTED_FORMATS[image.format]
        except InvalidJobSpec:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise reject(f"declares too many pixels ({exc})") from None
        except UnidentifiedImageError:  # its message names an internal buffer object
            raise reject("cannot be read as an image (not PNG, JPEG or WebP data)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise reject(f"cannot be read as an image ({exc})") from None
    return InputImage(data=data, format=extension, width=width, height=height)
