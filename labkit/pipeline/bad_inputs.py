"""The bad-input corpus: files that look like images and are not, or images that break naive code.

Each entry comes with what the resize action must do with it (``BAD_INPUT_EXPECTED``).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

from labkit.pipeline.images import _encode, render_photo

# What the resize action must do with each corpus entry: "ok" (a correct image comes
# out) or the error code it must return.
BAD_INPUT_EXPECTED: dict[str, str] = {
    "zero-byte.jpg": "not_an_image",       # empty object
    "truncated.jpg": "truncated",          # a JPEG cut at 60 %
    "truncated.png": "truncated",          # a PNG cut inside its pixel data
    "text.jpg": "not_an_image",            # plain text with a .jpg name
    "binary.jpg": "not_an_image",          # random bytes with a .jpg name
    "corrupt.jpg": "corrupt",              # 256 bytes of garbage in the middle of the
                                           # compressed data, starting with a stray SOI marker
    "bad-huffman.jpg": "corrupt",          # a valid header whose Huffman tables are garbage
    "scan-zeros.jpg": "ok",                # 256 zero bytes in the middle of the compressed
                                           # data: libjpeg cannot tell, and decodes a smeared
                                           # image (as browsers do). Arbitrary garbage there
                                           # goes either way, so the corpus avoids it.
    "fake.heic": "unsupported",            # an ISO-BMFF/HEIF header: not a format we decode
    "bomb.png": "decompression_bomb",      # declares 30000x30000 in a few hundred bytes
    "bomb.gif": "decompression_bomb",      # declares 30000x30000
    "alpha.png": "ok",                     # RGBA: left half transparent, right half opaque red
    "palette.png": "ok",                   # mode P
    "palette-transparent.png": "ok",       # mode P with a transparent palette index
    "la.png": "ok",                        # grey + alpha
    "bilevel.png": "ok",                   # mode 1
    "gray16.png": "ok",                    # 16-bit grey (mode I;16), a full-range gradient
    "cmyk.jpg": "ok",                      # Adobe CMYK JPEG
    "grey.jpg": "ok",                      # single-channel JPEG
    "progressive.jpg": "ok",               # progressive JPEG
    "exif-rotated.jpg": "ok",              # stored 400x300 with orientation 6: upright is
                                           # 300x400 (portrait); the stored top row is red,
                                           # so the upright right column is red
    "animated.gif": "ok",                  # 3 frames, red then green then blue: red comes out
    "tiny.png": "ok",                      # 1x1
    "wide.png": "ok",                      # 8000x2 panorama strip
}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny, valid-looking PNG header declaring a huge greyscale image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1) * 4)) + _png_chunk(b"IEND", b""))


def _gif_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A small GIF whose logical screen declares ``width`` x ``height``."""
    data = bytearray(_encode(Image.new("P", (16, 16)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # the logical screen descriptor
    return bytes(data)


def _corrupt_huffman(jpeg: bytes) -> bytes:
    """Overwrite the body of every Huffman table with 0xFF: the header still parses, but
    libjpeg rejects the tables when it decodes."""
    data, pos = bytearray(jpeg), 2
    while pos < len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if data[pos + 1] == 0xC4:
            data[pos + 5:pos + 2 + length] = b"\xff" * (length - 3)
        pos += 2 + length
    return bytes(data)


def _damage_middle(jpeg: bytes, garbage: bytes) -> bytes:
    """``garbage`` written over the middle of the file (the entropy-coded data)."""
    data = bytearray(jpeg)
    middle = len(data) // 2
    data[middle:middle + len(garbage)] = garbage
    return bytes(data)


def _exif_rotated() -> bytes:
    """400x300 stored, orientation 6 (rotate 90 degrees clockwise to display)."""
    img = Image.new("RGB", (400, 300), (40, 90, 200))
    ImageDraw.Draw(img).rectangle((0, 0, 399, 39), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(img, "JPEG", quality=90, exif=exif.tobytes())


def _alpha_png() -> bytes:
    img = Image.new("RGBA", (200, 100), (0, 0, 255, 0))
    img.paste((255, 0, 0, 255), (100, 0, 200, 100))
    return _encode(img, "PNG")


def _palette_png(transparent: bool) -> bytes:
    img = Image.new("P", (120, 80), 0)
    img.putpalette([255, 255, 0, 0, 128, 0, 0, 0, 255] + [0] * (253 * 3))
    ImageDraw.Draw(img).rectangle((30, 20, 90, 60), fill=1)
    ImageDraw.Draw(img).ellipse((5, 5, 25, 25), fill=2)
    return _encode(img, "PNG", **({"transparency": 0} if transparent else {}))


def _grey_alpha(photo: Image.Image) -> Image.Image:
    """Grey photo with alpha rising from transparent (left) to opaque (right)."""
    grey = photo.convert("L").resize((160, 120))
    alpha = Image.linear_gradient("L").rotate(90).resize(grey.size)
    return Image.merge("LA", (grey, alpha))


def _gray16() -> bytes:
    ramp = np.linspace(0, 65535, 320, dtype=np.float64)
    pixels = np.tile(ramp, (200, 1)).astype(np.uint16)
    return _encode(Image.fromarray(pixels), "PNG")


def _animated(colours=((255, 0, 0), (0, 255, 0), (0, 0, 255))) -> bytes:
    frames = [Image.new("RGB", (90, 60), c) for c in colours]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def bad_input_corpus() -> dict[str, bytes]:
    """Hostile and unusual inputs for the resize action, keyed by a file name.

    The expected outcome of each is in :data:`BAD_INPUT_EXPECTED`. The corpus is the
    same on every call.
    """
    rng = np.random.default_rng(247)
    photo = render_photo(640, 480, rng)
    jpeg = _encode(photo, "JPEG", quality=90)
    png = _encode(photo, "PNG")
    corpus = {
        "zero-byte.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) * 6 // 10],
        "truncated.png": png[: len(png) // 2],
        "text.jpg": b"This is not an image, only text with a .jpg name.\n" * 20,
        "binary.jpg": b"\x7fELF\x02\x01\x01\x00" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        # A second SOI is fatal to libjpeg, whatever garbage follows it.
        "corrupt.jpg": _damage_middle(jpeg, b"\xff\xd8" + rng.integers(0, 256, 254, dtype=np.uint8).tobytes()),
        "bad-huffman.jpg": _corrupt_huffman(jpeg),
        "scan-zeros.jpg": _damage_middle(jpeg, bytes(256)),
        "fake.heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
        "bomb.png": _png_bomb(),
        "bomb.gif": _gif_bomb(),
        "alpha.png": _alpha_png(),
        "palette.png": _palette_png(transparent=False),
        "palette-transparent.png": _palette_png(transparent=True),
        "la.png": _encode(_grey_alpha(photo), "PNG"),
        "bilevel.png": _encode(photo.convert("1"), "PNG"),
        "gray16.png": _gray16(),
        "cmyk.jpg": _encode(photo.convert("CMYK"), "JPEG", quality=90),
        "grey.jpg": _encode(photo.convert("L"), "JPEG", quality=90),
        "progressive.jpg": _encode(photo, "JPEG", quality=85, progressive=True),
        "exif-rotated.jpg": _exif_rotated(),
        "animated.gif": _animated(),
        "tiny.png": _encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
        "wide.png": _encode(Image.new("RGB", (8000, 2), (200, 100, 50)), "PNG"),
    }
    assert corpus.keys() == BAD_INPUT_EXPECTED.keys()
    return corpus
