"""Single-image validation: formats by bytes, size and pixel limits, corrupt data."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from app.items.media import (
    MEDIA_JPEG,
    MEDIA_PNG,
    MediaError,
    MediaLimits,
    decode_feature_payload,
    decode_image_payload,
    prepare_image,
    sniff_image,
)

LIMITS = MediaLimits()


def encode(array: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int, height: int) -> bytes:
    """A small, well-formed PNG whose IHDR claims a huge grey canvas.

    The IDAT is a valid zlib stream of zero rows (only the first rows, to keep the test
    fast); it compresses ~1000x, which is exactly what makes such files dangerous.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 16, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to decode pixels fail the test (call after building inputs)."""

    def forbidden(self: Image.Image) -> None:
        raise AssertionError("image data must not be decoded")

    monkeypatch.setattr(Image.Image, "load", forbidden)
    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)


# ---------------------------------------------------------------------------- accept


@pytest.mark.parametrize(
    ("array", "mode"),
    [(noise((12, 20)), "L"), (noise((12, 20, 3)), "RGB"), (noise((12, 20, 4)), "RGBA")],
)
def test_png_accepted_with_size_mode_and_original_bytes(array: np.ndarray, mode: str) -> None:
    data = encode(array, "PNG")
    item = prepare_image(
        data, limits=LIMITS, filename="x.jpg", external_id="e1", split="test"
    )  # the misleading extension is ignored: bytes decide
    assert item.media_type == MEDIA_PNG
    assert (item.width, item.height) == (20, 12)
    assert item.meta == {"mode": mode, "filename": "x.jpg"}
    assert item.payload is data
    assert (item.external_id, item.split) == ("e1", "test")


@pytest.mark.parametrize(("shape", "mode"), [((9, 7), "L"), ((9, 7, 3), "RGB")])
def test_jpeg_accepted(shape: tuple[int, ...], mode: str) -> None:
    data = encode(noise(shape), "JPEG", quality=90)
    item = prepare_image(data, limits=LIMITS, filename="photo.png")
    assert item.media_type == MEDIA_JPEG
    assert (item.width, item.height) == (7, 9)
    assert item.meta["mode"] == mode
    assert item.payload == data
    assert item.external_id is None
    assert item.split is None


# ---------------------------------------------------------------------------- refuse


def test_text_file_with_image_extension_is_not_an_image() -> None:
    with pytest.raises(MediaError) as err:
        prepare_image(b"hello, I am text\n" * 10, limits=LIMITS, filename="x.png")
    assert err.value.code == "not_an_image"
    assert err.value.status == 422
    assert "'x.png'" in str(err.value)


def test_empty_upload_is_not_an_image() -> None:
    with pytest.raises(MediaError) as err:
        prepare_image(b"", limits=LIMITS, filename="x.png")
    assert err.value.code == "not_an_image"


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_image_formats_unsupported(fmt: str, name: str) -> None:
    data = encode(noise((8, 8, 3)), fmt)
    with pytest.raises(MediaError) as err:
        prepare_image(data, limits=LIMITS, filename="a.png")
    assert err.value.code == "unsupported_format"
    assert name in str(err.value)


def test_webp_unsupported() -> None:
    data = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 16
    with pytest.raises(MediaError) as err:
        prepare_image(data, limits=LIMITS)
    assert err.value.code == "unsupported_format"


def test_oversized_upload_refused_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not be opened")

    monkeypatch.setattr(Image, "open", no_open)
    data = b"\x89PNG\r\n\x1a\n" + bytes(30 * 1024 * 1024)
    with pytest.raises(MediaError) as err:
        prepare_image(data, limits=LIMITS, filename="big.png")
    assert err.value.code == "too_large"
    assert err.value.status == 413
    assert "big.png" in str(err.value)


def test_decompression_bomb_png_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bomb_png(60_000, 60_000)
    assert len(data) < 10_000
    forbid_decoding(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(MediaError) as err:
        prepare_image(data, limits=LIMITS, filename="bomb.png")
    assert time.perf_counter() - start < 1.0
    assert err.value.code == "too_many_pixels"
    assert err.value.status == 413
    assert "60000x60000" in str(err.value)


def test_pixel_limit_below_pillow_global_limit_is_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """5000x5000 is under Pillow's default bomb limit, so only our check catches it."""
    assert Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > 25_000_000
    forbid_decoding(monkeypatch)
    with pytest.raises(MediaError) as err:
        prepare_image(bomb_png(5000, 5000), limits=LIMITS)
    assert err.value.code == "too_many_pixels"


def test_bomb_refused_before_pillow_even_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    """100M pixels is in Pillow's warn-only band; our header check must refuse it first."""
    data = bomb_png(10_000, 10_000)
    forbid_decoding(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would escape as an error
        with pytest.raises(MediaError) as err:
            prepare_image(data, limits=LIMITS)
    assert err.value.code == "too_many_pixels"


def test_pillow_global_limit_untouched() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(MediaError):
        prepare_image(bomb_png(60_000, 60_000), limits=LIMITS)
    prepare_image(encode(noise((4, 4)), "PNG"), limits=LIMITS)
    assert before == Image.MAX_IMAGE_PIXELS


def test_jpeg_bomb_header_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(encode(noise((8, 8, 3)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", 50_000, 50_000)
    forbid_decoding(monkeypatch)
    with pytest.raises(MediaError) as err:
        prepare_image(bytes(data), limits=LIMITS, filename="bomb.jpg")
    assert err.value.code == "too_many_pixels"


def test_pillow_bomb_error_mapped_when_our_limit_is_higher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If an admin raises max_pixels past Pillow's own limit, Pillow's error still maps."""
    data = bomb_png(60_000, 60_000)
    forbid_decoding(monkeypatch)
    with pytest.raises(MediaError) as err:
        prepare_image(data, limits=MediaLimits(max_pixels=10**12))
    assert err.value.code == "too_many_pixels"


def test_custom_pixel_limit() -> None:
    data = encode(noise((10, 10)), "PNG")
    with pytest.raises(MediaError) as err:
        prepare_image(data, limits=MediaLimits(max_pixels=99))
    assert err.value.code == "too_many_pixels"
    assert prepare_image(data, limits=MediaLimits(max_pixels=100)).width == 10


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_corrupt(fmt: str) -> None:
    data = encode(noise((64, 64, 3)), fmt)
    with pytest.raises(MediaError) as err:
        prepare_image(data[: len(data) // 2], limits=LIMITS, filename="cut.img")
    assert err.value.code == "corrupt_image"
    assert err.value.status == 422
    assert "cut.img" in str(err.value)


def test_png_with_bad_crc_is_corrupt() -> None:
    data = bytearray(encode(noise((16, 16)), "PNG"))
    idat = data.find(b"IDAT")
    data[idat + 6] ^= 0xFF  # flip a byte of compressed data; CRC no longer matches
    with pytest.raises(MediaError) as err:
        prepare_image(bytes(data), limits=LIMITS)
    assert err.value.code == "corrupt_image"


def test_png_signature_only_is_corrupt() -> None:
    with pytest.raises(MediaError) as err:
        prepare_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, limits=LIMITS)
    assert err.value.code == "corrupt_image"


def test_zero_size_header_is_corrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_decoding(monkeypatch)
    with pytest.raises(MediaError) as err:
        prepare_image(bomb_png(0, 10), limits=LIMITS)
    assert err.value.code == "corrupt_image"


@pytest.mark.parametrize(
    ("external_id", "split", "code"),
    [("", None, "bad_external_id"), ("x" * 256, None, "bad_external_id"),
     ("a\nb", None, "bad_external_id"), (None, "train", "bad_split")],
)  # fmt: skip
def test_bad_external_id_or_split(external_id: str | None, split: str | None, code: str) -> None:
    data = encode(noise((4, 4)), "PNG")
    with pytest.raises(MediaError) as err:
        prepare_image(data, limits=LIMITS, external_id=external_id, split=split)
    assert err.value.code == code


def test_sniff_image() -> None:
    assert sniff_image(encode(noise((2, 2)), "PNG")) == "png"
    assert sniff_image(encode(noise((2, 2)), "JPEG")) == "jpeg"
    assert sniff_image(b"GIF89a") is None


# ------------------------------------------------------------------------- helpers


def test_decode_image_payload_round_trip_and_limit() -> None:
    array = noise((6, 5, 3))
    image = decode_image_payload(encode(array, "PNG"))
    assert np.array_equal(np.asarray(image), array)
    with pytest.raises(MediaError) as err:
        decode_image_payload(encode(array, "PNG"), limits=MediaLimits(max_pixels=29))
    assert err.value.code == "too_many_pixels"
    with pytest.raises(MediaError):
        decode_image_payload(b"not an image")


def test_decode_feature_payload() -> None:
    vector = np.array([1.5, -2.25, 3e-8, np.float32(7)], dtype=np.float32)
    payload = vector.astype("<f4").tobytes()
    decoded = decode_feature_payload(payload, 4)
    assert decoded.dtype == np.float32
    assert decoded.flags.writeable
    assert np.array_equal(decoded, vector)
    with pytest.raises(MediaError) as err:
        decode_feature_payload(payload, 3)
    assert err.value.code == "bad_payload"


def test_media_error_repr_and_status() -> None:
    err = MediaError("zip_bomb", "boom")
    assert err.status == 413
    assert MediaError("bad_csv", "x").status == 422
    assert MediaError("bad_csv", "x", status=400).status == 400
    assert "zip_bomb" in repr(err)
    assert isinstance(err, ValueError)
