"""Test images for the pipeline, generated deterministically from a seed (no downloads).

:func:`generate_pool` makes a pool of upload candidates: mostly photo-like JPEGs, a few
PNGs (some with alpha) and GIFs (some animated). :func:`bad_input_corpus` makes the
hostile and unusual inputs the resize action must handle; :data:`BAD_INPUT_EXPECTED`
says what the action should do with each.

Photos are composed at a quarter of their size (smooth gradients, low-frequency
texture, a few shapes), upscaled with a bicubic filter, then given full-resolution
grain, so their JPEG sizes resemble camera output, at the cost of a few ms per megapixel.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from labkit.errors import LabConfigError

# Weighted picture sizes (landscape; a fifth of the photos are turned to portrait).
# 4000x3000 is about 3 % of a pool: large enough to matter, rare enough to stay fast.
DEFAULT_SIZES: dict[tuple[int, int], float] = {
    (640, 480): 5, (800, 600): 4, (1024, 768): 5, (1280, 720): 5, (1280, 960): 3,
    (1600, 1200): 3, (1920, 1080): 6, (2048, 1536): 2, (2560, 1440): 1, (3264, 2448): 1,
    (4000, 3000): 1,
}
MIN_SIZE, MAX_SIZE = (640, 480), (4000, 3000)  # bounds on (longest, shortest) edge
PORTRAIT_SHARE = 0.2
GIF_MAX_EDGE = 1024  # GIFs are graphics, not photos: larger ones are scaled down to this
DEFAULT_MIX: dict[str, float] = {
    "jpeg": 0.84, "png": 0.05, "png_alpha": 0.03, "gif": 0.04, "gif_animated": 0.04,
}
KINDS = {  # kind -> (format, extension, content type)
    "jpeg": ("JPEG", "jpg", "image/jpeg"),
    "png": ("PNG", "png", "image/png"),
    "png_alpha": ("PNG", "png", "image/png"),
    "gif": ("GIF", "gif", "image/gif"),
    "gif_animated": ("GIF", "gif", "image/gif"),
}
JPEG_QUALITIES = (80, 85, 88, 90, 92, 95)  # what phones and cameras typically write
GOLDEN = (math.sqrt(5) - 1) / 2
GRAIN_TILE_PX = 509


@dataclass(frozen=True)
class PoolImage:
    """One generated upload candidate.

    Attributes:
        key: Object key, ``pool/<seed>/<index:04d>-<w>x<h>.<ext>``.
        data: The encoded file.
        content_type: Its MIME type.
        width: Width in px.
        height: Height in px.
        format: ``JPEG``, ``PNG`` or ``GIF``.
        kind: ``jpeg``, ``png``, ``png_alpha``, ``gif`` or ``gif_animated``.
    """

    key: str
    data: bytes = field(repr=False)
    content_type: str
    width: int
    height: int
    format: str
    kind: str


# ---------------------------------------------------------------- choosing


def _check_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    """The mix as normalised weights, in KINDS order."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = sorted(set(mix) - set(KINDS))
    if unknown:
        raise LabConfigError(f"unknown image kinds {unknown}; valid kinds: {', '.join(KINDS)}")
    if any(not isinstance(w, (int, float)) or w < 0 for w in mix.values()) or not sum(mix.values()):
        raise LabConfigError(f"mix weights must be non-negative numbers, not all zero: {mix}")
    total = sum(mix.values())
    return {kind: mix.get(kind, 0) / total for kind in KINDS}


def _check_sizes(sizes: Sequence[tuple[int, int]] | Mapping[tuple[int, int], float] | None,
                 ) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Sizes and their normalised weights; a plain sequence weighs every size alike."""
    table = dict(DEFAULT_SIZES if sizes is None else
                 sizes if isinstance(sizes, Mapping) else {tuple(s): 1 for s in sizes})
    if not table:
        raise LabConfigError("sizes must name at least one (width, height)")
    for width, height in table:
        if not (isinstance(width, int) and isinstance(height, int) and 1 <= width <= 8192
                and 1 <= height <= 8192):
            raise LabConfigError(f"bad size {(width, height)}: width and height must be ints in 1..8192")
    weights = np.array(list(table.values()), dtype=float)
    if (weights < 0).any() or not weights.sum():
        raise LabConfigError("size weights must be non-negative, not all zero")
    return list(table), weights / weights.sum()


def _kind_at(index: int, seed: int, mix: dict[str, float]) -> str:
    """Stratified choice: a golden-ratio sequence keeps every prefix of the pool close
    to the requested mix (so a small pool still gets its PNGs and GIFs)."""
    start = np.random.default_rng([seed, 2**31]).random()
    u = (start + index * GOLDEN) % 1.0
    edge = 0.0
    for kind, weight in mix.items():
        edge += weight
        if u < edge:
            return kind
    return next(kind for kind, weight in reversed(mix.items()) if weight)


def _size_for(rng: np.random.Generator, kind: str, sizes: list[tuple[int, int]],
              weights: np.ndarray) -> tuple[int, int]:
    width, height = sizes[rng.choice(len(sizes), p=weights)]
    if rng.random() < PORTRAIT_SHARE:
        width, height = height, width
    if kind.startswith("gif") and max(width, height) > GIF_MAX_EDGE:
        scale = GIF_MAX_EDGE / max(width, height)
        width, height = round(width * scale), round(height * scale)
    return width, height


# ---------------------------------------------------------------- drawing


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, 3))


def _smooth(rng: np.random.Generator, size: tuple[int, int], cells: tuple[int, int],
            amplitude: float, channels: int = 3) -> np.ndarray:
    """Low-frequency noise: a few random cells, upscaled bicubically, centred on 0."""
    grid = rng.integers(0, 256, (cells[1], cells[0], channels), dtype=np.uint8)
    img = Image.fromarray(grid[..., 0] if channels == 1 else grid)
    smooth = np.asarray(img.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    if channels == 1:
        smooth = smooth[..., None]
    return (smooth - 128) * (amplitude / 128)


def _scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Sky-to-ground gradient with colour drift: the backdrop of a photo."""
    sky, ground = np.array(_colour(rng, 90, 240)), np.array(_colour(rng, 20, 160))
    rows, cols = 6, 8
    t = np.linspace(0, 1, rows)[:, None, None] ** rng.uniform(0.6, 1.6)
    tiny = sky * (1 - t) + ground * t + rng.normal(0, 12, (rows, cols, 3))
    tiny = np.clip(tiny, 0, 255).astype(np.uint8)
    return Image.fromarray(tiny).resize(size, Image.Resampling.BICUBIC)


def _shapes(rng: np.random.Generator, img: Image.Image, count: int, alpha: bool = False) -> None:
    """Draw ``count`` objects (ellipses, boxes, triangles) onto ``img`` in place."""
    draw = ImageDraw.Draw(img, "RGBA")
    width, height = img.size
    for _ in range(count):
        x, y = rng.uniform(-0.1, 1.0) * width, rng.uniform(0.0, 1.0) * height
        w, h = rng.uniform(0.05, 0.4) * width, rng.uniform(0.05, 0.4) * height
        fill = (*_colour(rng), int(rng.integers(140, 256)) if alpha else 255)
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x, y, x + w, y + h), fill=fill)
        elif shape == 1:
            draw.rectangle((x, y, x + w, y + h), fill=fill)
        else:
            draw.polygon([(x, y + h), (x + w / 2, y), (x + w, y + h)], fill=fill)


def _grain(rng: np.random.Generator, img: Image.Image, sigma: float) -> Image.Image:
    """Full-resolution luminance grain, as camera sensors add.

    The grain is one random tile repeated: drawing a fresh normal variate per pixel
    would double a photo's generation time, and a 509 px tile (not a multiple of JPEG's
    8 px blocks) compresses exactly like unrepeated grain.
    """
    size = GRAIN_TILE_PX
    tile = rng.standard_normal((size, size), dtype=np.float32) * sigma + 128
    tile_img = Image.fromarray(np.clip(tile, 0, 255).astype(np.uint8))
    layer = Image.new("L", img.size)
    shift = rng.integers(0, size, 2)
    for y in range(-int(shift[1]), img.height, size):
        for x in range(-int(shift[0]), img.width, size):
            layer.paste(tile_img, (x, y))
    return ImageChops.add(img, Image.merge("RGB", (layer,) * 3), scale=1.0, offset=-128)


def render_photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like RGB image: composed at 1/4 size, upscaled smoothly, then grained.

    Args:
        width: Output width in px.
        height: Output height in px.
        rng: The random generator; the same state gives the same pixels.

    Returns:
        The image, mode RGB.
    """
    mid = (max(8, width // 4), max(8, height // 4))
    img = _scene(rng, mid)
    _shapes(rng, img, int(rng.integers(3, 9)))
    coarse, fine = (mid[0] // 24 + 2, mid[1] // 24 + 2), (mid[0] // 6 + 2, mid[1] // 6 + 2)
    # Mostly brightness variation, a little colour: natural scenes vary in light more than hue.
    texture = _smooth(rng, mid, coarse, 26, channels=1) + _smooth(rng, mid, coarse, 6)
    texture += _smooth(rng, mid, fine, 14, channels=1)
    pixels = np.clip(np.asarray(img, dtype=np.int16) + texture, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC)
    return _grain(rng, img, float(rng.uniform(3.0, 6.0)))


def render_graphic(width: int, height: int, rng: np.random.Generator, alpha: bool = False) -> Image.Image:
    """A screenshot/logo-like image: flat shapes with sharp edges on a gradient.

    With ``alpha`` the background is transparent and shapes are partly translucent
    (mode RGBA); otherwise mode RGB.
    """
    if alpha:
        img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    else:
        img = _scene(rng, (width, height))
    _shapes(rng, img, int(rng.integers(4, 12)), alpha=alpha)
    return img


def _encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _animated_gif(width: int, height: int, rng: np.random.Generator) -> bytes:
    """A few frames of a ball crossing a graphic, sharing the first frame's palette."""
    backdrop = render_graphic(width, height, rng)
    radius, colour = max(4, min(width, height) // 8), _colour(rng)
    frames = []
    for step in range(int(rng.integers(3, 7))):
        frame = backdrop.copy()
        x = (step + 1) * width // 8
        ImageDraw.Draw(frame).ellipse((x, height // 3, x + radius * 2, height // 3 + radius * 2), fill=colour)
        frames.append(frame)
    first = frames[0].quantize(64)
    rest = [f.quantize(palette=first, dither=Image.Dither.NONE) for f in frames[1:]]
    return _encode(first, "GIF", save_all=True, append_images=rest, duration=120, loop=0)


def _render(kind: str, width: int, height: int, rng: np.random.Generator) -> bytes:
    if kind == "jpeg":
        quality = int(rng.choice(JPEG_QUALITIES))
        return _encode(render_photo(width, height, rng), "JPEG", quality=quality)
    if kind in ("png", "png_alpha"):
        return _encode(render_graphic(width, height, rng, alpha=kind == "png_alpha"), "PNG")
    if kind == "gif":
        return _encode(render_graphic(width, height, rng).quantize(64), "GIF")
    return _animated_gif(width, height, rng)


# ---------------------------------------------------------------- pool


def generate_pool(n: int, seed: int = 0,
                  sizes: Sequence[tuple[int, int]] | Mapping[tuple[int, int], float] | None = None,
                  mix: Mapping[str, float] | None = None) -> list[PoolImage]:
    """Generate ``n`` upload candidates, byte-identical for the same arguments.

    Image ``i`` depends only on ``(seed, i)`` and the sizes and mix, so a smaller pool
    is a prefix of a larger one.

    Args:
        n: How many images.
        seed: A non-negative integer.
        sizes: ``(width, height)`` choices, or a mapping of them to weights. Default
            :data:`DEFAULT_SIZES` (640x480 up to 4000x3000; a fifth turned portrait).
        mix: Kind -> weight (kinds: ``jpeg``, ``png``, ``png_alpha``, ``gif``,
            ``gif_animated``). Default :data:`DEFAULT_MIX`, mostly JPEG.

    Returns:
        The images, in index order.

    Raises:
        LabConfigError: A bad ``n``, ``seed``, ``sizes`` or ``mix``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise LabConfigError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LabConfigError(f"seed must be a non-negative integer, got {seed!r}")
    weights_by_kind = _check_mix(mix)
    size_list, size_weights = _check_sizes(sizes)
    key = (tuple(map(tuple, size_list)), tuple(size_weights), tuple(sorted(weights_by_kind.items())))
    return [_pool_image(seed, index, key) for index in range(n)]


@lru_cache(maxsize=64)
def _pool_image(seed: int, index: int, choices: tuple) -> PoolImage:
    """Image ``index`` of the pool of ``seed``; remembered, since rendering takes tens of ms and a
    lab uploads the same pool again and again (each experiment, each repetition)."""
    sizes, size_weights, by_kind = choices
    size_list, weights_by_kind = [tuple(s) for s in sizes], dict(by_kind)
    rng = np.random.default_rng([seed, index])
    kind = _kind_at(index, seed, weights_by_kind)
    width, height = _size_for(rng, kind, size_list, list(size_weights))
    fmt, ext, content_type = KINDS[kind]
    return PoolImage(f"pool/{seed}/{index:04d}-{width}x{height}.{ext}", _render(kind, width, height, rng), content_type,
                     width, height, fmt, kind)


def write_pool(pool: Sequence[PoolImage], directory: str | Path) -> list[Path]:
    """Write each image to ``directory/<key>`` (creating folders); return the paths."""
    root = Path(directory)
    paths = []
    for image in pool:
        path = root / image.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.data)
        paths.append(path)
    return paths
