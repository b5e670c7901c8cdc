"""Bulk uploads: a zip of images (plus an optional manifest CSV) or an npz of arrays.

Pure functions like :mod:`app.items.media`: a seekable binary file in, validated
:class:`PreparedItem` values (or a :class:`MediaError`) out.

All-or-nothing: every check (paths, sizes, CSV rows, every image decoded, duplicate
ids) runs before the first item is handed to the caller, so a refused archive leaves
nothing half-imported.

Zip bombs: zip sizes are declared by the archive itself, so they are used only to
refuse early (total uncompressed size, per-member ratio, entry count from the end
record before the central directory is even parsed); every member is then read with an
explicit byte cap so a lying header cannot make us allocate more than the limits allow.
npz members are not ratio-checked (arrays of zeros legitimately compress >1000x);
their total declared size and each .npy header (shape x dtype must equal the member's
size) bound memory instead, and are checked before ``np.load``.

Manifest CSV: either the separate ``csv_file`` upload or a member named
``manifest.csv`` anywhere in the zip (at most one). If both are present the separate
upload wins and the member is ignored, so a client can correct a manifest without
re-zipping. Columns ``filename,external_id,split`` (header required, case-insensitive,
only ``filename`` mandatory, UTF-8 with optional BOM); ``filename`` is the
member path inside the zip (a leading ``./`` is ignored). Files not listed get the
defaults (external id = file name without directory, split = caller's default).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import posixpath
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.items.media import (
    MEDIA_FLOAT32,
    MEDIA_PNG,
    MediaError,
    MediaLimits,
    PreparedItem,
    prepare_image,
    validate_external_id,
    validate_split,
)
from worker.ml.spec import FEATURE_NAME

MANIFEST_NAME: Final = "manifest.csv"
CSV_COLUMNS: Final = ("filename", "external_id", "split")
# Members that are never items: OS junk. Dotfiles and __MACOSX/ are handled by rule.
_JUNK_NAMES: Final = frozenset({"thumbs.db", "desktop.ini"})
# Central-directory entries allowed per item: real archives carry directory entries
# and macOS "._" twins, but millions of empty entries are a memory attack on ZipFile.
_ENTRIES_PER_ITEM: Final = 3
_NPZ_ARRAYS: Final = frozenset({"images", "features", "external_ids", "split"})
_EOCD_SIG: Final = b"PK\x05\x06"
_ZIP64_LOCATOR_SIG: Final = b"PK\x06\x07"
_LOCAL_HEADER_SIG: Final = b"PK\x03\x04"


# ------------------------------------------------------------------------- sniffing


def sniff_archive(head: bytes) -> Literal["zip", "npz", "unknown"]:
    """Classify an upload from its first bytes (give at least ~300).

    An npz is a zip too, so the first member's name (stored in the local header right
    at offset 30) decides: ``*.npy`` means npz. This is only routing; ``prepare_zip``
    and ``prepare_npz`` re-validate every member name.
    """
    if head.startswith(_EOCD_SIG):  # an empty zip
        return "zip"
    if not head.startswith(_LOCAL_HEADER_SIG) or len(head) < 30:
        return "unknown"
    name_len = int.from_bytes(head[26:28], "little")
    name = head[30 : 30 + name_len]
    if len(name) == name_len and name.lower().endswith(b".npy"):
        return "npz"
    return "zip"


# ------------------------------------------------------------------- zip plumbing


def _archive_size(archive: BinaryIO) -> int:
    """Size of a seekable upload, without reading it."""
    archive.seek(0, io.SEEK_END)
    size = archive.tell()
    archive.seek(0)
    return size


def _declared_entry_count(archive: BinaryIO) -> int | None:
    """Entry count from the end-of-central-directory record (zip64 aware), or None.

    Read before ``zipfile.ZipFile`` builds a ZipInfo per entry, so a 500 MB central
    directory of empty entries is refused without materialising millions of objects.
    """
    size = _archive_size(archive)
    tail_len = min(size, 22 + 65535)
    archive.seek(size - tail_len)
    tail = archive.read(tail_len)
    archive.seek(0)
    pos = tail.rfind(_EOCD_SIG)
    if pos < 0 or pos + 22 > len(tail):
        return None
    count = int.from_bytes(tail[pos + 10 : pos + 12], "little")
    if count != 0xFFFF:
        return count
    loc = pos - 20
    if loc < 0 or tail[loc : loc + 4] != _ZIP64_LOCATOR_SIG:
        return None
    eocd64_offset = int.from_bytes(tail[loc + 8 : loc + 16], "little")
    archive.seek(eocd64_offset)
    record = archive.read(56)
    archive.seek(0)
    if len(record) < 40:
        return None
    return int.from_bytes(record[32:40], "little")


def _open_zip(archive: BinaryIO, limits: MediaLimits, what: str) -> zipfile.ZipFile:
    """Open an uploaded zip after the cheap checks (upload size, entry count)."""
    size = _archive_size(archive)
    if size > limits.max_bulk_bytes:
        raise MediaError(
            "too_large", f"the {what} is {size:,} bytes; the limit is {limits.max_bulk_bytes:,}"
        )
    entries = _declared_entry_count(archive)
    max_entries = _ENTRIES_PER_ITEM * limits.max_bulk_items + 16
    if entries is not None and entries > max_entries:
        raise MediaError(
            "too_many_items",
            f"the {what} has {entries:,} entries; at most {limits.max_bulk_items:,} items "
            "are allowed per upload",
        )
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise MediaError(f"bad_{what}", f"the {what} is not a valid zip: {exc}") from exc


def _unsafe_reason(name: str) -> str | None:
    """Why a member name would escape or confuse a directory, or None if it is fine.

    We never extract to disk, but names become external ids and may be extracted by
    someone else later; refusing them is cheaper than reasoning about every consumer.
    Backslashes count as separators because Windows tools treat them so.
    """
    if "\x00" in name or not name.isprintable():
        return "contains control characters"
    if name.startswith(("/", "\\")):
        return "is an absolute path"
    if len(name) >= 2 and name[1] == ":":
        return "has a drive letter"
    if ".." in name.replace("\\", "/").split("/"):
        return "contains '..'"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    """Unix zips keep the file mode in the high 16 bits of external_attr."""
    return stat.S_ISLNK(info.external_attr >> 16)


def _is_ignored(name: str) -> bool:
    """Directories' junk, macOS resource forks, dotfiles: never items."""
    parts = [p for p in name.split("/") if p and p != "."]
    if not parts:
        return True
    if parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return True
    return parts[-1].lower() in _JUNK_NAMES


def _normalise(name: str) -> str:
    """Canonical member path used for CSV matching and duplicate detection."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _check_member_header(info: zipfile.ZipInfo, limits: MediaLimits, cap: int) -> None:
    """Per-member checks that need no decompression (names are checked separately)."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise MediaError("encrypted_member", f"{name!r} is encrypted; upload unencrypted zips")
    if _is_symlink(info):
        raise MediaError("unsafe_path", f"{name!r} is a symbolic link; links are not allowed")
    if info.file_size > cap:
        raise MediaError(
            "too_large", f"{name!r} is {info.file_size:,} bytes; the limit is {cap:,} bytes"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > 0 and ratio > limits.max_compression_ratio:
        raise MediaError(
            "zip_bomb",
            f"{name!r} expands {ratio:,.0f}x (limit {limits.max_compression_ratio:,.0f}x); "
            "refusing a likely zip bomb",
        )


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, what: str) -> bytes:
    """Read one member, never more than ``cap`` bytes, whatever its header claims."""
    try:
        with zf.open(info) as member:
            data = member.read(cap + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise MediaError(
            f"bad_{what}", f"{info.filename!r} could not be read from the {what}: {exc}"
        ) from exc
    if len(data) > cap or len(data) != info.file_size:
        raise MediaError(
            "zip_bomb",
            f"{info.filename!r} does not match its declared size ({info.file_size:,} bytes)",
        )
    return data


# ---------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class _ManifestRow:
    external_id: str | None
    split: str | None


def _read_csv_upload(csv_file: BinaryIO, limits: MediaLimits) -> bytes:
    data = csv_file.read(limits.max_csv_bytes + 1)
    if len(data) > limits.max_csv_bytes:
        raise MediaError(
            "too_large", f"the manifest CSV is larger than {limits.max_csv_bytes:,} bytes"
        )
    return data


def parse_manifest(data: bytes, limits: MediaLimits) -> dict[str, _ManifestRow]:
    """Parse ``filename,external_id,split`` rows keyed by normalised filename.

    Header required, unknown columns refused (a typo like ``splt`` would otherwise be
    silently dropped), every error names its line.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MediaError("bad_csv", f"the manifest CSV is not UTF-8: {exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise MediaError("bad_csv", "the manifest CSV is empty; a header row is required") from None
    except csv.Error as exc:
        raise MediaError("bad_csv", f"manifest CSV line 1: {exc}") from exc
    _check_header(header)
    rows: dict[str, _ManifestRow] = {}
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # blank lines are harmless
            if len(rows) >= limits.max_bulk_items:
                raise MediaError(
                    "too_many_items",
                    f"the manifest CSV has more than {limits.max_bulk_items:,} rows",
                )
            _add_row(rows, header, values, reader.line_num)
    except csv.Error as exc:
        raise MediaError("bad_csv", f"manifest CSV line {reader.line_num}: {exc}") from exc
    return rows


def _check_header(header: list[str]) -> None:
    if "filename" not in header:
        raise MediaError(
            "bad_csv",
            f"manifest CSV header must include 'filename' (columns: {', '.join(CSV_COLUMNS)}); "
            f"got {header!r}",
        )
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown or len(set(header)) != len(header):
        raise MediaError(
            "bad_csv",
            f"manifest CSV header {header!r} has unknown or repeated columns; "
            f"allowed: {', '.join(CSV_COLUMNS)}",
        )


def _add_row(
    rows: dict[str, _ManifestRow], header: list[str], values: list[str], line: int
) -> None:
    if len(values) != len(header):
        raise MediaError(
            "bad_csv", f"manifest CSV line {line}: {len(values)} fields, expected {len(header)}"
        )
    record = {h: v.strip() for h, v in zip(header, values, strict=True)}
    filename = _normalise(record["filename"])
    if not filename:
        raise MediaError("bad_csv", f"manifest CSV line {line}: empty filename")
    if filename in rows:
        raise MediaError("bad_csv", f"manifest CSV line {line}: {filename!r} is listed twice")
    external_id = record.get("external_id") or None
    split = record.get("split") or None
    label = f"manifest CSV line {line}"
    try:
        validate_external_id(external_id, label)
        validate_split(split, label)
    except MediaError as exc:
        raise MediaError("bad_csv", str(exc)) from exc
    rows[filename] = _ManifestRow(external_id, split)


# ---------------------------------------------------------------------------- zip


@dataclass(frozen=True)
class _PlannedMember:
    info: zipfile.ZipInfo
    sha256: bytes
    item: PreparedItem  # payload left empty; filled on the second pass


def _select_members(
    zf: zipfile.ZipFile, limits: MediaLimits
) -> tuple[list[zipfile.ZipInfo], zipfile.ZipInfo | None]:
    """Check every entry's name/header, drop junk, return (images, manifest member)."""
    images: list[zipfile.ZipInfo] = []
    manifests: list[zipfile.ZipInfo] = []
    seen: set[str] = set()
    total = 0
    for info in zf.infolist():
        reason = _unsafe_reason(info.filename)
        if reason is not None:
            raise MediaError("unsafe_path", f"zip member {info.filename!r} {reason}")
        if info.is_dir() or _is_ignored(info.filename):
            continue
        name = _normalise(info.filename)
        if name in seen:
            raise MediaError("duplicate_filename", f"zip member {name!r} appears twice")
        seen.add(name)
        is_manifest = posixpath.basename(name) == MANIFEST_NAME
        cap = limits.max_csv_bytes if is_manifest else limits.max_upload_bytes
        _check_member_header(info, limits, cap)
        total += info.file_size
        (manifests if is_manifest else images).append(info)
    if total > limits.max_bulk_uncompressed_bytes:
        raise MediaError(
            "zip_bomb",
            f"the zip expands to {total:,} bytes; the limit is "
            f"{limits.max_bulk_uncompressed_bytes:,}",
        )
    if len(images) > limits.max_bulk_items:
        raise MediaError(
            "too_many_items",
            f"the zip has {len(images):,} files; the limit is {limits.max_bulk_items:,}",
        )
    if len(manifests) > 1:
        names = ", ".join(repr(m.filename) for m in manifests)
        raise MediaError("bad_csv", f"the zip has more than one {MANIFEST_NAME}: {names}")
    return images, (manifests[0] if manifests else None)


def _load_manifest(
    zf: zipfile.ZipFile,
    member: zipfile.ZipInfo | None,
    csv_file: BinaryIO | None,
    limits: MediaLimits,
) -> dict[str, _ManifestRow]:
    if csv_file is not None:
        return parse_manifest(_read_csv_upload(csv_file, limits), limits)
    if member is not None:
        return parse_manifest(_read_member(zf, member, limits.max_csv_bytes, "zip"), limits)
    return {}


def _plan_zip(
    zf: zipfile.ZipFile, csv_file: BinaryIO | None, limits: MediaLimits
) -> list[_PlannedMember]:
    """First pass: validate everything, keep only metadata and digests (not payloads)."""
    images, manifest_member = _select_members(zf, limits)
    manifest = _load_manifest(zf, manifest_member, csv_file, limits)
    names = {_normalise(info.filename) for info in images}
    missing = sorted(set(manifest) - names)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise MediaError(
            "bad_csv",
            f"the manifest CSV names {len(missing)} file(s) not in the zip: {shown}",
        )
    planned: list[_PlannedMember] = []
    owners: dict[str, str] = {}
    for info in images:
        name = _normalise(info.filename)
        row = manifest.get(name, _ManifestRow(None, None))
        external_id = row.external_id or posixpath.basename(name)
        if external_id in owners:
            raise MediaError(
                "duplicate_external_id",
                f"external id {external_id!r} is used by both {owners[external_id]!r} and "
                f"{name!r}; give them distinct ids in {MANIFEST_NAME}",
            )
        owners[external_id] = name
        data = _read_member(zf, info, limits.max_upload_bytes, "zip")
        item = prepare_image(
            data, limits=limits, filename=name, external_id=external_id, split=row.split
        )
        planned.append(_PlannedMember(info, hashlib.sha256(data).digest(), _strip(item)))
    return planned


def _strip(item: PreparedItem) -> PreparedItem:
    """Drop the payload so the plan stays small; it is re-read on the second pass."""
    return PreparedItem(
        b"", item.media_type, item.width, item.height, item.external_id, item.split, item.meta
    )


def _emit_zip(zf: zipfile.ZipFile, plan: list[_PlannedMember], cap: int) -> Iterator[PreparedItem]:
    """Second pass: re-read payloads; the digest proves they are the bytes validated."""
    with zf:
        for entry in plan:
            data = _read_member(zf, entry.info, cap, "zip")
            if hashlib.sha256(data).digest() != entry.sha256:
                raise MediaError(
                    "bad_zip", f"{entry.info.filename!r} changed while it was being imported"
                )
            item = entry.item
            yield PreparedItem(
                data,
                item.media_type,
                item.width,
                item.height,
                item.external_id,
                item.split,
                item.meta,
            )


class ZipImport:
    """A fully validated zip upload: iterate it to get the items with payloads.

    ``len()`` is known before any payload is read again, so the caller can check
    quotas or pre-allocate. Memory stays at one image at a time: the validation pass
    keeps only digests, and iteration re-reads each member (verifying its digest).
    Iterate once; iteration closes the zip (``close()`` if you stop early).
    """

    def __init__(self, zf: zipfile.ZipFile, plan: list[_PlannedMember], cap: int) -> None:
        self._zf = zf
        self._plan = plan
        self._cap = cap

    def __len__(self) -> int:
        return len(self._plan)

    def __iter__(self) -> Iterator[PreparedItem]:
        return _emit_zip(self._zf, self._plan, self._cap)

    def close(self) -> None:
        self._zf.close()


def prepare_zip(archive: BinaryIO, *, csv_file: BinaryIO | None, limits: MediaLimits) -> ZipImport:
    """Validate a zip of PNG/JPEG images (and its manifest) completely, eagerly.

    Raises :class:`MediaError` from *this call* if anything is wrong, so nothing is
    imported from a bad archive; the returned object yields the items (payload =
    original member bytes). ``archive`` must be seekable and stay open while iterating.
    """
    zf = _open_zip(archive, limits, "zip")
    try:
        plan = _plan_zip(zf, csv_file, limits)
    except BaseException:
        zf.close()
        raise
    return ZipImport(zf, plan, limits.max_upload_bytes)


# ---------------------------------------------------------------------------- npz


def _check_npz_members(zf: zipfile.ZipFile, limits: MediaLimits) -> None:
    """Names and declared sizes of the npz members, before numpy reads anything."""
    total = 0
    seen: set[str] = set()
    for info in zf.infolist():
        stem, ext = posixpath.splitext(info.filename)
        if ext != ".npy" or (stem not in _NPZ_ARRAYS and feature_array_name(stem) is None):
            raise MediaError(
                "bad_npz",
                f"npz member {info.filename!r} is not expected; allowed arrays: "
                f"{', '.join(sorted(_NPZ_ARRAYS))}, and features_<name> (a-z 0-9 _ . -) for "
                "named feature vectors beside images",
            )
        if stem in seen:
            raise MediaError("bad_npz", f"npz member {info.filename!r} appears twice")
        seen.add(stem)
        if info.flag_bits & 0x1:
            raise MediaError("encrypted_member", f"npz member {info.filename!r} is encrypted")
        total += info.file_size
    if total > limits.max_bulk_uncompressed_bytes:
        raise MediaError(
            "zip_bomb",
            f"the npz expands to {total:,} bytes; the limit is "
            f"{limits.max_bulk_uncompressed_bytes:,}",
        )


def _npy_header(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo
) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Read just the .npy header and check it agrees with the member's declared size.

    numpy allocates the whole array from the header's shape *before* reading data, so a
    tiny member claiming shape (10**12,) must be refused here, not by np.load.
    """
    name = info.filename
    try:
        with zf.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
            header_len = fp.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise MediaError("bad_npz", f"npz member {name!r} is not a valid .npy: {exc}") from exc
    if dtype.hasobject:
        raise MediaError(
            "bad_npz", f"npz member {name!r} holds Python objects (pickle); use plain arrays"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if any(d < 0 for d in shape) or nbytes + header_len != info.file_size:
        raise MediaError(
            "bad_npz",
            f"npz member {name!r} declares shape {shape} of {dtype} that does not match its size",
        )
    return shape, dtype


def _precheck_shapes(shapes: dict[str, tuple[int, ...]], limits: MediaLimits) -> None:
    """Limit checks on declared shapes, so oversized arrays are refused before loading.

    Only the limits are checked here; dtype/shape rules are checked once, after loading.
    """
    for key in ("images", "features"):
        shape = shapes.get(key, ())
        if shape and shape[0] > limits.max_bulk_items:
            raise MediaError(
                "too_many_items",
                f"the npz has {shape[0]:,} rows; the limit is {limits.max_bulk_items:,}",
            )
    images = shapes.get("images", ())
    if len(images) >= 3 and images[1] * images[2] > limits.max_pixels:
        raise MediaError(
            "too_many_pixels",
            f"npz images are {images[2]}x{images[1]} = {images[1] * images[2]:,} pixels; "
            f"the limit is {limits.max_pixels:,}",
        )
    for key, features in shapes.items():
        if key != "features" and feature_array_name(key) is None:
            continue
        if len(features) == 2 and features[1] > limits.max_feature_dim:
            raise MediaError(
                "too_large",
                f"npz {key} have D={features[1]:,}; the limit is {limits.max_feature_dim:,}",
            )


def _load_npz_arrays(
    archive: BinaryIO, zf: zipfile.ZipFile, limits: MediaLimits
) -> dict[str, npt.NDArray[Any]]:
    """Headers first (cheap, bounded), then np.load with allow_pickle=False."""
    shapes = {posixpath.splitext(i.filename)[0]: _npy_header(zf, i)[0] for i in zf.infolist()}
    _precheck_shapes(shapes, limits)
    archive.seek(0)
    try:
        with np.load(archive, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise MediaError("bad_npz", f"the npz could not be loaded: {exc}") from exc


def _npz_strings(arrays: dict[str, npt.NDArray[Any]], key: str, n: int) -> list[str] | None:
    """Optional per-row string array (``external_ids`` or ``split``) as a list."""
    if key not in arrays:
        return None
    arr = arrays[key]
    if arr.dtype.kind not in "US" or arr.shape != (n,):
        raise MediaError(
            "bad_npz",
            f"npz array {key!r} must be a string array of shape ({n},); "
            f"got {arr.dtype} {arr.shape}",
        )
    if arr.dtype.kind == "S":
        try:
            return [bytes(v).decode("utf-8") for v in arr]
        except UnicodeDecodeError as exc:
            raise MediaError("bad_npz", f"npz array {key!r} is not UTF-8: {exc}") from exc
    return [str(v) for v in arr]


def _npz_labels(
    arrays: dict[str, npt.NDArray[Any]], n: int
) -> tuple[list[str | None], list[str | None]]:
    """External ids (None = caller's default) and splits, validated per row."""
    given_ids = _npz_strings(arrays, "external_ids", n)
    given_splits = _npz_strings(arrays, "split", n)
    ids: list[str | None] = [None] * n if given_ids is None else list(given_ids)
    splits: list[str | None] = [None] * n if given_splits is None else list(given_splits)
    seen: dict[str, int] = {}
    for i, (external_id, split) in enumerate(zip(ids, splits, strict=True)):
        label = f"npz row {i}"
        try:
            validate_external_id(external_id, label)
            validate_split(split, label)
        except MediaError as exc:
            raise MediaError("bad_npz", str(exc)) from exc
        if external_id is not None:
            if external_id in seen:
                raise MediaError(
                    "duplicate_external_id",
                    f"npz rows {seen[external_id]} and {i} share external id {external_id!r}",
                )
            seen[external_id] = i
    return ids, splits


def encode_png(array: npt.NDArray[np.uint8]) -> bytes:
    """Deterministic PNG: same array -> same bytes (no metadata, fixed zlib settings).

    Determinism matters because payloads are content-addressed: re-uploading the same
    npz must dedupe instead of creating new blobs.
    """
    mode = "L" if array.ndim == 2 else "RGB"
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), mode=mode).save(
        buf, format="PNG", optimize=False, compress_level=6
    )
    return buf.getvalue()


def _npz_image_items(
    images: npt.NDArray[Any],
    ids: list[str | None],
    splits: list[str | None],
    limits: MediaLimits,
) -> Callable[[int], PreparedItem]:
    if images.dtype != np.uint8:
        raise MediaError(
            "bad_npz", f"npz 'images' must be uint8; got {images.dtype} (use .astype(np.uint8))"
        )
    grey = images.ndim == 3
    if not (grey or (images.ndim == 4 and images.shape[3] == 3)):
        raise MediaError(
            "bad_npz",
            f"npz 'images' must have shape (N,H,W) grey or (N,H,W,3) RGB; got {images.shape}",
        )
    height, width = int(images.shape[1]), int(images.shape[2])
    if height == 0 or width == 0:
        raise MediaError("bad_npz", f"npz 'images' are empty ({width}x{height})")
    if height * width > limits.max_pixels:
        raise MediaError(
            "too_many_pixels",
            f"npz images are {width}x{height} = {width * height:,} pixels; "
            f"the limit is {limits.max_pixels:,}",
        )
    mode = "L" if grey else "RGB"

    def item(i: int) -> PreparedItem:
        return PreparedItem(
            encode_png(images[i]),
            MEDIA_PNG,
            width,
            height,
            ids[i],
            splits[i],
            {"mode": mode, "index": i},
        )

    return item


FEATURES_PREFIX: Final = "features_"


def feature_array_name(stem: str) -> str | None:
    """The vector name of an npz array ``features_<name>``, or None for any other array."""
    if not stem.startswith(FEATURES_PREFIX):
        return None
    name = stem[len(FEATURES_PREFIX) :]
    return name if FEATURE_NAME.fullmatch(name) else None


def check_feature_array(
    features: npt.NDArray[Any], key: str, n: int | None, limits: MediaLimits
) -> int:
    """A float32 (N, D) array of finite values (N = ``n`` when given); returns D."""
    if features.dtype.kind != "f" or features.dtype.itemsize != 4:
        raise MediaError(
            "bad_npz",
            f"npz {key!r} must be float32; got {features.dtype} (use .astype(np.float32))",
        )
    if features.ndim != 2 or features.shape[1] == 0 or (n is not None and len(features) != n):
        rows = "N" if n is None else str(n)
        raise MediaError("bad_npz", f"npz {key!r} must have shape ({rows},D); got {features.shape}")
    dim = int(features.shape[1])
    if dim > limits.max_feature_dim:
        raise MediaError(
            "too_large", f"npz {key} have D={dim:,}; the limit is {limits.max_feature_dim:,}"
        )
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)[:5].tolist()
        raise MediaError("bad_npz", f"npz {key!r} has NaN or infinite values in rows {bad}")
    return dim


def named_feature_arrays(
    arrays: dict[str, npt.NDArray[Any]], n: int | None, limits: MediaLimits
) -> dict[str, npt.NDArray[Any]]:
    """The npz's ``features_<name>`` arrays by name, each checked (N rows when ``n`` given)."""
    out: dict[str, npt.NDArray[Any]] = {}
    for key in sorted(arrays):
        name = feature_array_name(key)
        if name is not None:
            check_feature_array(arrays[key], key, n, limits)
            out[name] = arrays[key]
    return out


def _npz_feature_items(
    features: npt.NDArray[Any],
    ids: list[str | None],
    splits: list[str | None],
    limits: MediaLimits,
) -> Callable[[int], PreparedItem]:
    dim = check_feature_array(features, "features", None, limits)

    def item(i: int) -> PreparedItem:
        return PreparedItem(
            features[i].astype("<f4").tobytes(),
            MEDIA_FLOAT32,
            dim,
            1,
            ids[i],
            splits[i],
            {"index": i},
        )

    return item


class NpzImport:
    """A fully validated npz upload: iterate it to get the items with payloads.

    The arrays are in memory (bounded by ``max_bulk_uncompressed_bytes``); each item's
    payload (a PNG, a feature vector's bytes) is made as iteration reaches it, so an upload
    never holds every payload at once (encoding them all up front let a small npz of zeros
    take the API's memory to gigabytes: docs/reliability.md, issue 15 item 8). Iterate as
    often as needed.
    """

    def __init__(self, n: int, make: Callable[[int], PreparedItem]) -> None:
        self._n = n
        self._make = make

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[PreparedItem]:
        return (self._make(i) for i in range(self._n))


def open_npz(archive: BinaryIO, *, limits: MediaLimits) -> NpzImport:
    """Validate an npz of ``images`` (uint8) or ``features`` (float32) completely, eagerly.

    Optional ``external_ids`` and ``split`` string arrays of shape (N,). Without
    ``external_ids`` items get ``external_id=None`` (the caller picks a default) and
    ``meta["index"]`` is the row. Pickle is never allowed. Every check runs in this call,
    so a refused npz raises :class:`MediaError` before the first item is handed out.
    """
    with _open_zip(archive, limits, "npz") as zf:
        _check_npz_members(zf, limits)
        arrays = _load_npz_arrays(archive, zf, limits)
    has_images, has_features = "images" in arrays, "features" in arrays
    if has_images == has_features:
        raise MediaError("bad_npz", "the npz must contain exactly one of 'images' or 'features'")
    data = arrays["images" if has_images else "features"]
    n = int(data.shape[0]) if data.ndim else 0
    if n == 0:
        raise MediaError("bad_npz", "the npz contains no rows")
    if n > limits.max_bulk_items:
        raise MediaError(
            "too_many_items", f"the npz has {n:,} rows; the limit is {limits.max_bulk_items:,}"
        )
    ids, splits = _npz_labels(arrays, n)
    named = named_feature_arrays(arrays, n, limits)
    if has_images:
        image_item = _npz_image_items(data, ids, splits, limits)
        if not named:
            return NpzImport(n, image_item)

        def with_features(i: int) -> PreparedItem:
            item = image_item(i)
            item.features.update({k: v[i].astype("<f4").tobytes() for k, v in named.items()})
            return item

        return NpzImport(n, with_features)
    if named:
        raise MediaError(
            "bad_npz", "named feature vectors (features_<name>) go beside 'images', not 'features'"
        )
    return NpzImport(n, _npz_feature_items(data, ids, splits, limits))


def open_feature_npz(
    archive: BinaryIO, *, limits: MediaLimits
) -> tuple[list[str], dict[str, npt.NDArray[Any]]]:
    """An npz of ``external_ids`` (N,) and one or more ``features_<name>`` (N, D) float32
    arrays, for items uploaded before: (external ids, arrays by name), checked completely."""
    with _open_zip(archive, limits, "npz") as zf:
        _check_npz_members(zf, limits)
        arrays = _load_npz_arrays(archive, zf, limits)
    others = sorted(set(arrays) - {"external_ids"} - {k for k in arrays if feature_array_name(k)})
    if others:
        raise MediaError(
            "bad_npz", f"a feature upload holds external_ids and features_<name> only, not {others}"
        )
    if "external_ids" not in arrays:
        raise MediaError("bad_npz", "the npz must name its items in 'external_ids'")
    n = int(arrays["external_ids"].shape[0]) if arrays["external_ids"].ndim == 1 else -1
    ids = _npz_strings(arrays, "external_ids", max(n, 0))
    if ids is None or n <= 0:
        raise MediaError("bad_npz", "'external_ids' must be a non-empty string array (N,)")
    if n > limits.max_bulk_items:
        raise MediaError(
            "too_many_items", f"the npz has {n:,} rows; the limit is {limits.max_bulk_items:,}"
        )
    if len(set(ids)) != n:
        raise MediaError("duplicate_external_id", "'external_ids' names an item twice")
    named = named_feature_arrays(arrays, n, limits)
    if not named:
        raise MediaError("bad_npz", "the npz holds no features_<name> array")
    return ids, named


def prepare_npz(archive: BinaryIO, *, limits: MediaLimits) -> list[PreparedItem]:
    """:func:`open_npz`'s items as a list, every payload made at once: for small arrays."""
    return list(open_npz(archive, limits=limits))
