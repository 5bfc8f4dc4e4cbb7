"""Decode one image safely, or say in a short stable code why it cannot be used.

Ingest and batch prediction both read untrusted bytes (a raw dump, an archive, an S3 prefix), so
decoding lives in one place with one set of rules:

* the pixel count is checked from the header *before* pixels are decoded (decompression bombs), with
  Pillow's own bomb check as a backstop;
* the image is decoded fully (``img.load()``), so truncated files fail here and not in a training pod;
* EXIF orientation is applied (TensorFlow's decoders ignore it), and grey, palette, CMYK, RGBA,
  16-bit and other modes are converted to 8-bit RGB;
* ``ImageInfo.passthrough`` says whether the original bytes can be handed to ``tf.io.decode_image``
  unchanged (plain 8-bit RGB/L JPEG or PNG with no EXIF rotation); anything else should be stored as
  the normalised RGB PNG that :func:`to_png_bytes` makes.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
"""Images with more pixels than this (after reading only the header) are rejected as decompression bombs."""

_EXIF_ORIENTATION = 0x0112
_PASSTHROUGH_FORMATS = {"JPEG": "jpg", "PNG": "png"}
_PASSTHROUGH_MODES = {"RGB", "L"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

# Truncated files must fail loudly, never be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own pixel limit decides about bombs, and a damaged file is reported once as a rejection, not as a
# stream of Pillow warnings over the progress bar. Set once here: warnings.catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class ImageRejected(Exception):
    """Raised by :func:`load_image`: ``code`` is a short stable token, ``detail`` says more for humans."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """``code`` or ``code: detail``: the text that goes in rejected.csv."""
        return f"{self.code}: {self.detail}" if self.detail else self.code


@dataclass(frozen=True)
class ImageInfo:
    """What was found in the file. ``width``/``height`` are after EXIF orientation."""

    format: str
    mode: str
    width: int
    height: int
    orientation: int
    passthrough: bool

    @property
    def ext(self) -> str:
        """File extension to store this image under: the original one for passthrough, else png."""
        return _PASSTHROUGH_FORMATS[self.format] if self.passthrough else "png"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is flattened onto white, 16-bit is scaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode != "F" and arr.max(initial=0) > 255 else max(float(arr.max(initial=0)), 255.0)
        grey = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("PA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif mode == "LA":
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


SNIFF_BYTES = 64 * 1024
"""How much of a streamed file :func:`could_be_image` looks at before the rest is read."""
_SIGNATURE_BYTES = 16  # what Image.open hands each format's signature check


def could_be_image(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first ``SNIFF_BYTES``) may be an image Pillow reads.

    False only when no format's signature matches the first 16 bytes AND Pillow cannot identify the head itself
    (a few formats have no signature and are tried by parsing their header), so a file it rejects would also be
    ``not-an-image`` (or ``zero-byte``) once read whole: the reader can stop after ``head``.
    """
    if not head:
        return False
    Image.init()
    for _factory, accept in Image.OPEN.values():
        try:
            result = accept(head[:_SIGNATURE_BYTES]) if accept else False
        except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open tolerates from them too
            continue
        if result and not isinstance(result, str):  # a str is Pillow's "looks like it, but unsupported" warning
            return True
    try:
        with Image.open(io.BytesIO(head)):
            return True
    except UnidentifiedImageError:
        return False
    except Exception:  # identified, but damaged or too big: reading the whole file decides that
        return True


def load_image(data: bytes | BinaryIO, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, ImageInfo]:
    """Decode ``data`` (bytes, or a seekable binary file read from its start) into an RGB image with EXIF
    orientation applied, or raise :class:`ImageRejected`. A file is read as the decoder needs it: a header that is
    no image, or a pixel count over ``max_pixels``, is rejected before the rest is read.

    Rejection codes: ``zero-byte``, ``not-an-image``, ``decompression-bomb``, ``truncated``, ``corrupt``.
    """
    handle = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    handle.seek(0)
    header = handle.read(32)
    if not header:
        raise ImageRejected("zero-byte")
    handle.seek(0)
    try:
        img = Image.open(handle)
    except UnidentifiedImageError:
        raise ImageRejected("not-an-image") from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression-bomb", _one_line(exc)) from None
    except Exception as exc:  # a broken header can raise almost anything inside a plugin
        raise ImageRejected("corrupt", _one_line(exc)) from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"image has size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejected("decompression-bomb", f"{width}x{height} px > limit of {max_pixels} px")
    try:
        img.load()
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise ImageRejected("truncated", _one_line(exc)) from None
        raise ImageRejected("corrupt", _one_line(exc)) from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression-bomb", _one_line(exc)) from None
    except Exception as exc:
        raise ImageRejected("corrupt", _one_line(exc)) from None

    fmt = img.format or "UNKNOWN"
    mode = img.mode
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # unreadable EXIF is not a reason to drop a good image
        orientation = 1
    try:
        oriented = ImageOps.exif_transpose(img) if orientation != 1 else img
        rgb = _to_rgb(oriented)
    except Exception as exc:
        raise ImageRejected("corrupt", _one_line(exc)) from None
    passthrough = (
        fmt in _PASSTHROUGH_FORMATS
        and mode in _PASSTHROUGH_MODES
        and orientation == 1
        and not _is_16bit_png(header, fmt)
        and "transparency" not in img.info
    )
    info = ImageInfo(
        format=fmt, mode=mode, width=rgb.width, height=rgb.height, orientation=orientation, passthrough=passthrough
    )
    return rgb, info


def _is_16bit_png(header: bytes, fmt: str) -> bool:
    """Pillow silently reads 16-bit RGB PNGs as 8-bit; TensorFlow would not, so look at IHDR's bit depth."""
    return fmt == "PNG" and len(header) > 24 and header[12:16] == b"IHDR" and header[24] != 8


def to_png_bytes(rgb: Image.Image) -> bytes:
    """Encode the normalised RGB image losslessly; deterministic for the same pixels and Pillow version."""
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


PHASH_SIZE = 16
"""DCT perceptual hash of 16x16 = 256 bits. The 64-bit default could not tell apart many different
Fashion-MNIST garments (hundreds of pairs within 4 bits); at 256 bits different garments were >= 32 bits
apart while a resized, JPEG-60 re-encoded copy stayed within 8 (measured, see docs/ingest.md)."""


def perceptual_hash(rgb: Image.Image) -> bytes:
    """The image's perceptual hash as 32 packed bytes (compared by Hamming distance)."""
    import imagehash

    bits = imagehash.phash(rgb, hash_size=PHASH_SIZE).hash
    return np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes()
