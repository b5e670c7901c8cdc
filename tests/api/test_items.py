from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import create_project, jpeg_bytes, png_bytes, upload_png
from tests.conftest import Accounts, row_counts


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_upload_one_png_and_one_jpeg_and_fetch_them(
    app_client: TestClient, accounts: Accounts
) -> None:
    pid = create_project(app_client, accounts)["id"]
    png = png_bytes(1)
    item = upload_png(app_client, accounts, pid, seed=1, external_id="first")
    assert (item["media_type"], item["width"], item["height"]) == ("image/png", 28, 28)
    assert item["external_id"] == "first"
    r = app_client.post(
        f"/api/v1/projects/{pid}/items",
        files={"file": ("photo.png", jpeg_bytes(2), "image/png")},  # the name lies
        data={"split": "test"},
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 201
    assert (r.json()["media_type"], r.json()["split"]) == ("image/jpeg", "test")
    payload = app_client.get(f"/api/v1/items/{item['id']}/payload", headers=accounts.h("engineer"))
    assert payload.status_code == 200
    assert payload.content == png
    assert payload.headers["content-type"] == "image/png"
    assert payload.headers["etag"] == f'"{item["blob_sha256"]}"'


def test_bulk_zip_with_manifest_and_npz_uploads(app_client: TestClient, accounts: Accounts) -> None:
    pid = create_project(app_client, accounts)["id"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(5):
            zf.writestr(f"imgs/{i}.png", png_bytes(10 + i))
    manifest = "filename,external_id,split\nimgs/0.png,zero,test\nimgs/1.png,one,pool\n"
    r = app_client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={
            "archive": ("a.zip", archive.getvalue(), "application/zip"),
            "manifest": ("m.csv", manifest.encode(), "text/csv"),
        },
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 5
    assert r.json()["splits"] == {"test": 1, "pool": 4}

    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    r = app_client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={
            "archive": (
                "x.npz",
                _npz(images=images, external_ids=np.array([f"n{i}" for i in range(7)])),
                "application/octet-stream",
            )
        },
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 7
    listing = app_client.get(
        f"/api/v1/projects/{pid}/items", params={"limit": 100}, headers=accounts.h("engineer")
    ).json()
    ids = {i["external_id"] for i in listing["items"]}
    assert {"zero", "one", "n0", "n6"} <= ids
    assert len(listing["items"]) == 12


def test_feature_vectors_go_to_mlp_projects_only(
    app_client: TestClient, accounts: Accounts
) -> None:
    feats = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    cnn = create_project(app_client, accounts)["id"]
    r = app_client.post(
        f"/api/v1/projects/{cnn}/items:bulk",
        files={"archive": ("f.npz", _npz(features=feats), "application/octet-stream")},
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "wrong_media_for_model"
    mlp = create_project(
        app_client,
        accounts,
        name="tabular",
        model_spec={"name": "mlp", "input_shape": [16], "hparams": {}},
    )["id"]
    r = app_client.post(
        f"/api/v1/projects/{mlp}/items:bulk",
        files={"archive": ("f.npz", _npz(features=feats), "application/octet-stream")},
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 201, r.text
    first = r.json()["first_id"]
    raw = app_client.get(f"/api/v1/items/{first}/payload", headers=accounts.h("engineer")).content
    assert np.array_equal(np.frombuffer(raw, "<f4"), feats[0])


def test_pagination_walks_every_item_once(app_client: TestClient, accounts: Accounts) -> None:
    pid = create_project(app_client, accounts)["id"]
    created = [upload_png(app_client, accounts, pid, seed=s)["id"] for s in range(7)]
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = app_client.get(
            f"/api/v1/projects/{pid}/items", params=params, headers=accounts.h("engineer")
        ).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == created
    r = app_client.get(
        f"/api/v1/projects/{pid}/items", params={"limit": 100000}, headers=accounts.h("engineer")
    )
    assert r.status_code == 400
    r = app_client.get(
        f"/api/v1/projects/{pid}/items",
        params={"cursor": "garbage!"},
        headers=accounts.h("engineer"),
    )
    assert r.status_code == 400


def _bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 64, 9)  # only a sliver of the claimed rows
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_bad_uploads_are_refused_and_change_nothing(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = create_project(app_client, accounts)["id"]
    upload_png(app_client, accounts, pid, seed=0, external_id="taken")
    before = row_counts(factory)
    h = accounts.h("engineer")
    url = f"/api/v1/projects/{pid}/items"
    cases = [
        ("corrupt", ("c.png", png_bytes(3)[:60], "image/png"), 422, "corrupt_image"),
        ("text", ("t.png", b"hello, I am not an image" * 10, "image/png"), 422, "not_an_image"),
        ("bomb", ("b.png", _bomb_png(60000, 60000), "image/png"), 413, "too_many_pixels"),
        ("huge", ("h.png", b"\x89PNG" + b"\0" * (30 * 1024 * 1024), "image/png"), 413, "too_large"),
    ]
    for what, file, status, code in cases:
        r = app_client.post(url, files={"file": file}, headers=h)
        assert r.status_code == status, (what, r.text)
        assert r.json()["error"]["code"] == code, what
    r = app_client.post(
        url,
        files={"file": ("d.png", png_bytes(9), "image/png")},
        data={"external_id": "taken"},
        headers=h,
    )
    assert r.status_code == 409
    r = app_client.post(
        url, files={"file": ("d.png", png_bytes(9), "image/png")}, headers=accounts.h("annotator")
    )
    assert r.status_code in (403, 404)
    r = app_client.post(
        "/api/v1/projects/9999/items",
        files={"file": ("d.png", png_bytes(9), "image/png")},
        headers=h,
    )
    assert r.status_code == 404
    traversal = io.BytesIO()
    with zipfile.ZipFile(traversal, "w") as zf:
        zf.writestr("ok.png", png_bytes(20))
        zf.writestr("../evil.png", png_bytes(21))
    r = app_client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("a.zip", traversal.getvalue(), "application/zip")},
        headers=h,
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unsafe_path"
    assert row_counts(factory) == before
