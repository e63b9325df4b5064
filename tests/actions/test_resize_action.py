"""Unit tests of the resize action (stack/actions/resize.py), without S3.

The image work is exercised through ``resize_image``; storage through fake minio
clients; ``main`` with the storage functions stubbed. End-to-end tests against the
real gateways live with the stack tests.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import urllib3
from minio.error import S3Error
from PIL import Image, ImageFile

from labkit.pipeline.bad_inputs import BAD_INPUT_EXPECTED, bad_input_corpus
from labkit.pipeline.images import render_photo

MAX_PIXELS = 50_000_000
FORMATS = ("JPEG", "PNG", "WEBP")
SECRET = "s3cr3t-do-not-leak-Zq9"
BASE_ARGS = {
    "bucket": "dit247", "key": "photos/cat.png", "s3_endpoint": "http://127.0.0.1:7070",
    "s3_access_key": "lab-access", "s3_secret_key": SECRET,
}


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    return bad_input_corpus()


def jpeg(width: int, height: int, seed: int = 0, quality: int = 90, **options) -> bytes:
    buffer = io.BytesIO()
    render_photo(width, height, np.random.default_rng(seed)).save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def outcome(action, data: bytes, fmt: str = "JPEG", max_edge: int = 640, max_pixels: int = MAX_PIXELS):
    """("ok", image, info) or (error code, None, message)."""
    try:
        out, info = action.resize_image(data, max_edge, fmt, 85, max_pixels)
    except action.ActionError as exc:
        return exc.code, None, exc.message
    return "ok", Image.open(io.BytesIO(out)), info


def assert_fits(img: Image.Image, info: dict, max_edge: int) -> None:
    """Longest edge within max_edge (never upscaled) and the aspect ratio kept within 1 px."""
    w_in, h_in = info["width_in"], info["height_in"]
    assert max(img.size) == min(max_edge, max(w_in, h_in))
    assert (img.width, img.height) == (info["width_out"], info["height_out"])
    if img.width >= img.height:
        assert abs(img.height - h_in * img.width / w_in) <= 1
    else:
        assert abs(img.width - w_in * img.height / h_in) <= 1


# ---------------------------------------------------------------- the bad-input corpus


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(BAD_INPUT_EXPECTED))
def test_corpus_gives_a_correct_image_or_the_right_error(action, corpus, name, fmt):
    code, img, detail = outcome(action, corpus[name], fmt)
    assert code == BAD_INPUT_EXPECTED[name], detail
    if code == "ok":
        assert img.format == fmt
        assert_fits(img, detail, 640)
        assert detail["bytes_out"] > 0 and detail["format"] == fmt
        img.load()  # the output decodes completely


def test_truncated_images_stay_rejected_even_if_someone_loads_truncated_images(action, corpus, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert outcome(action, corpus["truncated.jpg"])[0] == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the action restores what it found


def test_pillow_globals_are_restored(action, corpus):
    before = Image.MAX_IMAGE_PIXELS
    outcome(action, corpus["bomb.png"], max_pixels=1000)
    outcome(action, corpus["alpha.png"], max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == before


def test_max_pixels_is_checked_before_decoding(action):
    data = jpeg(400, 300)
    assert outcome(action, data, max_pixels=400 * 300)[0] == "ok"
    code, _, message = outcome(action, data, max_pixels=400 * 300 - 1)
    assert code == "decompression_bomb" and "max_pixels" in message


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize(("size", "max_edge"), [
    ((1920, 1080), 640), ((1080, 1920), 640), ((4000, 3000), 640), ((1001, 333), 100),
    ((640, 480), 640), ((300, 200), 640), ((2000, 17), 16), ((777, 555), 8192),
])
def test_fits_within_max_edge_keeping_aspect_and_never_upscales(action, size, max_edge):
    code, img, info = outcome(action, jpeg(*size), max_edge=max_edge)
    assert code == "ok"
    assert_fits(img, info, max_edge)


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_is_the_requested_format_without_exif(action, corpus, fmt):
    code, img, info = outcome(action, corpus["exif-rotated.jpg"], fmt)
    assert code == "ok" and img.format == fmt
    assert info["content_type"] == f"image/{fmt.lower()}"
    assert not dict(img.getexif())


# ---------------------------------------------------------------- modes and orientation


def test_exif_orientation_is_applied(action, corpus):
    code, img, info = outcome(action, corpus["exif-rotated.jpg"])
    assert code == "ok" and info["orientation"] == 6
    assert img.size == (300, 400)  # stored 400x300 landscape, displayed portrait
    right, left = img.getpixel((img.width - 5, 200)), img.getpixel((5, 200))
    assert right[0] > 200 and right[2] < 60  # the stored top stripe is now on the right
    assert left[2] > 150


def test_exif_orientation_with_draft_on_a_big_jpeg(action):
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encoded(render_photo(2400, 1600, np.random.default_rng(1)), "JPEG", exif=exif.tobytes())
    code, img, info = outcome(action, data)
    assert code == "ok" and info["draft_scale"] == 2
    assert (info["width_in"], info["height_in"]) == (1600, 2400)
    assert img.size == (427, 640)


def test_rgba_over_white_for_jpeg_and_alpha_kept_for_png_and_webp(action, corpus):
    code, img, _ = outcome(action, corpus["alpha.png"], "JPEG")
    assert img.mode == "RGB"
    assert min(img.getpixel((20, 50))) >= 250  # transparent half -> white
    red = img.getpixel((180, 50))
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    for fmt in ("PNG", "WEBP"):
        _, img, _ = outcome(action, corpus["alpha.png"], fmt)
        assert img.mode == "RGBA" and img.getpixel((20, 50))[3] == 0 and img.getpixel((180, 50))[3] == 255


def test_grey_alpha_and_palette_transparency_over_white(action, corpus):
    _, la, _ = outcome(action, corpus["la.png"])
    assert la.getpixel((0, 60)) >= 250  # fully transparent column
    _, palette, _ = outcome(action, corpus["palette-transparent.png"])
    assert min(palette.getpixel((110, 70))) >= 250  # index 0 is transparent
    _, opaque, _ = outcome(action, corpus["palette.png"])
    assert opaque.getpixel((110, 70))[2] < 60  # index 0 is yellow when opaque


def test_16_bit_grey_is_scaled_not_clipped(action, corpus):
    code, img, info = outcome(action, corpus["gray16.png"])
    assert code == "ok" and info["mode_in"] == "I;16"
    low, high = img.getextrema()
    assert low <= 10 and high >= 245
    assert 100 < np.asarray(img).mean() < 155  # a full-range ramp averages mid-grey


def test_animated_gif_gives_its_first_frame(action, corpus):
    for fmt in FORMATS:
        code, img, _ = outcome(action, corpus["animated.gif"], fmt)
        assert code == "ok" and getattr(img, "n_frames", 1) == 1
        r, g, b = img.convert("RGB").getpixel((45, 30))
        assert r > 220 and g < 40 and b < 40


def test_cmyk_comes_out_as_rgb_with_its_colours(action):
    data = encoded(Image.new("RGB", (64, 64), (200, 40, 40)).convert("CMYK"), "JPEG", quality=95)
    code, img, info = outcome(action, data)
    assert code == "ok" and info["mode_in"] == "CMYK" and img.mode == "RGB"
    assert np.allclose(img.getpixel((32, 32)), (200, 40, 40), atol=12)


@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pillow_mode_converts_or_is_refused_cleanly(action, mode):
    img = Image.new(mode, (8, 8))
    try:
        out = action.to_working_mode(img)
    except action.ActionError as exc:
        assert exc.code == "unsupported"
    else:
        assert out.mode in ("L", "LA", "RGB", "RGBA")
        for fmt in FORMATS:
            action.encode(action.for_encoder(out, fmt), fmt, 85, None)


@pytest.mark.parametrize(("mode", "pixels"), [
    ("I", np.arange(0, 64 * 64 * 16, 16, dtype=np.int32).reshape(64, 64)),
    ("F", np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)),
    ("I;16", np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)),
])
def test_wide_tiffs_keep_their_tones(action, mode, pixels):
    img = Image.fromarray(pixels)
    assert img.mode == mode
    code, out, _ = outcome(action, encoded(img, "TIFF"))
    assert code == "ok"
    low, high = out.getextrema()
    assert low <= 10 and high >= 240


# ---------------------------------------------------------------- draft mode


@pytest.mark.parametrize(("size", "scale"), [((1920, 1080), 2), ((4000, 3000), 4), ((640, 480), 1)])
def test_draft_mode_decodes_big_jpegs_at_reduced_scale(action, size, scale):
    code, img, info = outcome(action, jpeg(*size, quality=85))
    assert code == "ok" and info["draft_scale"] == scale
    assert max(img.size) == 640


def test_draft_mode_reduces_the_decoded_size(action):
    img = Image.open(io.BytesIO(jpeg(4000, 3000, quality=85)))
    assert action.apply_draft(img, (640, 480), 1) == 4
    img.load()
    assert img.size == (1000, 750)


def test_draft_mode_is_not_used_for_png(action, corpus):
    code, _, info = outcome(action, corpus["wide.png"])
    assert code == "ok" and info["draft_scale"] == 1


# ---------------------------------------------------------------- parameters


def params(**changes):
    args = dict(BASE_ARGS)
    for name, value in changes.items():
        if value is ...:
            args.pop(name, None)
        else:
            args[name] = value
    return args


def test_defaults(action):
    p = action.parse_params(params())
    assert (p.target_bucket, p.max_edge, p.fmt, p.quality) == ("dit247c", 640, "JPEG", 85)
    assert p.s3_out_endpoint == p.s3_endpoint == "http://127.0.0.1:7070"
    assert p.allowed_source_buckets == ("dit247",) and p.allowed_target_buckets == ("dit247c",)
    assert (p.max_pixels, p.max_bytes) == (50_000_000, 60 * 1024 * 1024)
    assert SECRET not in repr(p)


def test_accepted_spellings(action):
    p = action.parse_params(params(max_edge="320", format="jpg", quality=95,
                                   s3_out_endpoint="https://out.example:9000/",
                                   allowed_source_buckets="dit247, other", trace_id="t-1"))
    assert (p.max_edge, p.fmt, p.quality) == (320, "JPEG", 95)
    assert p.s3_out_endpoint == "https://out.example:9000"
    assert p.allowed_source_buckets == ("dit247", "other") and p.trace_id == "t-1"


BAD_PARAMETERS = [
    ("bucket", ...), ("bucket", "Bad_Bucket"), ("bucket", 7), ("bucket", "ab"),
    ("key", ...), ("key", ""), ("key", "dir/"), ("key", "a\nb.jpg"), ("key", "a/../b.jpg"),
    ("key", "./b.jpg"), ("key", "k" * 1025), ("key", ["a.jpg"]), ("key", "\udcff.jpg"),
    ("target_bucket", "UPPER"), ("max_edge", 15), ("max_edge", 8193), ("max_edge", "big"),
    ("max_edge", 640.5), ("max_edge", True), ("max_edge", None), ("format", "GIF"), ("format", 5),
    ("quality", 0), ("quality", 96), ("s3_endpoint", ...), ("s3_endpoint", "ftp://host:21"),
    ("s3_endpoint", "http://host:7070/bucket"), ("s3_endpoint", "http://user:pw@host:7070"),
    ("s3_endpoint", "not a url"), ("s3_endpoint", "http://host:99999"), ("s3_out_endpoint", "x"),
    ("s3_access_key", ...), ("s3_secret_key", ""), ("allowed_source_buckets", []),
    ("allowed_target_buckets", 5), ("allowed_target_buckets", ["ok-bucket", "No"]),
    ("max_pixels", 0), ("max_bytes", -1), ("trace_id", "has space"), ("trace_id", "x" * 129),
    ("t_event_ms", "soon"), ("t_event_ms", float("nan")), ("t_event_ms", False),
]


@pytest.mark.parametrize(("name", "value"), BAD_PARAMETERS)
def test_bad_parameters_are_rejected(action, name, value):
    with pytest.raises(action.ActionError) as caught:
        action.parse_params(params(**{name: value}))
    assert caught.value.code == "bad_parameter"
    assert caught.value.extra["parameter"] == name


def test_output_key_too_long_is_a_bad_parameter(action):
    with pytest.raises(action.ActionError) as caught:
        action.parse_params(params(key="k" * 1024))  # no extension: ".jpg" is appended
    assert caught.value.code == "bad_parameter"


@pytest.mark.parametrize("changes", [
    {"bucket": "secrets"},
    {"target_bucket": "elsewhere"},
    {"target_bucket": "dit247", "allowed_target_buckets": ["dit247", "dit247c"]},
    {"bucket": "dit247c", "target_bucket": "dit247c", "allowed_source_buckets": ["dit247c"]},
])
def test_forbidden_buckets_are_rejected(action, changes):
    with pytest.raises(action.ActionError) as caught:
        action.parse_params(params(**changes))
    assert caught.value.code == "forbidden_bucket"


def test_allow_lists_can_be_widened_at_deploy_time(action):
    p = action.parse_params(params(bucket="uploads", target_bucket="thumbs",
                                   allowed_source_buckets=["dit247", "uploads"],
                                   allowed_target_buckets=["dit247c", "thumbs"]))
    assert (p.bucket, p.target_bucket) == ("uploads", "thumbs")


# ---------------------------------------------------------------- output keys


@pytest.mark.parametrize(("key", "fmt", "expected"), [
    ("a/b/cat.png", "JPEG", "a/b/cat.jpg"),
    ("a/b/cat.png", "PNG", "a/b/cat.png"),
    ("a/b/cat.png", "WEBP", "a/b/cat.webp"),
    ("cat.JPEG", "JPEG", "cat.jpg"),
    ("cat", "JPEG", "cat.jpg"),
    ("scan.2024", "JPEG", "scan.2024.jpg"),
    ("a.b/c", "PNG", "a.b/c.png"),
    ("a/.hidden", "JPEG", "a/.hidden.jpg"),
    ("archive.tar.gif", "JPEG", "archive.tar.jpg"),
    ("pool/0/0001-1920x1080.jpg", "JPEG", "pool/0/0001-1920x1080.jpg"),
    ("dir with space/my cat+1%20.png", "JPEG", "dir with space/my cat+1%20.jpg"),
    ("ünïcödé/猫の写真.jpeg", "WEBP", "ünïcödé/猫の写真.webp"),
    ("/leading/slash.tif", "JPEG", "/leading/slash.jpg"),
    ("a//b.png", "JPEG", "a//b.jpg"),
])
def test_output_key_rule(action, key, fmt, expected):
    assert action.output_key(key, fmt) == expected
    assert action.output_key(key, fmt) == action.output_key(key, fmt)


def test_trace_id_is_deterministic(action):
    one = action.derive_trace_id("dit247", "a/cat.jpg", "abc")
    assert one == action.derive_trace_id("dit247", "a/cat.jpg", "abc")
    assert len(one) == 32 and one != action.derive_trace_id("dit247", "a/cat.jpg", "abd")


# ---------------------------------------------------------------- storage, with fake clients


class FakeResponse:
    def __init__(self, body: bytes, headers: dict[str, str]):
        self.body, self.headers, self.closed = body, urllib3.HTTPHeaderDict(headers), False
        self.reads = 0

    def read(self) -> bytes:
        self.reads += 1
        return self.body

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message from S3", "/dit247/x", "req", "host")


class FakeClient:
    """Answers get (with If-Match), stat and put like minio, from a dict of objects.

    ``on_stat`` and ``on_put`` are callables run (and used up) one per stat or put, before the
    stat answers or after the put is stored: uploads of newer versions landing at that moment.
    """

    def __init__(self, objects=None, fail: Exception | None = None):
        self.objects = dict(objects or {})  # (bucket, key) -> (body, headers)
        self.fail, self.gets, self.puts, self.stats = fail, 0, [], 0
        self.on_stat, self.on_put, self.if_match = [], [], []

    def _object(self, bucket, key):
        if self.fail:
            raise self.fail
        if (bucket, key) not in self.objects:
            raise s3_error("NoSuchKey")
        return self.objects[(bucket, key)]

    def etag(self, bucket, key) -> str:
        headers = {k.lower(): v for k, v in self._object(bucket, key)[1].items()}
        return headers.get("etag", "").strip('"')

    def get_object(self, bucket, key, request_headers=None):
        self.gets += 1
        body, headers = self._object(bucket, key)
        wanted = (request_headers or {}).get("If-Match")
        self.if_match.append(wanted)
        if wanted is not None and wanted.strip('"') != self.etag(bucket, key):
            raise s3_error("PreconditionFailed")
        self.response = FakeResponse(body, {"content-length": str(len(body)), **headers})
        return self.response

    def stat_object(self, bucket, key):
        self.stats += 1
        if self.on_stat:
            self.on_stat.pop(0)()
        return type("Stat", (), {"etag": self.etag(bucket, key)})()

    def put_object(self, bucket, key, data, length, content_type, metadata):
        if self.fail:
            raise self.fail
        self.puts.append({"bucket": bucket, "key": key, "data": data.read(), "length": length,
                          "content_type": content_type, "metadata": metadata})
        if self.on_put:
            self.on_put.pop(0)()
        return type("Written", (), {"etag": '"out-etag"'})()


def test_fetch_reads_etag_and_user_metadata(action):
    client = FakeClient({("dit247", "k.jpg"): (b"body", {
        "ETag": '"abc123"', "X-Amz-Meta-T-Upload-Start": "1700000000000.5", "x-amz-meta-t-uploaded": "1700000000100"})})
    source = action.fetch_source(client, "dit247", "k.jpg", 100)
    assert (source.data, source.etag) == (b"body", "abc123")
    assert source.metadata == {"t-upload-start": "1700000000000.5", "t-uploaded": "1700000000100"}
    assert action.timestamps(source) == {"t_upload_start_ms": 1700000000000.5, "t_uploaded_ms": 1700000000100.0}


def test_fetch_refuses_too_large_objects_before_reading(action):
    client = FakeClient({("dit247", "big.jpg"): (b"x" * 101, {})})
    with pytest.raises(action.ActionError) as caught:
        action.fetch_source(client, "dit247", "big.jpg", 100)
    assert caught.value.code == "too_large"
    assert client.gets == 1 and client.response.reads == 0 and client.response.closed


@pytest.mark.parametrize(("fail", "code", "retryable"), [
    (None, "not_found", False),
    (s3_error("AccessDenied"), "storage_error", False),
    (s3_error("ServiceUnavailable"), "storage_error", True),
    (urllib3.exceptions.MaxRetryError(None, "/", "connection refused"), "storage_error", True),
])
def test_fetch_failures_are_classified(action, fail, code, retryable):
    with pytest.raises(action.ActionError) as caught:
        action.fetch_source(FakeClient(fail=fail), "dit247", "missing.jpg", 100)
    assert caught.value.code == code
    assert caught.value.extra.get("retryable", False) is retryable  # the flow retries only these


def test_output_metadata(action):
    source = action.Source(b"", "abc", {"t-upload-start": "1", "t-uploaded": "2", "other": "x"})
    meta = action.output_metadata(source, "dir/ü cat+%.png", "trace-1")
    assert meta == {"source-etag": "abc", "trace-id": "trace-1", "source-key": "dir/%C3%BC%20cat%2B%25.png",
                    "t-upload-start": "1", "t-uploaded": "2"}
    assert all(value.isascii() for value in meta.values())


def test_clients_are_cached_per_endpoint_and_credentials(action):
    one = action.client_for("http://127.0.0.1:7070", "ak", "sk", "us-east-1")
    assert action.client_for("http://127.0.0.1:7070", "ak", "sk", "us-east-1") is one
    assert action.client_for("http://127.0.0.1:7071", "ak", "sk", "us-east-1") is not one
    assert action.client_for("http://127.0.0.1:7070", "ak", "rotated", "us-east-1") is not one


# ---------------------------------------------------------------- main()


@pytest.fixture
def stack(action, monkeypatch):
    """main() wired to fake in/out clients; returns (in client, out client)."""
    clients = {"http://127.0.0.1:7070": FakeClient(), "http://127.0.0.1:7071": FakeClient()}
    monkeypatch.setattr(action, "client_for", lambda endpoint, *rest: clients[endpoint])
    return clients["http://127.0.0.1:7070"], clients["http://127.0.0.1:7071"]


RESULT_FIELDS = {"bucket_out", "key_out", "trace_id", "source_etag", "width_in", "height_in", "width_out",
                 "height_out", "bytes_in", "bytes_out", "format", "download_ms", "resize_ms", "upload_ms",
                 "t_action_start_ms", "t_action_end_ms"}


def test_main_resizes_and_stores(action, stack, capsys):
    source, out = stack
    data = jpeg(1920, 1080)
    source.objects[("dit247", "up/ü cat.jpg")] = (data, {
        "etag": '"e1"', "x-amz-meta-t-upload-start": "1000", "x-amz-meta-t-uploaded": "1500"})
    result = action.main(params(key="up/ü cat.jpg", s3_out_endpoint="http://127.0.0.1:7071",
                                format="WEBP", t_event_ms=1600))
    assert RESULT_FIELDS <= result.keys() and "error" not in result
    assert (result["bucket_out"], result["key_out"], result["format"]) == ("dit247c", "up/ü cat.webp", "WEBP")
    assert (result["width_out"], result["height_out"], result["bytes_in"]) == (640, 360, len(data))
    assert result["trace_id"] == action.derive_trace_id("dit247", "up/ü cat.jpg", "e1")
    assert (result["t_upload_start_ms"], result["t_uploaded_ms"], result["t_event_ms"]) == (1000, 1500, 1600)
    assert result["t_action_start_ms"] <= result["t_action_end_ms"]
    [put] = out.puts
    assert (put["bucket"], put["key"], put["content_type"]) == ("dit247c", "up/ü cat.webp", "image/webp")
    assert put["length"] == result["bytes_out"] == len(put["data"])
    assert Image.open(io.BytesIO(put["data"])).format == "WEBP"
    assert put["metadata"] == {"source-etag": "e1", "trace-id": result["trace_id"],
                               "source-key": "up/%C3%BC%20cat.jpg", "t-upload-start": "1000",
                               "t-uploaded": "1500"}
    assert source.puts == []  # writes go through the out endpoint only
    json.dumps(result)
    assert SECRET not in json.dumps(result) + capsys.readouterr().out


def test_main_retry_overwrites_the_same_key(action, stack):
    source, out = stack
    source.objects[("dit247", "photos/cat.png")] = (encoded(Image.new("RGB", (50, 40), "red"), "PNG"), {"etag": "x"})
    args = params(trace_id="given", s3_out_endpoint="http://127.0.0.1:7071")
    first, second = action.main(args), action.main(args)
    assert first["key_out"] == second["key_out"] == "photos/cat.jpg" and first["trace_id"] == "given"
    assert [p["key"] for p in out.puts] == ["photos/cat.jpg", "photos/cat.jpg"]
    assert out.puts[0]["data"] == out.puts[1]["data"]


@pytest.mark.parametrize("name", ["truncated.jpg", "bomb.png", "text.jpg", "corrupt.jpg"])
def test_main_never_reports_success_for_a_bad_image(action, stack, corpus, capsys, name):
    source, out = stack
    source.objects[("dit247", name)] = (corpus[name], {"etag": "e"})
    result = action.main(params(key=name))
    assert set(result) == {"error"} and out.puts == source.puts == []
    error = result["error"]
    assert error["code"] == BAD_INPUT_EXPECTED[name]
    assert (error["bucket"], error["key"]) == ("dit247", name) and error["message"]
    assert error["trace_id"] == action.derive_trace_id("dit247", name, "e")
    assert SECRET not in json.dumps(result) + capsys.readouterr().out


def test_main_errors_are_structured(action, stack):
    missing = action.main(params(key="nope.jpg"))["error"]
    assert (missing["code"], missing["key"]) == ("not_found", "nope.jpg")
    assert action.main(params(bucket="private"))["error"]["code"] == "forbidden_bucket"
    assert action.main(params(max_edge=0))["error"]["code"] == "bad_parameter"
    garbage = action.main({"bucket": ["x"], "key": {"y": 1}})["error"]
    assert garbage["code"] == "bad_parameter" and garbage["bucket"] is None and garbage["key"] is None
    assert action.main(None)["error"]["code"] == "bad_parameter"


def test_main_upload_failure_is_a_storage_error(action, stack):
    source, out = stack
    source.objects[("dit247", "photos/cat.png")] = (encoded(Image.new("RGB", (50, 40)), "PNG"), {})
    out.fail = s3_error("NoSuchBucket")
    error = action.main(params(s3_out_endpoint="http://127.0.0.1:7071"))["error"]
    assert error["code"] == "storage_error" and error["s3_code"] == "NoSuchBucket"
    assert error["trace_id"] == action.derive_trace_id("dit247", "photos/cat.png", "")


def test_main_never_raises(action, monkeypatch):
    def boom(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(action, "client_for", boom)
    error = action.main(params())["error"]
    assert error["code"] == "internal" and "a bug" in error["message"]


# ---------------------------------------------------------------- versions: the event's, or none


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def versions(action, stack):
    """Two versions of ``photos/cat.png``: v1 (1600x1200) in the store, v2 (320x240) to upload later."""
    source, out = stack
    v1, v2 = jpeg(1600, 1200, seed=1), jpeg(320, 240, seed=2)
    source.objects[("dit247", "photos/cat.png")] = (v1, {"ETag": f'"{md5(v1)}"'})

    def upload_v2() -> None:
        source.objects[("dit247", "photos/cat.png")] = (v2, {"ETag": f'"{md5(v2)}"'})

    return source, out, (v1, md5(v1)), (v2, md5(v2)), upload_v2


def version_args(etag: str) -> dict:
    return params(etag=etag, s3_out_endpoint="http://127.0.0.1:7071", trace_id="t-1", t_event_ms=5)


def test_the_read_is_conditional_on_the_events_etag(action, versions):
    source, out, (_, e1), _, _ = versions
    result = action.main(version_args(f'"{e1}"'))
    assert "error" not in result and not result.get("superseded")
    assert source.if_match == [f'"{e1}"'] and result["source_etag"] == e1
    [put] = out.puts
    assert put["metadata"]["source-etag"] == e1 and Image.open(io.BytesIO(put["data"])).size == (640, 480)
    assert source.stats == 2  # the source's version, looked up before and after the write


def test_an_event_for_a_replaced_version_is_superseded_at_the_read(action, versions, capsys):
    source, out, (_, e1), (_, e2), upload_v2 = versions
    upload_v2()
    result = action.main(version_args(e1))
    assert "error" not in result and out.puts == []
    assert {k: result[k] for k in ("superseded", "found_at", "source_etag", "current_etag", "repaired")} == {
        "superseded": True, "found_at": "read", "source_etag": e1, "current_etag": e2, "repaired": False}
    assert (result["key"], result["key_out"], result["trace_id"], result["t_event_ms"]) == (
        "photos/cat.png", "photos/cat.jpg", "t-1", 5)
    assert result["t_action_start_ms"] <= result["t_action_end_ms"]
    assert '"superseded": true' in capsys.readouterr().out


def test_a_version_replaced_during_the_resize_writes_nothing(action, versions):
    source, out, (_, e1), (_, e2), upload_v2 = versions
    source.on_stat.append(upload_v2)  # v2 lands while v1 is being resized
    result = action.main(version_args(e1))
    assert (result["superseded"], result["found_at"], result["current_etag"]) == (True, "before_write", e2)
    assert out.puts == []


def test_a_write_overtaken_by_a_newer_version_puts_the_newer_output_back(action, versions):
    source, out, (_, e1), (_, e2), upload_v2 = versions
    out.on_put.append(upload_v2)  # v2 lands (and its own output may already be written) during v1's write
    result = action.main(version_args(e1))
    assert (result["superseded"], result["found_at"], result["current_etag"], result["repaired"]) == (
        True, "after_write", e2, True)
    assert [put["metadata"]["source-etag"] for put in out.puts] == [e1, e2]
    assert Image.open(io.BytesIO(out.puts[-1]["data"])).size == (320, 240)  # the last write is v2's
    assert out.puts[-1]["metadata"]["trace-id"] == action.derive_trace_id("dit247", "photos/cat.png", e2)


def test_rewrites_stop_after_max_repairs(action, versions):
    source, out, (_, e1), _, _ = versions

    def another_version(n: int):
        def land() -> None:
            data = jpeg(64, 48, seed=10 + n)
            source.objects[("dit247", "photos/cat.png")] = (data, {"ETag": f'"{md5(data)}"'})
        return land

    out.on_put.extend(another_version(n) for n in range(10))  # a new version during every write
    result = action.main(version_args(e1))
    assert result["found_at"] == "after_write" and result["repaired"]
    assert len(out.puts) == 1 + action.MAX_REPAIRS


def test_a_newer_version_that_is_no_image_is_left_to_its_own_event(action, versions):
    source, out, (_, e1), _, _ = versions

    def bad_v2() -> None:
        source.objects[("dit247", "photos/cat.png")] = (b"not an image", {"ETag": f'"{md5(b"not an image")}"'})

    out.on_put.append(bad_v2)
    result = action.main(version_args(e1))
    assert (result["found_at"], result["current_etag"], result["repaired"]) == (
        "after_write", md5(b"not an image"), False)
    assert len(out.puts) == 1


def test_bytes_that_are_not_the_etags_version_are_not_read_as_it(action, versions):
    source, _, (v1, e1), (v2, e2), _ = versions
    source.objects[("dit247", "photos/cat.png")] = (v2, {"ETag": f'"{e1}"'})  # the header says v1, the bytes are v2
    source.on_stat.append(lambda: source.objects.update({("dit247", "photos/cat.png"): (v2, {"ETag": e2})}))
    with pytest.raises(action.Superseded) as caught:
        action.fetch_source(source, "dit247", "photos/cat.png", 10**8, e1)
    assert (caught.value.found_at, caught.value.current_etag, caught.value.source_etag) == ("read", e2, e1)
    # an ETag that is not the bytes' MD5 but still the current version's is taken as it is
    source.objects[("dit247", "photos/cat.png")] = (v1, {"ETag": '"0123456789abcdef0123456789abcdef"'})
    assert action.fetch_source(source, "dit247", "photos/cat.png", 10**8).data == v1


def test_without_an_etag_the_current_version_is_read(action, versions):
    source, out, (_, e1), _, _ = versions
    result = action.main(params(s3_out_endpoint="http://127.0.0.1:7071"))
    assert source.if_match == [None] and result["source_etag"] == e1 and len(out.puts) == 1


@pytest.mark.parametrize("etag", ["", 'a"b', "with space", "x" * 129, 12])
def test_a_bad_etag_is_a_bad_parameter(action, etag):
    error = action.main(params(etag=etag))["error"]
    assert (error["code"], error["parameter"]) == ("bad_parameter", "etag")


def test_a_source_gone_before_the_write_still_gets_its_output(action, versions):
    source, out, (_, e1), _, _ = versions
    source.on_stat.append(lambda: source.objects.pop(("dit247", "photos/cat.png")))
    result = action.main(version_args(e1))
    assert not result.get("superseded") and len(out.puts) == 1
