"""Turn untrusted uploaded image bytes into validated items.

Everything here is pure: bytes in, :class:`PreparedItem` (or :class:`MediaError`) out.
No web framework, no database, no filesystem writes, so the routes, the CLI and the
worker can share the exact same validation and the tests need nothing but bytes.

Threat model: the bytes come from any client. The extension and the declared content
type are ignored; the format is detected from the bytes. Dimensions are read from the
header and checked *before* anything is decoded, so a small file that claims a huge
canvas (a decompression bomb) is refused without allocating it. Only PNG and JPEG are
accepted, and Pillow is only allowed to try those two decoders.

Bulk formats (zip of images, npz arrays) live in :mod:`app.items.bulk`.

HTTP status rule (``MediaError.status``): **413** for every violation of a configured
:class:`MediaLimits` value (codes ``too_large``, ``too_many_pixels``, ``too_many_items``,
``zip_bomb``), i.e. raising the limit would have let the upload through; **422** for
everything else, which is about the content itself (not an image, corrupt, unsafe paths,
bad CSV, bad npz, duplicates, ...).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE: Final = b"\xff\xd8\xff"

MEDIA_PNG: Final = "image/png"
MEDIA_JPEG: Final = "image/jpeg"
MEDIA_FLOAT32: Final = "application/x-float32"

SPLITS: Final = frozenset({"pool", "test"})
MAX_EXTERNAL_ID_LEN: Final = 255

# Codes whose status is 413 (a configured limit was exceeded); all others are 422.
LIMIT_CODES: Final = frozenset({"too_large", "too_many_pixels", "too_many_items", "zip_bomb"})

# Formats we recognise only to give a precise "unsupported_format" message instead of
# the vaguer "not_an_image". Order matters only for readability; prefixes are disjoint.
_OTHER_IMAGE_SIGNATURES: Final[tuple[tuple[bytes, str], ...]] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)

# JPEG start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG), CC (DAC) do not.
_JPEG_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE_MARKERS: Final = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})

ImageKind = Literal["png", "jpeg"]


@dataclass(frozen=True)
class MediaLimits:
    """Upload limits; defaults are safe for a small server, all configurable."""

    max_upload_bytes: int = 10 * 1024 * 1024  # one image file
    max_pixels: int = 16_000_000  # width*height of one image
    max_bulk_bytes: int = 512 * 1024 * 1024  # an archive as uploaded
    max_bulk_uncompressed_bytes: int = 2 * 1024**3
    max_bulk_items: int = 250_000
    max_compression_ratio: float = 200.0  # per zip member, uncompressed/compressed
    max_feature_dim: int = 65_536
    max_csv_bytes: int = 64 * 1024 * 1024  # a manifest CSV (separate or inside the zip)


@dataclass(frozen=True)
class PreparedItem:
    """A validated item, ready for the content-addressed blob store and the DB."""

    payload: bytes  # what goes into the content-addressed blob store
    media_type: str  # "image/png" | "image/jpeg" | "application/x-float32"
    width: int  # images: pixels; feature vectors: D
    height: int  # images: pixels; feature vectors: 1
    external_id: str | None
    split: str | None  # "pool" | "test" | None (= caller's default)
    meta: dict[str, Any] = field(default_factory=dict)
    # Named feature vectors for models (little-endian float32 bytes), beside an image payload.
    features: dict[str, bytes] = field(default_factory=dict)


class MediaError(ValueError):
    """An upload was refused.

    ``code`` is stable and machine-readable (for API clients and tests), ``status`` is
    the HTTP status the route should answer with (see the module docstring for the
    rule), and ``str(err)`` is a human message that names the offending file or row.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status if status is not None else (413 if code in LIMIT_CODES else 422)

    def __repr__(self) -> str:
        return f"MediaError(code={self.code!r}, status={self.status}, message={str(self)!r})"


# --------------------------------------------------------------------------- sniffing


def _label(filename: str | None) -> str:
    """How to name the upload in error messages."""
    return repr(filename) if filename else "the upload"


def sniff_image(head: bytes) -> ImageKind | None:
    """Return the accepted image kind from the first bytes, or None.

    Magic bytes, not extensions or client content types, decide what a file is.
    """
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SIGNATURE):
        return "jpeg"
    return None


def _refuse_unknown(data: bytes, label: str) -> MediaError:
    """Build the error for bytes that are not PNG/JPEG, as precise as we can be."""
    for signature, name in _OTHER_IMAGE_SIGNATURES:
        if data.startswith(signature):
            return MediaError(
                "unsupported_format",
                f"{label} is a {name} image; only PNG and JPEG are accepted",
            )
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return MediaError(
            "unsupported_format", f"{label} is a WebP image; only PNG and JPEG are accepted"
        )
    if data[4:8] == b"ftyp":
        return MediaError(
            "unsupported_format",
            f"{label} is an ISO media file (HEIC/AVIF/MP4); only PNG and JPEG are accepted",
        )
    return MediaError("not_an_image", f"{label} is not a PNG or JPEG image (checked its bytes)")


# ------------------------------------------------------------------ header dimensions


def _png_header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the IHDR chunk, which the PNG spec puts first."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_header_size(data: bytes) -> tuple[int, int] | None:
    """Largest frame size declared by SOF markers before the first scan.

    Walks the marker segments without decoding anything; returns None if the header
    is malformed (Pillow then gets to say why when it opens the file).
    """
    best: tuple[int, int] | None = None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI, SOS: no more frame headers before data
            break
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            break
        if marker in _JPEG_SOF_MARKERS and i + 9 <= len(data):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if best is None or width * height > best[0] * best[1]:
                best = (width, height)
        i += 2 + length
    return best


def _check_pixels(size: tuple[int, int], limits: MediaLimits, label: str) -> None:
    """Refuse empty or oversized canvases, based on declared (header) dimensions."""
    width, height = size
    if width <= 0 or height <= 0:
        raise MediaError("corrupt_image", f"{label} declares an empty size {width}x{height}")
    if width * height > limits.max_pixels:
        raise MediaError(
            "too_many_pixels",
            f"{label} is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {limits.max_pixels:,}",
        )


# -------------------------------------------------------------------------- decoding

_PIL_FORMATS: Final[dict[ImageKind, list[str]]] = {"png": ["PNG"], "jpeg": ["JPEG"]}


def _open_checked(data: bytes, limits: MediaLimits, label: str) -> tuple[Image.Image, ImageKind]:
    """Sniff, check header dimensions, then fully decode; return the loaded image.

    Order matters: the byte-level header check happens before Pillow sees the data, so a
    bomb never reaches a decoder. Pillow's own DecompressionBombError (its global limit,
    which we leave untouched) is mapped to ``too_many_pixels`` as a second line of
    defence; we re-check ``im.size`` after open because Pillow's header parse is the one
    that decides what ``load()`` allocates.
    """
    kind = sniff_image(data[:16])
    if kind is None:
        raise _refuse_unknown(data[:16], label)
    declared = _png_header_size(data) if kind == "png" else _jpeg_header_size(data)
    if declared is not None:
        _check_pixels(declared, limits, label)
    try:
        image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS[kind])
    except Image.DecompressionBombError as exc:
        raise MediaError("too_many_pixels", f"{label}: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # UnidentifiedImageError is an OSError; broken headers give SyntaxError/ValueError.
        raise MediaError("corrupt_image", f"{label} has a broken {kind.upper()} header") from exc
    try:
        _check_pixels(image.size, limits, label)
        image.load()
    except MediaError:
        image.close()
        raise
    except Image.DecompressionBombError as exc:
        image.close()
        raise MediaError("too_many_pixels", f"{label}: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        image.close()
        raise MediaError(
            "corrupt_image", f"{label} could not be decoded (truncated or corrupt): {exc}"
        ) from exc
    return image, kind


def prepare_image(
    data: bytes,
    *,
    limits: MediaLimits,
    filename: str | None = None,
    external_id: str | None = None,
    split: str | None = None,
) -> PreparedItem:
    """Validate one uploaded image and describe it.

    The payload is the original bytes, unchanged: the blob store is content-addressed,
    so re-encoding would break deduplication against what the client holds. The size
    limit is checked before any parsing so oversized uploads cost nothing.
    """
    label = _label(filename)
    if len(data) > limits.max_upload_bytes:
        raise MediaError(
            "too_large",
            f"{label} is {len(data):,} bytes; the limit is {limits.max_upload_bytes:,}",
        )
    if not data:
        raise MediaError("not_an_image", f"{label} is empty")
    validate_external_id(external_id, label)
    validate_split(split, label)
    image, kind = _open_checked(data, limits, label)
    with image:
        width, height = image.size
        meta: dict[str, Any] = {"mode": image.mode}
    if filename is not None:
        meta["filename"] = filename
    return PreparedItem(
        payload=data,
        media_type=MEDIA_PNG if kind == "png" else MEDIA_JPEG,
        width=width,
        height=height,
        external_id=external_id,
        split=split,
        meta=meta,
    )


def validate_split(split: str | None, label: str) -> None:
    """Only the two known splits (or None = caller's default) may reach the DB."""
    if split is not None and split not in SPLITS:
        raise MediaError("bad_split", f"{label}: split must be 'pool' or 'test', not {split!r}")


def validate_external_id(external_id: str | None, label: str) -> None:
    """External ids are shown in the UI and exported: keep them short and printable."""
    if external_id is None:
        return
    if not external_id or len(external_id) > MAX_EXTERNAL_ID_LEN:
        raise MediaError(
            "bad_external_id",
            f"{label}: external_id must be 1..{MAX_EXTERNAL_ID_LEN} characters",
        )
    if not external_id.isprintable():
        raise MediaError(
            "bad_external_id", f"{label}: external_id {external_id!r} has control characters"
        )


# ------------------------------------------------------------------ worker helpers


def decode_image_payload(payload: bytes, *, limits: MediaLimits | None = None) -> Image.Image:
    """Decode a stored image for the worker, re-applying the pixel limit.

    Blobs were validated on upload, but the worker must not trust the store blindly
    (limits may have been lowered, or a blob written by an older version).
    """
    image, _ = _open_checked(payload, limits or MediaLimits(), "stored image")
    return image


def decode_feature_payload(payload: bytes, dim: int) -> npt.NDArray[np.float32]:
    """Decode a stored feature vector (little-endian float32) into a float32 array.

    Returns a writable native-endian array of shape ``(dim,)``. The length is checked
    so a blob/dimension mismatch fails loudly instead of silently reshaping.
    """
    if dim <= 0 or len(payload) != 4 * dim:
        raise MediaError(
            "bad_payload",
            f"feature payload has {len(payload)} bytes; expected {4 * dim} for dim={dim}",
        )
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)
