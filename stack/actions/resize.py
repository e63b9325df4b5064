"""The pipeline's resize action: an Apache OpenWhisk Python action (kind ``python:3.11``).

One file, deployed unchanged to labkit's runner (as source) and to a real OpenWhisk (as
``__main__.py`` in a zip with a virtualenv holding ``requirements.txt``). It needs Pillow,
minio (and minio's own HTTP transport, urllib3) and the standard library, nothing else.

It downloads ``bucket``/``key`` through ``s3_endpoint``, fits the image within
``max_edge`` x ``max_edge`` (never upscaling), and writes the result to ``target_bucket``
through ``s3_out_endpoint``.

Versions:
    A key can be uploaded again while the action works on it, so the action works on the
    version its event names (``etag``) and never lets an older version's output overwrite a
    newer one's:

    1. the read is conditional (``If-Match: etag``), so it reads that version or none (bytes
       that do not hash to a plain MD5 ETag, read while the source moved on, are a newer
       version's: versitygw checks the condition before it opens the file);
    2. just before the write, the source's current ETag is looked up again: another one
       means a newer upload is on its way through the pipeline, and nothing is written;
    3. just after the write, it is looked up once more: when the source moved on during the
       write, this write may have replaced the newer version's output, so the action resizes
       the current version and writes that instead (at most ``MAX_REPAIRS`` times).

    Whoever writes the output last checks the source after that write, so the output ends
    as the current version's. The versions the action did not resize come back as
    *superseded* (below); that is not an error. ``labkit.pipeline.reconcile`` is the backstop
    for an output that still ends stale (its stale state).

Parameters (all validated; a bad one gives a ``bad_parameter`` error):
    bucket, key: The source object. ``key`` is the decoded object key, not the
        URL-encoded form found in S3 event records.
    target_bucket: Output bucket, default ``dit247c``.
    max_edge: Longest output edge in px, 16..8192, default 640.
    format: ``JPEG`` (default), ``PNG`` or ``WEBP`` (``JPG`` is accepted for JPEG).
    quality: JPEG/WEBP quality, 1..95, default 85.
    etag: Optional; the source version to resize (the event's ETag, quotes optional).
        Without it, the version current at the read.
    trace_id: Optional; default ``sha256(bucket NUL key NUL etag)[:32]`` in hex.
    t_event_ms: Optional number, returned unchanged.
  Bound at deploy time:
    s3_endpoint: Read endpoint URL, e.g. ``http://127.0.0.1:7070``.
    s3_out_endpoint: Write endpoint URL, default ``s3_endpoint``.
    s3_access_key, s3_secret_key: Credentials (never logged nor returned).
    s3_region: Default ``us-east-1``; saves minio a bucket-location lookup.
    allowed_source_buckets: Default ``["dit247"]``.
    allowed_target_buckets: Default ``["dit247c"]``. A target that is also a source
        bucket is refused, since its output would be resized again.
    max_pixels: Decompression-bomb bound on width x height, default 50_000_000.
    max_bytes: Largest source object read, default 60 MiB.

Output key rule:
    The output key is the source key with its image extension replaced by the output
    format's (``jpg``, ``png``, ``webp``), under the same prefix:
    ``a/b/cat.png`` -> ``a/b/cat.jpg``. Only a known image extension (jpg, jpeg, jpe, jfif,
    png, gif, webp, bmp, tif, tiff, mpo, avif, heic, heif; any case) is replaced; any other
    name gets the extension appended (``scan.2024`` -> ``scan.2024.jpg``, ``.hidden`` ->
    ``.hidden.jpg``). The rest of the key (unicode, spaces, ``+``, ``%``) is kept byte for
    byte. A retry writes the same key again, so it overwrites rather than duplicates.
    ``cat.png`` and ``cat.gif`` map to the same output; ``source-key`` tells which wrote it.

Output object metadata (S3 user metadata, ASCII):
    source-etag: The ETag of the source version it was made from, quotes stripped.
    trace-id: The trace id.
    source-key: The source key, percent-encoded as UTF-8 with ``/`` kept (identical to the
        key for plain ASCII keys without spaces, ``%`` or ``+``).
    t-upload-start, t-uploaded: Copied from the source object's metadata when present.

Result on success:
    ``bucket_out, key_out, trace_id, source_etag, width_in, height_in, width_out, height_out,
    bytes_in, bytes_out, format, download_ms, resize_ms, upload_ms, t_action_start_ms,
    t_action_end_ms``, plus ``t_upload_start_ms``/``t_uploaded_ms`` (from the source's
    metadata, expected in epoch ms) and ``t_event_ms`` when known, and a few descriptive
    extras (``bucket``, ``key``, ``etag_out``, ``content_type``, ``format_in``, ``mode_in``,
    ``draft_scale``, ``orientation``). Input sizes are as displayed (after EXIF orientation).

Result when the version was superseded (not an error: a newer upload of the key replaced it):
    ``superseded: true``, ``found_at`` (``read``: the read found another version;
    ``before_write``: the source changed during the resize; ``after_write``: during the write),
    ``source_etag`` (the version asked for), ``current_etag`` (the source's version then, or
    null), ``repaired`` (the action wrote the current version's output after its own write
    was overtaken), ``bucket``, ``key``, ``bucket_out``, ``key_out``, ``trace_id``,
    ``t_action_start_ms``, ``t_action_end_ms`` and ``t_event_ms`` when known.

Errors:
    Every failure returns ``{"error": {"code", "message", "bucket", "key", ...}}``, which
    OpenWhisk records as an application error; nothing is raised to the caller. Codes:
    ``bad_parameter`` (a parameter is missing or invalid), ``forbidden_bucket`` (a bucket
    outside the allow-lists), ``not_found`` (no such source object or bucket), ``too_large``
    (over ``max_bytes``, or out of memory), ``decompression_bomb`` (over ``max_pixels``),
    ``not_an_image`` (empty, or no image signature), ``truncated`` (the image data ends
    early), ``corrupt`` (an image signature but undecodable data), ``unsupported`` (an image
    format or mode this action cannot handle, e.g. HEIC), ``storage_error`` (S3 refused or
    was unreachable; ``s3_code`` says why when S3 answered; ``retryable`` is true when a
    later attempt may succeed), ``internal`` (a bug).
"""

import hashlib
import io
import json
import math
import posixpath
import re
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from PIL import Image, ImageFile, UnidentifiedImageError, features

DEFAULT_TARGET_BUCKET = "dit247c"
DEFAULT_SOURCE_BUCKETS = ("dit247",)
DEFAULT_TARGET_BUCKETS = ("dit247c",)
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 60 * 1024 * 1024
MAX_KEY_BYTES = 1024  # S3's limit on a key's UTF-8 length

OUTPUT = {  # format -> (extension, content type)
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
}
FORMAT_ALIASES = {"JPG": "JPEG"}
IMAGE_EXTENSIONS = frozenset(
    "jpg jpeg jpe jfif png gif webp bmp tif tiff mpo avif heic heif".split())
# Decoders we accept. Restricting the list keeps Pillow away from risky plugins (EPS
# would run Ghostscript). JPEG also opens MPO, as many camera JPEGs are.
INPUT_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF") + (
    ("AVIF",) if features.check("avif") else ())
PASSTHROUGH_METADATA = {"t-upload-start": "t_upload_start_ms", "t-uploaded": "t_uploaded_ms"}
RESAMPLE = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0  # box-reduce first, then LANCZOS over >= 3x the output: fast, no visible loss
WHITE = {"L": 255, "RGB": (255, 255, 255)}
T = Image.Transpose
TRANSPOSE = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
             6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}  # EXIF orientation -> fix

BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
TRACE_ID_RE = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII: it goes into an S3 header
ETAG_RE = re.compile(r'^[\x21\x23-\x7e]{1,128}$')  # an ETag without its quotes
MD5_ETAG_RE = re.compile(r"^[0-9a-f]{32}$")  # a single-part upload's ETag: the MD5 of its bytes
MAX_REPAIRS = 3  # rewrites of the current version's output after an overtaken write (see Versions)
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# Warm workers keep this module loaded, so clients (and their connection pools) are reused.
_CLIENTS: dict[tuple[str, str, str], Minio] = {}
HTTP_TIMEOUT = urllib3.Timeout(connect=5.0, read=30.0)
HTTP_RETRIES = urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504))


class ActionError(Exception):
    """A failure the caller gets as ``{"error": {...}}``; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        """Record the error code, a human message and extra JSON-safe fields."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def result(self, bucket: Any = None, key: Any = None, trace_id: Any = None) -> dict[str, Any]:
        """The action's error result; only string bucket/key/trace_id are echoed."""
        error = {"code": self.code, "message": self.message,
                 "bucket": bucket if isinstance(bucket, str) else None,
                 "key": key if isinstance(key, str) else None, **self.extra}
        if isinstance(trace_id, str):
            error["trace_id"] = trace_id
        return {"error": error}


class Superseded(Exception):
    """The version asked for is no longer the source's current one: not a failure, nothing to write."""

    def __init__(self, found_at: str, current_etag: str | None = None, repaired: bool = False) -> None:
        """Where the action found out (``read``, ``before_write``, ``after_write``), and what it found."""
        super().__init__(f"superseded at {found_at}")
        self.found_at = found_at
        self.current_etag = current_etag
        self.repaired = repaired
        self.source_etag: str | None = None  # the version that was asked for or read, once known
        self.trace_id: str | None = None


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Params:
    """The validated parameters of one invocation."""

    bucket: str
    key: str
    target_bucket: str
    max_edge: int
    fmt: str
    quality: int
    s3_endpoint: str
    s3_out_endpoint: str
    s3_access_key: str = field(repr=False)
    s3_secret_key: str = field(repr=False)
    s3_region: str
    allowed_source_buckets: tuple[str, ...]
    allowed_target_buckets: tuple[str, ...]
    max_pixels: int
    max_bytes: int
    trace_id: str | None
    t_event_ms: float | None
    etag: str | None = None


def _bad(name: str, why: str) -> ActionError:
    return ActionError("bad_parameter", f"parameter '{name}' {why}", parameter=name)


def _int(args: dict, name: str, default: int, low: int, high: int) -> int:
    """An integer in [low, high]; integral strings are accepted (e.g. from a web form)."""
    value = args.get(name, default)
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,10}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _bad(name, f"must be between {low} and {high}, got {value}")
    return value


def _text(args: dict, name: str, default: str | None = None) -> str:
    """A non-empty string parameter."""
    value = args.get(name, default)
    if value is None:
        raise _bad(name, "is required")
    if not isinstance(value, str) or not value:
        raise _bad(name, "must be a non-empty string")
    return value


def _bucket(name: str, value: Any) -> str:
    if not isinstance(value, str) or not BUCKET_RE.match(value) or ".." in value:
        raise _bad(name, f"is not a valid bucket name: {value!r}"[:200])
    return value


def _buckets(args: dict, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A bucket allow-list: a JSON list, or a comma-separated string."""
    value = args.get(name, default)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise _bad(name, "must be a non-empty list of bucket names")
    return tuple(_bucket(name, item) for item in value)


def _key(value: Any) -> str:
    """An S3 key the action can name an output after."""
    if not isinstance(value, str) or not value:
        raise _bad("key", "must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise _bad("key", f"is longer than {MAX_KEY_BYTES} bytes")
    if CONTROL_RE.search(value) or value.endswith("/"):
        raise _bad("key", "must not contain control characters or end with '/'")
    if any(part in (".", "..") for part in value.split("/")):
        raise _bad("key", "must not contain '.' or '..' path segments")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("key", "is not valid UTF-8 (lone surrogate)") from None
    return value


def _endpoint(args: dict, name: str, default: str | None = None) -> str:
    """An S3 endpoint URL: http(s)://host[:port] with no path, query or credentials."""
    url = _text(args, name, default)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        raise _bad(name, "is not a valid URL") from None
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.username
            or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment):
        raise _bad(name, "must look like http://host:port (no path, query or credentials)")
    return f"{parts.scheme}://{parts.netloc}"


def _format(args: dict) -> str:
    value = args.get("format", "JPEG")
    name = FORMAT_ALIASES.get(value.upper(), value.upper()) if isinstance(value, str) else None
    if name not in OUTPUT:
        raise _bad("format", f"must be one of {', '.join(OUTPUT)}, got {value!r}"[:200])
    return name


def _optional_number(args: dict, name: str) -> float | None:
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(name, "must be a finite number")
    return value


def _trace_id(args: dict) -> str | None:
    value = args.get("trace_id")
    if value is None:
        return None
    if not isinstance(value, str) or not TRACE_ID_RE.match(value):
        raise _bad("trace_id", "must be 1..128 printable ASCII characters without spaces")
    return value


def _etag(args: dict) -> str | None:
    value = args.get("etag")
    if value is None:
        return None
    etag = value.strip('"') if isinstance(value, str) else None
    if not etag or not ETAG_RE.match(etag):
        raise _bad("etag", "must be an ETag: 1..128 printable ASCII characters without spaces")
    return etag


def parse_params(args: dict) -> Params:
    """Validate every parameter, then the bucket allow-lists.

    Raises:
        ActionError: ``bad_parameter`` or ``forbidden_bucket``.
    """
    if not isinstance(args, dict):
        raise _bad("args", "must be a JSON object")
    endpoint = _endpoint(args, "s3_endpoint")
    params = Params(
        bucket=_bucket("bucket", _text(args, "bucket")),
        key=_key(args.get("key")),
        target_bucket=_bucket("target_bucket", args.get("target_bucket", DEFAULT_TARGET_BUCKET)),
        max_edge=_int(args, "max_edge", 640, 16, 8192),
        fmt=_format(args),
        quality=_int(args, "quality", 85, 1, 95),
        s3_endpoint=endpoint,
        s3_out_endpoint=_endpoint(args, "s3_out_endpoint", endpoint),
        s3_access_key=_text(args, "s3_access_key"),
        s3_secret_key=_text(args, "s3_secret_key"),
        s3_region=_text(args, "s3_region", "us-east-1"),
        allowed_source_buckets=_buckets(args, "allowed_source_buckets", DEFAULT_SOURCE_BUCKETS),
        allowed_target_buckets=_buckets(args, "allowed_target_buckets", DEFAULT_TARGET_BUCKETS),
        max_pixels=_int(args, "max_pixels", DEFAULT_MAX_PIXELS, 1, 1_000_000_000),
        max_bytes=_int(args, "max_bytes", DEFAULT_MAX_BYTES, 1, 1024**3),
        trace_id=_trace_id(args),
        t_event_ms=_optional_number(args, "t_event_ms"),
        etag=_etag(args),
    )
    output_key(params.key, params.fmt)  # the output key must be valid too
    check_buckets(params)
    return params


def check_buckets(p: Params) -> None:
    """Refuse buckets outside the allow-lists, and outputs written into a source bucket."""
    if p.bucket not in p.allowed_source_buckets:
        raise ActionError("forbidden_bucket", f"reading from bucket '{p.bucket}' is not allowed")
    if p.target_bucket not in p.allowed_target_buckets:
        raise ActionError("forbidden_bucket", f"writing to bucket '{p.target_bucket}' is not allowed")
    if p.target_bucket in p.allowed_source_buckets:  # includes target == source
        raise ActionError("forbidden_bucket",
                          f"target bucket '{p.target_bucket}' is a source bucket; its output would be resized again")


def output_key(key: str, fmt: str) -> str:
    """The output key for ``key`` in format ``fmt`` (see the module docstring).

    Raises:
        ActionError: ``bad_parameter`` when the output key would exceed S3's limit.
    """
    prefix, slash, name = key.rpartition("/")
    stem, ext = posixpath.splitext(name)
    if ext[1:].lower() not in IMAGE_EXTENSIONS:
        stem = name
    out = f"{prefix}{slash}{stem}.{OUTPUT[fmt][0]}"
    if len(out.encode("utf-8")) > MAX_KEY_BYTES:
        raise _bad("key", f"gives an output key longer than {MAX_KEY_BYTES} bytes")
    return out


def derive_trace_id(bucket: str, key: str, etag: str) -> str:
    """A deterministic trace id: a retry of the same object version gets the same one."""
    return hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()[:32]


# ---------------------------------------------------------------- storage


@dataclass
class Source:
    """A downloaded source object."""

    data: bytes
    etag: str
    metadata: dict[str, str]  # user metadata, lower-case names without x-amz-meta-


def client_for(endpoint: str, access_key: str, secret_key: str, region: str) -> Minio:
    """A minio client for ``endpoint``, cached for the life of the worker."""
    # The secret's digest is in the cache key so a rotated secret gets a fresh client.
    cache_key = (endpoint, access_key, hashlib.sha256(secret_key.encode()).hexdigest())
    client = _CLIENTS.get(cache_key)
    if client is None:
        parts = urllib.parse.urlsplit(endpoint)
        http = urllib3.PoolManager(timeout=HTTP_TIMEOUT, retries=HTTP_RETRIES, maxsize=4)
        client = Minio(parts.netloc, access_key=access_key, secret_key=secret_key,
                       secure=parts.scheme == "https", region=region, http_client=http)
        _CLIENTS[cache_key] = client
    return client


def _storage_error(exc: Exception, action: str, missing_code: str = "storage_error") -> ActionError:
    """Map a minio/urllib3 failure to an ActionError without echoing credentials.

    ``retryable`` tells the caller whether the same call may succeed later: true when the
    store was unreachable or answered with a transient S3 error (a restarting gateway).
    """
    if isinstance(exc, S3Error):
        code = missing_code if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject") else "storage_error"
        return ActionError(code, f"{action}: S3 said {exc.code}: {exc.message}", s3_code=exc.code,
                           retryable=exc.code in TRANSIENT_S3_CODES)
    transient = isinstance(exc, (urllib3.exceptions.HTTPError, OSError))
    return ActionError("storage_error", f"{action}: {type(exc).__name__}: {exc}"[:500], retryable=transient)


STORAGE_FAILURES = (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError)
TRANSIENT_S3_CODES = frozenset({"ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout"})


def _user_metadata(headers: Any) -> dict[str, str]:
    prefix = "x-amz-meta-"
    return {k.lower()[len(prefix):]: v for k, v in headers.items() if k.lower().startswith(prefix)}


def _too_large(size: int, max_bytes: int) -> ActionError:
    return ActionError("too_large", f"the object has {size} bytes, more than max_bytes={max_bytes}")


def fetch_source(client: Minio, bucket: str, key: str, max_bytes: int, etag: str | None = None) -> Source:
    """Download the object in one GET; refuse it unread when it exceeds ``max_bytes``.

    The GET's ``Content-Length`` is checked before the body is read (one round trip, not a
    stat and then a GET); ETag and metadata come from the same response, so they describe
    the bytes read. With ``etag``, the GET is conditional on it (``If-Match``).

    Raises:
        Superseded: ``etag`` is not the object's current version (or the bytes read are not it).
        ActionError: ``not_found``, ``too_large`` or ``storage_error``.
    """
    headers = {"If-Match": f'"{etag}"'} if etag else None
    try:
        response = client.get_object(bucket, key, request_headers=headers)
    except S3Error as exc:
        if exc.code == "PreconditionFailed":
            raise Superseded("read", current_etag(client, bucket, key)) from exc
        raise _storage_error(exc, f"get {bucket}/{key}", "not_found") from exc
    except STORAGE_FAILURES as exc:
        raise _storage_error(exc, f"get {bucket}/{key}", "not_found") from exc
    try:
        length = int(response.headers.get("content-length") or 0)
        if length > max_bytes:
            raise _too_large(length, max_bytes)
        data = response.read()
        read_etag = (response.headers.get("etag") or "").replace('"', "")
        metadata = _user_metadata(response.headers)
    except STORAGE_FAILURES as exc:
        raise _storage_error(exc, f"read {bucket}/{key}") from exc
    finally:
        response.close()  # unread (too large): the connection is dropped, not drained
        response.release_conn()
    if len(data) > max_bytes:  # no or a wrong Content-Length
        raise _too_large(len(data), max_bytes)
    # versitygw checks If-Match, then opens the file: a newer version may slip in between.
    if not is_version(data, read_etag) and (now := current_etag(client, bucket, key)) != read_etag:
        superseded = Superseded("read", now)
        superseded.source_etag = etag or read_etag
        raise superseded
    return Source(data, read_etag, metadata)


def is_version(data: bytes, etag: str) -> bool:
    """False when ``etag`` is a single-part upload's (an MD5) and ``data`` is not what it hashes."""
    return not MD5_ETAG_RE.match(etag) or hashlib.md5(data, usedforsecurity=False).hexdigest() == etag


def current_etag(client: Minio, bucket: str, key: str) -> str | None:
    """The ETag of the object's current version (quotes stripped); None when it is gone.

    Raises:
        ActionError: ``storage_error`` (retryable when the store was unreachable).
    """
    try:
        return (client.stat_object(bucket, key).etag or "").replace('"', "")
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            return None
        raise _storage_error(exc, f"stat {bucket}/{key}") from exc
    except STORAGE_FAILURES as exc:
        raise _storage_error(exc, f"stat {bucket}/{key}") from exc


def store_output(client: Minio, bucket: str, key: str, data: bytes, content_type: str,
                 metadata: dict[str, str]) -> str:
    """Write the output object (overwriting any earlier attempt); return its ETag."""
    try:
        result = client.put_object(bucket, key, io.BytesIO(data), len(data),
                                   content_type=content_type, metadata=metadata)
    except STORAGE_FAILURES as exc:
        raise _storage_error(exc, f"put {bucket}/{key}") from exc
    return (result.etag or "").replace('"', "")


def output_metadata(source: Source, key: str, trace_id: str) -> dict[str, str]:
    """User metadata for the output object (all ASCII, as S3 headers require)."""
    meta = {"source-etag": source.etag, "trace-id": trace_id,
            "source-key": urllib.parse.quote(key, safe="/")}
    for name in PASSTHROUGH_METADATA:
        value = source.metadata.get(name)
        if value is not None and value.isascii():
            meta[name] = value
    return meta


def timestamps(source: Source) -> dict[str, float]:
    """The source's upload timestamps (epoch ms) that parse as numbers."""
    found = {}
    for name, field_name in PASSTHROUGH_METADATA.items():
        try:
            value = float(source.metadata.get(name, "nan"))
        except ValueError:
            continue
        if math.isfinite(value):
            found[field_name] = value
    return found


# ---------------------------------------------------------------- image


@dataclass
class SourceInfo:
    """What the lazily opened image declares, before any pixel is decoded."""

    format: str
    mode: str
    width: int  # as displayed, after EXIF orientation
    height: int
    orientation: int
    icc_profile: bytes | None


SIGNATURES = {  # magic bytes of formats we decode, to tell corrupt from not-an-image
    b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF",
    b"GIF89a": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
}
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def sniff(data: bytes) -> str | None:
    """The image format named by ``data``'s magic bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"
    return next((fmt for magic, fmt in SIGNATURES.items() if data.startswith(magic)), None)


@contextmanager
def pillow_bounds(max_pixels: int) -> Iterator[None]:
    """Pillow's bomb bound set to ``max_pixels``, its warning made an error, truncation fatal.

    Pillow keeps these as module globals; an action worker runs one activation at a time,
    and the previous values are restored afterwards.
    """
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ActionError("decompression_bomb", f"over max_pixels={max_pixels}: {exc}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode_error(exc: Exception, data: bytes, stage: str) -> ActionError:
    """Classify a Pillow failure while opening or decoding."""
    message = f"{stage}: {type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, UnidentifiedImageError):
        found = sniff(data)
        if found in ("HEIF", "AVIF"):
            return ActionError("unsupported", f"{found} images are not supported")
        if found is None:
            return ActionError("not_an_image", "the object is not a JPEG, PNG, GIF, WebP, BMP or TIFF image")
        return ActionError("corrupt", f"{found} signature but unreadable header ({message})")
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return ActionError("truncated", message)
    if isinstance(exc, OSError) and "not available" in str(exc):
        return ActionError("unsupported", message)
    if isinstance(exc, MemoryError):
        return ActionError("too_large", "out of memory while decoding the image")
    return ActionError("corrupt", message)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and check the declared size against ``max_pixels``."""
    if not data:
        raise ActionError("not_an_image", "the object is empty")
    try:
        img = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except Exception as exc:  # Pillow plugins raise many types on hostile input
        raise _decode_error(exc, data, "open") from exc
    width, height = img.size
    if width < 1 or height < 1:
        img.close()
        raise ActionError("corrupt", f"the image declares an empty size {width}x{height}")
    if width * height > max_pixels:
        img.close()
        raise ActionError("decompression_bomb",
                          f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}")
    return img


def _orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8; a broken EXIF block counts as upright."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF must not fail the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def describe(img: Image.Image) -> SourceInfo:
    """Format, mode, displayed size, orientation and ICC profile of an opened image."""
    orientation = _orientation(img)
    width, height = img.size
    if orientation in (5, 6, 7, 8):  # stored rotated by 90 degrees
        width, height = height, width
    return SourceInfo(img.format or "?", img.mode, width, height, orientation,
                      img.info.get("icc_profile"))


def fit_size(width: int, height: int, max_edge: int) -> tuple[int, int]:
    """Fit ``width`` x ``height`` within ``max_edge`` x ``max_edge``; never upscale."""
    scale = max_edge / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def apply_draft(img: Image.Image, target: tuple[int, int], orientation: int) -> int:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers ``target``.

    ``draft`` must see the target in stored (not displayed) orientation. Returns the
    scale used (1 when not a JPEG or no reduction fits).
    """
    if img.format not in ("JPEG", "MPO"):
        return 1
    stored_width = img.size[0]
    result = img.draft("RGB", target[::-1] if orientation in (5, 6, 7, 8) else target)
    if result is None:  # e.g. already loaded, or several tiles
        return 1
    return round(stored_width / result[1][2])


def load(img: Image.Image, data: bytes) -> None:
    """Decode the pixels (the first frame of an animation)."""
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except Exception as exc:  # noqa: BLE001 - classified, never swallowed
        raise _decode_error(exc, data, "decode") from exc


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float image to L, keeping its tones (no clipping)."""
    if img.mode.startswith("I;16"):
        return img.convert("I").point(lambda v: v / 257).convert("L")
    low, high = img.getextrema()
    if img.mode == "F" and 0 <= low and high <= 1:
        return img.point(lambda v: v * 255).convert("L")
    if 0 <= low and high <= 255:
        return img.convert("L")
    if 0 <= low and high <= 65535:
        return img.convert("I").point(lambda v: v / 257).convert("L")
    span = (high - low) or 1
    return img.point(lambda v: (v - low) * (255 / span)).convert("L")


def to_working_mode(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to L, LA, RGB or RGBA, keeping transparency.

    Raises:
        ActionError: ``unsupported`` when Pillow cannot convert the mode.
    """
    mode = img.mode
    try:
        if mode in ("L", "LA", "RGB", "RGBA"):
            return img
        if mode == "1":
            return img.convert("L")
        if mode in ("La", "RGBa"):
            return img.convert(mode.upper())
        if mode.startswith("I") or mode == "F":
            return _to_8bit(img)
        # P, PA, CMYK, YCbCr, LAB, HSV, RGBX, ...
        return img.convert("RGBA" if img.has_transparency_data else "RGB")
    except (ValueError, OSError) as exc:
        raise ActionError("unsupported", f"cannot convert image mode {mode}: {exc}") from exc


def flatten(img: Image.Image) -> Image.Image:
    """Composite LA/RGBA over white (JPEG has no alpha)."""
    if img.mode not in ("LA", "RGBA"):
        return img
    base_mode = img.mode[:-1]
    base = Image.new(base_mode, img.size, WHITE[base_mode])
    base.paste(img.convert(base_mode), mask=img.getchannel("A"))
    return base


def for_encoder(img: Image.Image, fmt: str) -> Image.Image:
    """The working image in a mode ``fmt`` can store."""
    if fmt == "JPEG":
        return flatten(img)
    if fmt == "WEBP" and img.mode in ("L", "LA"):
        return img.convert("RGBA" if img.mode == "LA" else "RGB")
    return img


def _keep_icc(source_mode: str, out_mode: str) -> bool:
    """An ICC profile still describes the output only if the colour space did not change."""
    rgb, grey = ("RGB", "RGBA", "RGBX", "P", "PA"), ("L", "LA")
    return (source_mode in rgb and out_mode in rgb) or (source_mode in grey and out_mode in grey)


def encode(img: Image.Image, fmt: str, quality: int, icc_profile: bytes | None) -> bytes:
    """Encode without EXIF/XMP (orientation is already applied); baseline, optimised."""
    options: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "JPEG":
        options.update(quality=quality, optimize=True, progressive=False)
    elif fmt == "WEBP":
        options.update(quality=quality, method=4)
    else:  # PNG: optimize=True costs several times the resize; level 6 is zlib's default
        options.update(compress_level=6)
    buffer = io.BytesIO()
    img.info = {}  # nothing from the source (EXIF, XMP, comments) leaks into the output
    try:
        img.save(buffer, fmt, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise ActionError("unsupported", f"cannot encode {img.mode} as {fmt}: {exc}") from exc
    return buffer.getvalue()


def upright(img: Image.Image, orientation: int) -> Image.Image:
    """Apply the EXIF orientation to the pixels.

    Does what ``ImageOps.exif_transpose`` does, but with the orientation read once by
    :func:`describe`: the target size was computed from it, so both must agree (a PNG's
    eXIf chunk may only appear once the pixels are loaded).
    """
    method = TRANSPOSE.get(orientation)
    return img.transpose(method) if method else img


def resize_image(data: bytes, max_edge: int, fmt: str, quality: int,
                 max_pixels: int) -> tuple[bytes, dict[str, Any]]:
    """Decode ``data``, fit it within ``max_edge`` and encode it as ``fmt``.

    Args:
        data: The source image file.
        max_edge: Longest output edge in px (the image is never upscaled).
        fmt: ``JPEG``, ``PNG`` or ``WEBP``.
        quality: JPEG/WEBP quality, 1..95.
        max_pixels: Largest declared width x height accepted.

    Returns:
        The encoded output and facts about it: ``width_in``, ``height_in`` (as displayed),
        ``width_out``, ``height_out``, ``bytes_in``, ``bytes_out``, ``format``,
        ``content_type``, ``format_in``, ``mode_in``, ``orientation``, ``draft_scale``.

    Raises:
        ActionError: ``not_an_image``, ``truncated``, ``corrupt``, ``decompression_bomb``,
            ``unsupported`` or ``too_large``.
    """
    try:
        with pillow_bounds(max_pixels):
            with open_image(data, max_pixels) as img:
                src = describe(img)
                target = fit_size(src.width, src.height, max_edge)
                scale = apply_draft(img, target, src.orientation)
                load(img, data)
                out = to_working_mode(upright(img, src.orientation))
                if out.size != target:
                    out = out.resize(target, RESAMPLE, reducing_gap=REDUCING_GAP)
                out = for_encoder(out, fmt)
                icc = src.icc_profile if _keep_icc(src.mode, out.mode) else None
                encoded = encode(out, fmt, quality, icc)
    except MemoryError as exc:
        raise ActionError("too_large", "out of memory while resizing the image") from exc
    info = {"width_in": src.width, "height_in": src.height, "width_out": out.width,
            "height_out": out.height, "bytes_in": len(data), "bytes_out": len(encoded),
            "format": fmt, "content_type": OUTPUT[fmt][1], "format_in": src.format,
            "mode_in": src.mode, "orientation": src.orientation, "draft_scale": scale}
    return encoded, info


# ---------------------------------------------------------------- entry point


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def run(p: Params, t_start_ms: float) -> dict[str, Any]:
    """Resize the version asked for; the success result, or the superseded one (see Versions).

    Raises:
        ActionError: Any failure; once the source is read, it carries the trace id.
    """
    try:
        result = resize_version(p)
    except Superseded as sup:
        result = superseded_result(p, sup)
    result["t_action_start_ms"] = t_start_ms
    if p.t_event_ms is not None:
        result["t_event_ms"] = p.t_event_ms
    result["t_action_end_ms"] = time.time() * 1000
    return result


def resize_version(p: Params) -> dict[str, Any]:
    """Fetch the version asked for, then resize and store it.

    Raises:
        Superseded: Another version is the source's current one.
        ActionError: Any failure.
    """
    started = time.perf_counter()
    source = fetch_source(client_for(p.s3_endpoint, p.s3_access_key, p.s3_secret_key, p.s3_region),
                          p.bucket, p.key, p.max_bytes, p.etag)
    download_ms = _ms(started)
    trace_id = p.trace_id or derive_trace_id(p.bucket, p.key, source.etag)
    try:
        result = resize_and_store(p, source, trace_id)
    except ActionError as exc:
        exc.extra.setdefault("trace_id", trace_id)
        raise
    except Superseded as sup:
        sup.source_etag, sup.trace_id = source.etag, trace_id
        raise
    result.update(download_ms=download_ms, **timestamps(source))
    return result


def resize_and_store(p: Params, source: Source, trace_id: str) -> dict[str, Any]:
    """Resize the downloaded image and write it through the out endpoint, while it is the current version.

    Raises:
        Superseded: The source changed before the write, or during it (``repaired`` says whether
            the action then wrote the current version's output).
        ActionError: Any failure.
    """
    started = time.perf_counter()
    encoded, info = resize_image(source.data, p.max_edge, p.fmt, p.quality, p.max_pixels)
    resize_ms, started = _ms(started), time.perf_counter()
    key_out = output_key(p.key, p.fmt)
    reader = client_for(p.s3_endpoint, p.s3_access_key, p.s3_secret_key, p.s3_region)
    writer = client_for(p.s3_out_endpoint, p.s3_access_key, p.s3_secret_key, p.s3_region)
    now = current_etag(reader, p.bucket, p.key)
    if now not in (None, source.etag):
        raise Superseded("before_write", now)
    etag_out = store_output(writer, p.target_bucket, key_out, encoded, OUTPUT[p.fmt][1],
                            output_metadata(source, p.key, trace_id))
    upload_ms = _ms(started)
    now, repaired = keep_output_current(p, reader, writer, source, key_out)
    if now not in (None, source.etag):
        raise Superseded("after_write", now, repaired)
    return {"bucket": p.bucket, "key": p.key, "bucket_out": p.target_bucket, "key_out": key_out,
            "etag_out": etag_out, "trace_id": trace_id, "source_etag": source.etag, **info,
            "resize_ms": resize_ms, "upload_ms": upload_ms}


def keep_output_current(p: Params, reader: Minio, writer: Minio, written: Source,
                        key_out: str) -> tuple[str | None, bool]:
    """After writing ``written``'s output: while the source has moved on, write its current version's.

    The write may have landed after a newer version's own write; looking at the source after
    every write makes the last writer put the current version's output back.

    Returns:
        The source's current ETag (None when it is gone), and whether a newer version's output
        was written here.
    """
    repaired = False
    for _ in range(MAX_REPAIRS):
        now = current_etag(reader, p.bucket, p.key)
        if now in (None, written.etag):
            return now, repaired
        try:
            written = rewrite(p, reader, writer, now, key_out)
        except Superseded:
            continue  # newer still: look again
        except ActionError:
            return now, repaired  # the current version cannot be resized: its own event dead-letters it
        repaired = True
    return current_etag(reader, p.bucket, p.key), repaired


def rewrite(p: Params, reader: Minio, writer: Minio, etag: str, key_out: str) -> Source:
    """Fetch version ``etag``, resize it and write its output, with its own trace id; return it.

    Raises:
        Superseded: ``etag`` is no longer current.
        ActionError: Any failure.
    """
    source = fetch_source(reader, p.bucket, p.key, p.max_bytes, etag)
    encoded, _info = resize_image(source.data, p.max_edge, p.fmt, p.quality, p.max_pixels)
    given = source.metadata.get("trace-id") or ""
    trace_id = given if TRACE_ID_RE.match(given) else derive_trace_id(p.bucket, p.key, source.etag)
    store_output(writer, p.target_bucket, key_out, encoded, OUTPUT[p.fmt][1],
                 output_metadata(source, p.key, trace_id))
    return source


def superseded_result(p: Params, sup: Superseded) -> dict[str, Any]:
    """The result for a version the action did not resize, because a newer one replaced it."""
    etag = sup.source_etag or p.etag
    return {"superseded": True, "found_at": sup.found_at, "bucket": p.bucket, "key": p.key,
            "bucket_out": p.target_bucket, "key_out": output_key(p.key, p.fmt), "source_etag": etag,
            "current_etag": sup.current_etag, "repaired": sup.repaired,
            "trace_id": sup.trace_id or p.trace_id or derive_trace_id(p.bucket, p.key, etag or "")}


def _log(record: dict[str, Any]) -> None:
    """One JSON line per activation in the action's log (never parameters or secrets)."""
    print(json.dumps(record, default=str), flush=True)


def main(args: dict) -> dict:
    """OpenWhisk entry point: resize one object; failures come back as ``{"error": ...}``."""
    t_start_ms = time.time() * 1000
    raw = args if isinstance(args, dict) else {}
    try:
        result = run(parse_params(args), t_start_ms)
    except ActionError as exc:
        result = exc.result(raw.get("bucket"), raw.get("key"), raw.get("trace_id"))
    except Exception as exc:  # noqa: BLE001 - a bug must still be an error result, not a crash
        result = ActionError("internal", f"{type(exc).__name__}: {exc}"[:500]).result(
            raw.get("bucket"), raw.get("key"), raw.get("trace_id"))
    _log({k: result[k] for k in ("error", "key", "key_out", "trace_id", "resize_ms", "superseded", "found_at")
          if k in result})
    return result
