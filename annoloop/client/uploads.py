"""Upload bodies built on the client: folders of images as zips, arrays as npz, in parts.

Each part is one ``items:bulk`` request, which the server stores all or nothing; parts keep a
request under the server's size and item caps and let a progress bar move. numpy (arrays,
DataFrames) and pandas are imported only when such an upload is asked for.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
PART_ITEMS = 1000
PART_BYTES = 64 * 1024**2


@dataclass(frozen=True)
class Part:
    """One bulk request's archive and the external ids it creates (``None``: the server's)."""

    archive: bytes
    filename: str
    count: int
    external_ids: tuple[str, ...] | None


def image_files(folder: Path) -> list[Path]:
    """PNG/JPEG files under ``folder``, recursively, in a stable order; hidden ones skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(root) / name)
    return found


def folder_parts(
    folder: Path,
    split: str = "pool",
    *,
    part_items: int = PART_ITEMS,
    part_bytes: int = PART_BYTES,
) -> Iterator[Part]:
    """Zips of the folder's images with a manifest naming each by its path under the folder
    (``cats/001.png``), so two sub-folders' ``001.png`` stay two items."""
    files = image_files(folder)
    if not files:
        raise ValueError(f"{folder} holds no .png/.jpg/.jpeg files")
    batch: list[Path] = []
    size = 0
    for path in files:
        length = path.stat().st_size
        if batch and (len(batch) >= part_items or size + length > part_bytes):
            yield _zip_part(folder, batch, split)
            batch, size = [], 0
        batch.append(path)
        size += length
    if batch:
        yield _zip_part(folder, batch, split)


def _zip_part(folder: Path, files: list[Path], split: str) -> Part:
    names = [p.relative_to(folder).as_posix() for p in files]
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(["filename", "external_id", "split"])
    for name in names:
        writer.writerow([name, name, split])
    buf = io.BytesIO()
    # Stored, not deflated: PNG and JPEG are compressed already.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, path in zip(names, files, strict=True):
            zf.write(path, name)
        zf.writestr("manifest.csv", manifest.getvalue())
    return Part(buf.getvalue(), "images.zip", len(files), tuple(names))


def array_parts(
    *,
    images: Any = None,
    features: Any = None,
    external_ids: Sequence[str] | None = None,
    split: str | Sequence[str] = "pool",
    part_items: int = PART_ITEMS,
) -> Iterator[Part]:
    """npz parts of ``images`` (uint8, N×H×W or N×H×W×3) or ``features`` (float32, N×D)."""
    import numpy as np

    if (images is None) == (features is None):
        raise ValueError("give exactly one of images= or features=")
    name = "images" if images is not None else "features"
    data = np.asarray(images if images is not None else features)
    if name == "images" and data.dtype != np.uint8:
        raise ValueError(f"images must be uint8, not {data.dtype}")
    if name == "features":
        data = data.astype(np.float32, copy=False)
    n = len(data)
    ids = None if external_ids is None else [str(x) for x in external_ids]
    if ids is not None and len(ids) != n:
        raise ValueError(f"{len(ids)} external ids for {n} rows")
    splits = [split] * n if isinstance(split, str) else [str(s) for s in split]
    if len(splits) != n:
        raise ValueError(f"{len(splits)} splits for {n} rows")
    for start in range(0, n, max(1, part_items)):
        stop = min(n, start + part_items)
        arrays: dict[str, Any] = {name: data[start:stop], "split": np.asarray(splits[start:stop])}
        if ids is not None:
            arrays["external_ids"] = np.asarray(ids[start:stop])
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        part_ids = tuple(ids[start:stop]) if ids is not None else None
        yield Part(buf.getvalue(), f"{name}.npz", stop - start, part_ids)


def npz_parts(path: Path, *, part_items: int = PART_ITEMS) -> Iterator[Part]:
    """An ``.npz`` file as the server reads it (``images`` or ``features``, optional
    ``external_ids`` and ``split``), re-cut into parts."""
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    unknown = set(arrays) - {"images", "features", "external_ids", "split"}
    if unknown:
        raise ValueError(f"{path}: unexpected arrays {sorted(unknown)}")
    split = arrays.get("split")
    ids = arrays.get("external_ids")
    yield from array_parts(
        images=arrays.get("images"),
        features=arrays.get("features"),
        external_ids=None if ids is None else [str(x) for x in ids],
        split="pool" if split is None else [str(s) for s in split],
        part_items=part_items,
    )


def dataframe_parts(
    frame: Any,
    *,
    id_column: str | None = "external_id",
    split_column: str | None = "split",
    split: str = "pool",
    part_items: int = PART_ITEMS,
) -> Iterator[Part]:
    """A pandas DataFrame as feature rows (``mlp`` projects): every numeric column is a
    feature; ``external_id`` and ``split`` columns, when present, name and place each row.
    A column that is neither is refused rather than dropped."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("DataFrame uploads need pandas installed") from exc
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    ids = None
    splits: str | list[str] = split
    rest = frame
    if id_column and id_column in frame.columns:
        ids = [str(x) for x in frame[id_column]]
        rest = rest.drop(columns=[id_column])
    if split_column and split_column in frame.columns:
        splits = [str(x) for x in frame[split_column]]
        rest = rest.drop(columns=[split_column])
    bad = [str(c) for c in rest.columns if not pd.api.types.is_numeric_dtype(rest[c])]
    if bad:
        raise ValueError(f"columns {bad} are not numeric; features must be numbers")
    yield from array_parts(
        features=rest.to_numpy(dtype="float32"),
        external_ids=ids,
        split=splits,
        part_items=part_items,
    )
