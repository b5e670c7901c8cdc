"""A bulk upload's work and memory are bounded by settings that hold (issue 15, item 8): an
upload past them is refused whole, with 413 and nothing stored; one just under is stored,
in parts of ``PART_SIZE`` rows (so more than one part here) without losing all-or-nothing."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.items import service
from app.main import create_app
from tests.api.helpers import create_project, png_bytes
from tests.conftest import Accounts, row_counts

MAX_ITEMS = 120
MAX_UNCOMPRESSED = 120 * 28 * 28 + 4096  # the rows just fit, with the ids and .npy headers


@pytest.fixture
def bounded_client(
    settings: Settings,
    migrated_engine: Engine,
    factory: sessionmaker[Session],
    connection: Connection | None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    monkeypatch.setattr(service, "PART_SIZE", 50)
    update = {"max_bulk_items": MAX_ITEMS, "max_bulk_uncompressed_bytes": MAX_UNCOMPRESSED}
    own = None if connection is None else factory  # as app_client does
    app = create_app(
        settings.model_copy(update=update), engine=migrated_engine, session_factory=own
    )
    with TestClient(app) as client:
        yield client


def _npz(rows: int, side: int = 28) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        images=np.zeros((rows, side, side), np.uint8),
        external_ids=np.array([f"z{i:04}" for i in range(rows)]),
    )
    return buf.getvalue()


def _upload(client: TestClient, accounts: Accounts, pid: int, name: str, data: bytes) -> object:
    return client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": (name, data, "application/octet-stream")},
        headers=accounts.h("engineer"),
    )


def test_an_upload_past_the_bounds_is_refused_whole_and_one_under_is_stored(
    bounded_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(bounded_client, accounts)["id"]
    before = row_counts(factory)

    r = _upload(bounded_client, accounts, pid, "many.npz", _npz(MAX_ITEMS + 1))
    assert r.status_code == 413, r.text  # type: ignore[attr-defined]
    assert r.json()["error"]["code"] == "too_many_items"  # type: ignore[attr-defined]
    assert "120" in r.json()["error"]["message"]  # type: ignore[attr-defined]
    # Fewer rows, each bigger: past the uncompressed bound, which is what the arrays take.
    r = _upload(bounded_client, accounts, pid, "big.npz", _npz(40, side=64))
    assert r.status_code == 413, r.text  # type: ignore[attr-defined]
    assert r.json()["error"]["code"] == "zip_bomb"  # type: ignore[attr-defined]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(MAX_ITEMS + 1):
            zf.writestr(f"{i}.png", png_bytes(i))
    r = _upload(bounded_client, accounts, pid, "many.zip", archive.getvalue())
    assert r.status_code == 413, r.text  # type: ignore[attr-defined]
    assert row_counts(factory) == before  # nothing stored

    r = _upload(bounded_client, accounts, pid, "fits.npz", _npz(MAX_ITEMS))
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert body["created"] == MAX_ITEMS
    assert body["last_id"] - body["first_id"] == MAX_ITEMS - 1
    assert body["splits"] == {"pool": MAX_ITEMS}
    listed = bounded_client.get(
        f"/api/v1/projects/{pid}/items", params={"limit": 500}, headers=accounts.h("engineer")
    ).json()["items"]
    assert sorted(i["external_id"] for i in listed) == [f"z{i:04}" for i in range(MAX_ITEMS)]


def test_a_refusal_in_a_later_part_stores_nothing(
    bounded_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    """The 101st row clashes with an item already there: parts 1 and 2 (rows 0-99) were
    inserted by then, and go with the transaction."""
    pid = create_project(bounded_client, accounts)["id"]
    r = _upload(bounded_client, accounts, pid, "one.npz", _npz(1))
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    before = row_counts(factory)
    buf = io.BytesIO()
    ids = [f"y{i:04}" for i in range(110)]
    ids[100] = "z0000"
    np.savez_compressed(buf, images=np.zeros((110, 28, 28), np.uint8), external_ids=np.array(ids))
    r = _upload(bounded_client, accounts, pid, "clash.npz", buf.getvalue())
    assert r.status_code == 409, r.text  # type: ignore[attr-defined]
    assert row_counts(factory) == before
