"""Issue 15, item 10: inputs that used to end in a 500 are refused with the usual error body.

NUL characters (Postgres text cannot hold them; the hot path answered a plain-text 500),
cursors past the id columns' range, and a chunked over-long import body.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import add_member, create_project, lease_next, open_batch, upload_png
from tests.conftest import BOTH_DB_MODES, Accounts, row_counts

pytestmark = BOTH_DB_MODES


def _refused(r: Any, status: int = 422, code: str = "nul_character") -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == code
    assert error["message"]


def test_nul_in_json_bodies_is_422(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    project = create_project(app_client, accounts)
    upload_png(app_client, accounts, project["id"], external_id="a")
    before = row_counts(factory)
    eng = accounts.h("engineer")
    _refused(
        app_client.post(
            "/api/v1/projects",
            json={
                "name": "bad\x00name",
                "classes": ["a", "b"],
                "model_spec": project["model_spec"],
            },
            headers=eng,
        )
    )
    for row in (
        {"external_id": "a\x00", "annotator": "x"},
        {"external_id": "a", "annotator": "x\x00y"},
    ):
        _refused(
            app_client.post(
                f"/api/v1/projects/{project['id']}/annotations:import",
                json=[{**row, "class_index": 1}],
                headers=eng,
            )
        )
    _refused(
        app_client.post(
            f"/api/v1/projects/{project['id']}/annotations:import",
            content=b"external_id,annotator,class_index\na,x\x00,1\n",
            headers={**eng, "Content-Type": "text/csv"},
        )
    )
    _refused(
        app_client.post(
            f"/api/v1/annotators/{accounts.ids['annotator']}/tokens",
            json={"label": "laptop\x00"},
            headers=accounts.h("admin"),
        )
    )
    assert row_counts(factory) == before


def test_escaped_backslash_before_u0000_is_text_not_nul(
    app_client: TestClient, accounts: Accounts
) -> None:
    r = app_client.post(
        f"/api/v1/annotators/{accounts.ids['annotator']}/tokens",
        content=b'{"label": "C:\\\\u0000"}',
        headers={**accounts.h("admin"), "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["label"] == "C:\\u0000"


def test_nul_in_idempotency_key_on_the_labelling_path_is_422(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    project = create_project(app_client, accounts)
    item = upload_png(app_client, accounts, project["id"])
    add_member(app_client, accounts, project["id"], "annotator")
    open_batch(factory, project["id"], [item["id"]])
    lease_next(app_client, accounts, project["id"], "annotator")
    r = app_client.post(
        f"/api/v1/items/{item['id']}/annotations",
        json={"class_index": 1, "idempotency_key": "key\x00-0001"},
        headers=accounts.h("annotator"),
    )
    _refused(r)
    ok = app_client.post(
        f"/api/v1/items/{item['id']}/annotations",
        json={"class_index": 1, "idempotency_key": "key-0001"},
        headers=accounts.h("annotator"),
    )
    assert ok.status_code == 201, ok.text


def test_nul_in_query_and_path_is_422(app_client: TestClient, accounts: Accounts) -> None:
    project = create_project(app_client, accounts)
    eng = accounts.h("engineer")
    _refused(app_client.get(f"/api/v1/projects/{project['id']}/items?cursor=a%00b", headers=eng))
    _refused(app_client.get("/api/v1/projects/a%00b", headers=eng))


@pytest.mark.parametrize("last_id", [2**31, 2**63, 2**70, -1])
def test_cursor_past_the_id_range_is_422(
    app_client: TestClient, accounts: Accounts, last_id: int
) -> None:
    project = create_project(app_client, accounts)
    cursor = base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")
    for path in ("items", "annotations"):
        r = app_client.get(
            f"/api/v1/projects/{project['id']}/{path}?cursor={cursor}",
            headers=accounts.h("engineer"),
        )
        _refused(r, code="bad_cursor")


def test_chunked_import_body_over_the_limit_is_413(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    project = create_project(app_client, accounts)
    before = row_counts(factory)
    line = b"e,x,1\n" * 1000

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b"external_id,annotator,class_index\n"
        for _ in range(2 * 1024 * 1024 // len(line) + 1):
            yield line

    r = app_client.post(
        f"/api/v1/projects/{project['id']}/annotations:import",
        content=chunks(),
        headers={**accounts.h("engineer"), "Content-Type": "text/csv"},
    )
    _refused(r, status=413, code="too_large")
    assert row_counts(factory) == before
