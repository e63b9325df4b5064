"""The generated image pool and bad-input corpus (labkit.pipeline.images)."""

from __future__ import annotations

import io
import struct
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from labkit.errors import LabConfigError
from labkit.pipeline.bad_inputs import BAD_INPUT_EXPECTED, bad_input_corpus
from labkit.pipeline.images import DEFAULT_SIZES, MAX_SIZE, MIN_SIZE, PoolImage, generate_pool, render_photo, write_pool


@pytest.fixture(scope="module")
def pool() -> list[PoolImage]:
    return generate_pool(50, seed=0)


def test_same_seed_same_bytes_other_seed_other_bytes(pool):
    again = generate_pool(50, seed=0)
    assert [(p.key, p.data) for p in again] == [(p.key, p.data) for p in pool]
    other = generate_pool(5, seed=1)
    assert all(o.data != p.data for o, p in zip(other, pool))


def test_a_smaller_pool_is_a_prefix(pool):
    assert generate_pool(7, seed=0) == pool[:7]


def test_keys_name_seed_index_size_and_extension(pool):
    for index, image in enumerate(pool):
        ext = {"JPEG": "jpg", "PNG": "png", "GIF": "gif"}[image.format]
        assert image.key == f"pool/0/{index:04d}-{image.width}x{image.height}.{ext}"
    assert len({p.key for p in pool}) == len(pool)


def test_each_image_is_what_it_says(pool):
    for image in pool:
        decoded = Image.open(io.BytesIO(image.data))
        assert (decoded.format, decoded.size) == (image.format, (image.width, image.height))
        assert image.content_type == Image.MIME[image.format]
        decoded.load()


def test_sizes_are_within_the_stated_range(pool):
    for image in pool:
        long_edge, short_edge = max(image.width, image.height), min(image.width, image.height)
        assert MIN_SIZE[0] <= long_edge <= MAX_SIZE[0] and MIN_SIZE[1] <= short_edge <= MAX_SIZE[1]
    assert any(p.width < p.height for p in pool)  # some portrait
    assert (1920, 1080) in DEFAULT_SIZES and MAX_SIZE in DEFAULT_SIZES
    assert {(p.width, p.height) for p in pool} & {(1920, 1080), (1080, 1920)}


def test_the_mix_is_mostly_jpeg_with_some_png_and_gif(pool):
    kinds = Counter(p.kind for p in pool)
    assert kinds["jpeg"] >= 0.75 * len(pool)
    assert kinds["png"] and kinds["png_alpha"] and kinds["gif"] and kinds["gif_animated"]
    alpha = next(p for p in pool if p.kind == "png_alpha")
    assert Image.open(io.BytesIO(alpha.data)).mode == "RGBA"
    animated = next(p for p in pool if p.kind == "gif_animated")
    assert Image.open(io.BytesIO(animated.data)).n_frames > 1


def test_big_images_are_rare_by_default(pool):
    assert DEFAULT_SIZES[MAX_SIZE] / sum(DEFAULT_SIZES.values()) < 0.05
    assert sum(p.width * p.height >= 4000 * 3000 for p in pool) <= 4


def test_photos_compress_like_photos():
    img = render_photo(1920, 1080, np.random.default_rng(0))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90)
    assert buffer.tell() > 100_000
    pixels = np.asarray(img, dtype=np.float32)
    assert pixels.std() > 20  # not a flat colour
    assert np.abs(np.diff(pixels, axis=1)).mean() > 2  # fine detail (grain), not only gradients


def test_custom_sizes_and_mix():
    pool = generate_pool(6, seed=3, sizes=[(800, 600)], mix={"png": 1})
    assert {p.kind for p in pool} == {"png"}
    assert {(p.width, p.height) for p in pool} <= {(800, 600), (600, 800)}


@pytest.mark.parametrize("kwargs", [
    {"n": -1}, {"n": 2, "seed": -1}, {"n": 2, "mix": {"tiff": 1}}, {"n": 2, "mix": {"jpeg": 0}},
    {"n": 2, "sizes": []}, {"n": 2, "sizes": [(0, 10)]},
])
def test_bad_arguments_name_the_fix(kwargs):
    with pytest.raises(LabConfigError):
        generate_pool(**kwargs)


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(LabConfigError, match="jpeg, png, png_alpha, gif, gif_animated"):
        generate_pool(1, mix={"heic": 1})


def test_write_pool(tmp_path, pool):
    paths = write_pool(pool[:3], tmp_path)
    assert [p.read_bytes() for p in paths] == [image.data for image in pool[:3]]
    assert paths[0] == tmp_path / pool[0].key


def test_corpus_is_deterministic_and_documented():
    corpus = bad_input_corpus()
    assert corpus == bad_input_corpus()
    assert corpus.keys() == BAD_INPUT_EXPECTED.keys()
    codes = set(BAD_INPUT_EXPECTED.values())
    assert {"ok", "not_an_image", "truncated", "corrupt", "decompression_bomb", "unsupported"} <= codes


def test_corpus_entries_are_what_they_claim():
    corpus = bad_input_corpus()

    def opened(name: str) -> Image.Image:
        return Image.open(io.BytesIO(corpus[name]))

    assert corpus["zero-byte.jpg"] == b""
    assert opened("gray16.png").mode == "I;16"
    assert opened("cmyk.jpg").mode == "CMYK"
    assert opened("la.png").mode == "LA"
    assert opened("alpha.png").mode == "RGBA"
    assert opened("palette.png").mode == "P" and "transparency" not in opened("palette.png").info
    assert "transparency" in opened("palette-transparent.png").info
    assert opened("animated.gif").n_frames == 3
    rotated = opened("exif-rotated.jpg")
    assert rotated.size == (400, 300) and rotated.getexif()[0x0112] == 6
    assert struct.unpack(">II", corpus["bomb.png"][16:24]) == (30000, 30000)
    assert struct.unpack("<HH", corpus["bomb.gif"][6:10]) == (30000, 30000)
    assert len(corpus["bomb.png"]) < 2000
