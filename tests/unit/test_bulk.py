"""Bulk uploads: zip of images (+ manifest CSV) and npz arrays."""

from __future__ import annotations

import io
import stat
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from app.items.bulk import encode_png, prepare_npz, prepare_zip, sniff_archive
from app.items.media import MEDIA_FLOAT32, MEDIA_PNG, MediaError, MediaLimits, PreparedItem

LIMITS = MediaLimits()


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def png(seed: int = 0, shape: tuple[int, ...] = (6, 5)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise(shape, seed)).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise((6, 5, 3), seed)).save(buf, format="JPEG")
    return buf.getvalue()


Member = tuple[str | zipfile.ZipInfo, bytes]


def make_zip(members: list[Member], method: int = zipfile.ZIP_DEFLATED) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    buf.seek(0)
    return buf


def run_zip(
    members: list[Member], csv: str | None = None, limits: MediaLimits = LIMITS
) -> list[PreparedItem]:
    csv_file = io.BytesIO(csv.encode()) if csv is not None else None
    return list(prepare_zip(make_zip(members), csv_file=csv_file, limits=limits))


def zip_error(members: list[Member], csv: str | None = None, **limits: float) -> MediaError:
    with pytest.raises(MediaError) as err:
        prepare_zip(
            make_zip(members),
            csv_file=io.BytesIO(csv.encode()) if csv is not None else None,
            limits=MediaLimits(**limits),  # type: ignore[arg-type]
        )
    return err.value


def npz(**arrays: np.ndarray) -> io.BytesIO:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    buf.seek(0)
    return buf


def npz_error(limits: MediaLimits = LIMITS, **arrays: np.ndarray) -> MediaError:
    with pytest.raises(MediaError) as err:
        prepare_npz(npz(**arrays), limits=limits)
    return err.value


# ---------------------------------------------------------------------------- zip


def test_zip_images_with_defaults_and_original_payloads() -> None:
    members: list[Member] = [("a.png", png(1)), ("sub/b.jpg", jpeg(2)), ("sub/", b"")]
    items = run_zip(members)
    assert [(i.external_id, i.split, i.media_type) for i in items] == [
        ("a.png", None, "image/png"),
        ("b.jpg", None, "image/jpeg"),
    ]
    assert items[0].payload == png(1)
    assert items[1].payload == jpeg(2)
    assert items[1].meta["filename"] == "sub/b.jpg"


def test_zip_is_validated_before_anything_is_yielded() -> None:
    """All-or-nothing: the error comes from prepare_zip itself, not mid-iteration."""
    members: list[Member] = [("a.png", png(1)), ("b.png", png(2)), ("c.png", png(3)[:60])]
    err = zip_error(members)
    assert err.code == "corrupt_image"
    assert "c.png" in str(err)


def test_zip_import_len_and_single_image_in_memory() -> None:
    result = prepare_zip(make_zip([("a.png", png(1)), ("b.png", png(2))]), csv_file=None,
                         limits=LIMITS)  # fmt: skip
    assert len(result) == 2
    assert [i.payload for i in result] == [png(1), png(2)]


def test_junk_members_ignored() -> None:
    members: list[Member] = [
        ("a.png", png(1)),
        ("__MACOSX/._a.png", b"\x00\x05\x16\x07junk"),
        (".DS_Store", b"junk"),
        ("dir/.hidden.png", b"junk"),
        ("dir/Thumbs.db", b"junk"),
    ]
    assert [i.external_id for i in run_zip(members)] == ["a.png"]


def test_non_image_member_refuses_archive() -> None:
    err = zip_error([("a.png", png(1)), ("README.txt", b"hello")])
    assert err.code == "not_an_image"
    assert "README.txt" in str(err)


@pytest.mark.parametrize(
    "name", ["../evil.png", "/abs.png", "a/../../evil.png", "..\\evil.png", "C:/x.png"]
)
def test_unsafe_paths_refused(name: str) -> None:
    err = zip_error([("ok.png", png(1)), (zipfile.ZipInfo(name), png(2))])
    assert err.code == "unsafe_path"
    assert err.status == 422


def test_symlink_member_refused() -> None:
    info = zipfile.ZipInfo("link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    err = zip_error([(info, b"/etc/passwd")])
    assert err.code == "unsafe_path"
    assert "link" in str(err)


def test_encrypted_member_refused() -> None:
    """zipfile cannot write encrypted members, so set the flag bit in both headers."""
    raw = bytearray(make_zip([("a.png", png(1))]).getvalue())
    raw[raw.find(b"PK\x03\x04") + 6] |= 0x1
    raw[raw.find(b"PK\x01\x02") + 8] |= 0x1
    with pytest.raises(MediaError) as err:
        prepare_zip(io.BytesIO(bytes(raw)), csv_file=None, limits=LIMITS)
    assert err.value.code == "encrypted_member"
    assert "a.png" in str(err.value)


def test_zip_bomb_ratio_refused() -> None:
    err = zip_error([("a.png", png(1)), ("zeros.png", bytes(4 * 1024 * 1024))])
    assert err.code == "zip_bomb"
    assert err.status == 413
    assert "zeros.png" in str(err)


def test_zip_bomb_total_uncompressed_refused() -> None:
    members: list[Member] = [(f"{i}.png", png(i)) for i in range(3)]
    total = sum(len(d) for _, d in members)
    err = zip_error(members, max_bulk_uncompressed_bytes=total - 1)
    assert err.code == "zip_bomb"


def test_member_lying_about_its_size_refused() -> None:
    """Shrink the declared size in both headers; the read cap and CRC must catch it."""
    data = png(1)
    raw = bytearray(make_zip([("a.png", data)], method=zipfile.ZIP_STORED).getvalue())
    real = struct.pack("<I", len(data))
    fake = struct.pack("<I", len(data) // 2)
    local = raw.find(b"PK\x03\x04")
    raw[local + 22 : local + 26] = fake
    central = raw.find(b"PK\x01\x02")
    assert raw[central + 24 : central + 28] == real
    raw[central + 24 : central + 28] = fake
    with pytest.raises(MediaError) as err:
        prepare_zip(io.BytesIO(bytes(raw)), csv_file=None, limits=LIMITS)
    assert err.value.code in {"bad_zip", "zip_bomb"}


def test_oversized_member_refused_from_header() -> None:
    err = zip_error([("a.png", png(1))], max_upload_bytes=10)
    assert err.code == "too_large"
    assert err.status == 413


def test_oversized_archive_refused() -> None:
    err = zip_error([("a.png", png(1))], max_bulk_bytes=100)
    assert err.code == "too_large"


def test_too_many_items() -> None:
    err = zip_error([(f"{i}.png", png(i)) for i in range(3)], max_bulk_items=2)
    assert err.code == "too_many_items"
    assert err.status == 413


def test_too_many_entries_refused_before_parsing_directory() -> None:
    members: list[Member] = [(f"d{i}/", b"") for i in range(40)]
    err = zip_error(members, max_bulk_items=5)
    assert err.code == "too_many_items"
    assert "entries" in str(err)


def test_not_a_zip() -> None:
    with pytest.raises(MediaError) as err:
        prepare_zip(io.BytesIO(b"plain text" * 10), csv_file=None, limits=LIMITS)
    assert err.value.code == "bad_zip"


def test_duplicate_default_external_ids_refused() -> None:
    err = zip_error([("a/1.png", png(1)), ("b/1.png", png(2))])
    assert err.code == "duplicate_external_id"
    assert "a/1.png" in str(err)
    assert "b/1.png" in str(err)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_member_names_refused() -> None:
    err = zip_error([("1.png", png(1)), ("1.png", png(2))])
    assert err.code == "duplicate_filename"


# -------------------------------------------------------------------------- manifest


def test_separate_csv_maps_ids_and_splits() -> None:
    csv = "filename,external_id,split\na/1.png,cat-1,test\nb/1.png,,pool\n"
    items = run_zip([("a/1.png", png(1)), ("b/1.png", png(2)), ("c.png", png(3))], csv)
    assert [(i.external_id, i.split) for i in items] == [
        ("cat-1", "test"),
        ("1.png", "pool"),
        ("c.png", None),
    ]


def test_manifest_member_inside_zip() -> None:
    manifest = b"\xef\xbb\xbfFilename,Split\r\n./x.png,test\r\n\r\n"  # BOM, CRLF, blank line
    items = run_zip([("manifest.csv", manifest), ("x.png", png(1)), ("y.png", png(2))])
    assert [(i.external_id, i.split) for i in items] == [("x.png", "test"), ("y.png", None)]


def test_separate_csv_wins_over_manifest_member() -> None:
    members: list[Member] = [("manifest.csv", b"filename,split\nx.png,test\n"), ("x.png", png(1))]
    items = run_zip(members, "filename,external_id\nx.png,from-upload\n")
    assert [(i.external_id, i.split) for i in items] == [("from-upload", None)]


@pytest.mark.parametrize(
    ("csv", "needle"),
    [
        ("filename,external_id\nmissing.png,m\n", "missing.png"),
        ("filename,split\nx.png,train\n", "line 2"),
        ("external_id,split\nx,pool\n", "'filename'"),
        ("filename,label\nx.png,cat\n", "label"),
        ("filename,external_id\nx.png,a,extra\n", "line 2"),
        ("filename\nx.png\nx.png\n", "twice"),
        ("", "empty"),
        ("filename,external_id\nx.png,\x01bad\n", "line 2"),
    ],
)
def test_bad_csv(csv: str, needle: str) -> None:
    err = zip_error([("x.png", png(1))], csv)
    assert err.code == "bad_csv"
    assert needle in str(err)


def test_csv_not_utf8() -> None:
    with pytest.raises(MediaError) as err:
        prepare_zip(make_zip([("x.png", png(1))]), csv_file=io.BytesIO(b"filename\n\xff\xfe.png\n"),
                    limits=LIMITS)  # fmt: skip
    assert err.value.code == "bad_csv"


def test_csv_duplicate_external_ids() -> None:
    csv = "filename,external_id\nx.png,same\ny.png,same\n"
    err = zip_error([("x.png", png(1)), ("y.png", png(2))], csv)
    assert err.code == "duplicate_external_id"


def test_csv_too_large() -> None:
    err = zip_error([("x.png", png(1))], "filename\nx.png\n", max_csv_bytes=5)
    assert err.code == "too_large"


def test_two_manifests_refused() -> None:
    members: list[Member] = [
        ("manifest.csv", b"filename\n"),
        ("d/manifest.csv", b"filename\n"),
        ("x.png", png(1)),
    ]
    assert zip_error(members).code == "bad_csv"


# ---------------------------------------------------------------------------- npz


@pytest.mark.parametrize(("shape", "mode"), [((3, 7, 5), "L"), ((3, 7, 5, 3), "RGB")])
def test_npz_images_round_trip(shape: tuple[int, ...], mode: str) -> None:
    images = noise(shape, seed=4)
    items = prepare_npz(npz(images=images), limits=LIMITS)
    assert len(items) == 3
    for i, item in enumerate(items):
        assert item.media_type == MEDIA_PNG
        assert (item.width, item.height) == (5, 7)
        assert item.meta == {"mode": mode, "index": i}
        assert item.external_id is None
        with Image.open(io.BytesIO(item.payload)) as decoded:
            assert decoded.mode == mode
            assert np.array_equal(np.asarray(decoded), images[i])


def test_npz_png_bytes_are_deterministic() -> None:
    images = noise((2, 9, 9, 3), seed=5)
    first = [i.payload for i in prepare_npz(npz(images=images), limits=LIMITS)]
    second = [i.payload for i in prepare_npz(npz(images=images.copy()), limits=LIMITS)]
    assert first == second
    assert encode_png(images[0]) == encode_png(np.array(images[0], order="F"))
    assert b"tIME" not in first[0]
    assert b"tEXt" not in first[0]


def test_npz_features_round_trip() -> None:
    features = np.random.default_rng(6).standard_normal((4, 17)).astype(np.float32)
    ids = np.array(["a", "b", "c", "d"])
    split = np.array(["pool", "test", "pool", "test"])
    items = prepare_npz(npz(features=features, external_ids=ids, split=split), limits=LIMITS)
    assert [(i.external_id, i.split) for i in items] == list(zip(ids, split, strict=True))
    for row, item in zip(features, items, strict=True):
        assert item.media_type == MEDIA_FLOAT32
        assert (item.width, item.height) == (17, 1)
        assert np.array_equal(np.frombuffer(item.payload, dtype="<f4"), row)


def test_npz_big_endian_features_stored_little_endian() -> None:
    features = np.arange(6, dtype=">f4").reshape(2, 3)
    items = prepare_npz(npz(features=features), limits=LIMITS)
    assert items[1].payload == np.array([3, 4, 5], dtype="<f4").tobytes()


def test_npz_object_array_refused() -> None:
    buf = io.BytesIO()
    np.savez(buf, features=np.array([{"x": 1}, None], dtype=object))
    buf.seek(0)
    with pytest.raises(MediaError) as err:
        prepare_npz(buf, limits=LIMITS)
    assert err.value.code == "bad_npz"
    assert "pickle" in str(err.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_non_finite_features_refused(bad: float) -> None:
    features = np.zeros((3, 2), dtype=np.float32)
    features[2, 1] = bad
    err = npz_error(features=features)
    assert err.code == "bad_npz"
    assert "[2]" in str(err)


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"images": np.zeros((2, 4, 4), dtype=np.float32)}, "uint8"),
        ({"images": np.zeros((2, 4, 4, 4), dtype=np.uint8)}, "(N,H,W,3)"),
        ({"images": np.zeros((4, 4), dtype=np.uint8)}, "(N,H,W)"),
        ({"features": np.zeros((2, 3), dtype=np.float64)}, "float32"),
        ({"features": np.zeros((6,), dtype=np.float32)}, "(N,D)"),
        ({"features": np.zeros((0, 3), dtype=np.float32)}, "no rows"),
        ({"images": np.zeros((1, 2, 2), np.uint8), "features": np.zeros((1, 2), np.float32)},
         "exactly one"),
        ({"external_ids": np.array(["a"])}, "exactly one"),
        ({"features": np.zeros((2, 3), np.float32), "labels": np.zeros(2)}, "labels.npy"),
        ({"features": np.zeros((2, 3), np.float32), "external_ids": np.array(["a"])}, "(2,)"),
        ({"features": np.zeros((2, 3), np.float32), "external_ids": np.array([1, 2])}, "string"),
        ({"features": np.zeros((1, 3), np.float32), "split": np.array(["train"])}, "row 0"),
    ],
)  # fmt: skip
def test_npz_bad_arrays(arrays: dict[str, np.ndarray], needle: str) -> None:
    err = npz_error_raw(npz(**arrays))
    assert err.code == "bad_npz"
    assert needle in str(err)


def test_npz_duplicate_external_ids() -> None:
    err = npz_error(features=np.zeros((2, 3), np.float32), external_ids=np.array(["a", "a"]))
    assert err.code == "duplicate_external_id"


def test_npz_bytes_external_ids_decoded() -> None:
    items = prepare_npz(
        npz(features=np.zeros((2, 1), np.float32), external_ids=np.array([b"x", b"y"])),
        limits=LIMITS,
    )
    assert [i.external_id for i in items] == ["x", "y"]


def test_npz_limits() -> None:
    images = np.zeros((3, 4, 5), np.uint8)
    assert npz_error(MediaLimits(max_bulk_items=2), images=images).code == "too_many_items"
    assert npz_error(MediaLimits(max_pixels=19), images=images).code == "too_many_pixels"
    features = np.zeros((2, 8), np.float32)
    assert npz_error(MediaLimits(max_feature_dim=7), features=features).code == "too_large"
    assert npz_error(MediaLimits(max_bulk_uncompressed_bytes=64), features=features).code == (
        "zip_bomb"
    )


def test_npz_header_claiming_huge_shape_refused_without_allocating() -> None:
    """A tiny .npy whose header claims 10**12 floats must not reach np.load."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), np.float32))
    header["shape"] = (10**6, 10**6)
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(b"\x00" * 16)
    err = npz_error_raw(make_zip([("features.npy", npy.getvalue())]))
    assert err.code == "bad_npz"
    assert "does not match its size" in str(err)


def npz_error_raw(archive: io.BytesIO) -> MediaError:
    with pytest.raises(MediaError) as err:
        prepare_npz(archive, limits=LIMITS)
    return err.value


def test_npz_not_a_zip() -> None:
    assert npz_error_raw(io.BytesIO(b"\x93NUMPY raw npy, not npz")).code == "bad_npz"


# ---------------------------------------------------------------------------- sniff


def test_sniff_archive() -> None:
    head = npz(features=np.zeros((1, 1), np.float32)).getvalue()[:512]
    assert sniff_archive(head) == "npz"
    assert sniff_archive(make_zip([("a.png", png(1))]).getvalue()[:512]) == "zip"
    assert sniff_archive(make_zip([]).getvalue()) == "zip"
    assert sniff_archive(png(1)) == "unknown"
    assert sniff_archive(b"PK\x03\x04") == "unknown"
