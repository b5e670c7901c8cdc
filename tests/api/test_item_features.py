"""Items with both (issue 19, item 1): an image for people and named feature vectors for the
model, uploaded with the items or later by external id; the project's ``model_spec.input``
names the vector its model takes. Bad input is refused with a code and changes nothing."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.api.helpers import CLASSES
from tests.conftest import Accounts, row_counts

DIM = 8
MLP_ON_EMB = {"name": "mlp", "input_shape": [DIM], "input": "emb", "hparams": {"epochs": 1}}


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _project(client: TestClient, accounts: Accounts, spec: dict[str, Any] = MLP_ON_EMB) -> int:
    body = {"name": "embedded", "classes": CLASSES, "model_spec": spec}
    r = client.post("/api/v1/projects", json=body, headers=accounts.h("engineer"))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _bulk(client: TestClient, accounts: Accounts, pid: int, data: bytes) -> Any:
    return client.post(
        f"/api/v1/projects/{pid}/items:bulk",
        files={"archive": ("a.npz", data, "application/octet-stream")},
        headers=accounts.h("engineer"),
    )


def _features(client: TestClient, accounts: Accounts, pid: int, data: bytes) -> Any:
    return client.post(
        f"/api/v1/projects/{pid}/features:bulk",
        files={"archive": ("f.npz", data, "application/octet-stream")},
        headers=accounts.h("engineer"),
    )


def _ids(n: int) -> np.ndarray:
    return np.array([f"x{i}" for i in range(n)])


def test_images_with_named_vectors_in_one_upload(
    app_client: TestClient, accounts: Accounts
) -> None:
    pid = _project(app_client, accounts)
    assert (
        app_client.get(f"/api/v1/projects/{pid}", headers=accounts.h("engineer")).json()[
            "model_spec"
        ]["input"]
        == "emb"
    )
    images = _images(4)
    r = _bulk(
        app_client,
        accounts,
        pid,
        _npz(
            images=images,
            external_ids=_ids(4),
            features_emb=_vectors(4),
            **{"features_clip-b.32": _vectors(4, 3)},
        ),
    )
    assert r.status_code == 201, r.text
    summary = app_client.get(f"/api/v1/projects/{pid}/features", headers=accounts.h("engineer"))
    assert summary.json() == [
        {"name": "clip-b.32", "dim": 3, "items": 4, "missing": 0, "model_input": False},
        {"name": "emb", "dim": DIM, "items": 4, "missing": 0, "model_input": True},
    ]
    # People still see the image: the item's payload is the PNG.
    items = app_client.get(f"/api/v1/projects/{pid}/items", headers=accounts.h("engineer"))
    first = items.json()["items"][0]
    assert first["media_type"] == "image/png"
    payload = app_client.get(f"/api/v1/items/{first['id']}/payload", headers=accounts.h("engineer"))
    assert payload.headers["content-type"] == "image/png"


def test_vectors_later_by_external_id_and_no_cycle_before_they_are_all_there(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = _project(app_client, accounts)
    assert _bulk(
        app_client, accounts, pid, _npz(images=_images(5), external_ids=_ids(5))
    ).is_success
    before = row_counts(factory)
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=accounts.h("engineer"))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "features_missing"
    assert r.json()["error"]["detail"] == {"missing": 5}
    assert row_counts(factory) == before

    r = _features(app_client, accounts, pid, _npz(external_ids=_ids(3), features_emb=_vectors(3)))
    assert (r.status_code, r.json()) == (201, {"stored": {"emb": 3}})
    summary = app_client.get(f"/api/v1/projects/{pid}/features", headers=accounts.h("engineer"))
    assert summary.json()[0]["missing"] == 2
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=accounts.h("engineer"))
    assert r.json()["error"]["detail"] == {"missing": 2}

    # The rest, and a replacement of one already there: still one vector per item and name.
    vecs = _vectors(5, seed=1)
    r = _features(app_client, accounts, pid, _npz(external_ids=_ids(5), features_emb=vecs))
    assert r.status_code == 201
    counts = row_counts(factory)
    assert counts["item_feature"] == before["item_feature"] + 5
    r = app_client.post(f"/api/v1/projects/{pid}/cycles", json={}, headers=accounts.h("engineer"))
    assert r.status_code == 202, r.text


def test_bad_vectors_are_refused_and_change_nothing(
    app_client: TestClient, accounts: Accounts, factory: sessionmaker[Session]
) -> None:
    pid = _project(app_client, accounts)
    assert _bulk(
        app_client, accounts, pid, _npz(images=_images(3), external_ids=_ids(3))
    ).is_success
    before = row_counts(factory)
    cases = [
        # the model takes 8 values of emb
        (_npz(external_ids=_ids(3), features_emb=_vectors(3, DIM + 1)), 422, "wrong_feature_dim"),
        # an item that is not there (all or nothing: the two known ones are not stored either)
        (
            _npz(external_ids=np.array(["x0", "x1", "nope"]), features_emb=_vectors(3)),
            422,
            "unknown_external_id",
        ),
        (_npz(external_ids=_ids(3), features_emb=_vectors(2)), 422, "bad_npz"),
        (_npz(external_ids=_ids(3), features_emb=_vectors(3).astype(np.float64)), 422, "bad_npz"),
        (_npz(external_ids=_ids(3), **{"features_Bad Name": _vectors(3)}), 422, "bad_npz"),
        (_npz(external_ids=_ids(3)), 422, "bad_npz"),
        (_npz(features_emb=_vectors(3)), 422, "bad_npz"),
        (_npz(external_ids=np.array(["x0", "x0", "x1"]), features_emb=_vectors(3)), 422, None),
        (
            _npz(external_ids=_ids(3), features_emb=np.full((3, DIM), np.nan, np.float32)),
            422,
            "bad_npz",
        ),
    ]
    for data, status, code in cases:
        r = _features(app_client, accounts, pid, data)
        assert r.status_code == status, r.text
        if code is not None:
            assert r.json()["error"]["code"] == code
    # One name keeps one length: a second vector set "other" of 3, then one of 4, is refused.
    ok = _features(
        app_client, accounts, pid, _npz(external_ids=_ids(1), features_other=_vectors(1, 3))
    )
    assert ok.status_code == 201
    r = _features(
        app_client,
        accounts,
        pid,
        _npz(external_ids=np.array(["x2"]), features_other=_vectors(1, 4)),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "wrong_feature_dim")
    after = row_counts(factory)
    assert after["item_feature"] == before["item_feature"] + 1
    assert after["item"] == before["item"]

    # Items for such a model are images; named vectors go beside images only.
    r = _bulk(app_client, accounts, pid, _npz(features=_vectors(2)))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "wrong_media_for_model")
    r = _bulk(app_client, accounts, pid, _npz(features=_vectors(2), features_emb=_vectors(2)))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "bad_npz")
    r = _bulk(
        app_client,
        accounts,
        pid,
        _npz(images=_images(2), external_ids=np.array(["y0", "y1"]), features_emb=_vectors(2, 3)),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "wrong_feature_dim")
    assert row_counts(factory)["item"] == before["item"]


def test_the_input_key_of_a_model_spec_is_validated(
    app_client: TestClient, accounts: Accounts
) -> None:
    for bad in ("", "Has Space", "x" * 65, 3):
        body = {
            "name": "bad",
            "classes": CLASSES,
            "model_spec": {**MLP_ON_EMB, "input": bad},
        }
        r = app_client.post("/api/v1/projects", json=body, headers=accounts.h("engineer"))
        assert r.status_code == 422, r.text
        assert "input" in r.text
    # Without the key a project's spec is stored as before (no "input": null).
    body = {"name": "plain", "classes": CLASSES, "model_spec": {"name": "mlp", "input_shape": [4]}}
    r = app_client.post("/api/v1/projects", json=body, headers=accounts.h("engineer"))
    assert "input" not in r.json()["model_spec"]


def test_a_cnn_project_can_name_a_vector_input_too(
    app_client: TestClient, accounts: Accounts
) -> None:
    """Any model whose input shape holds D values takes a D-vector (reshaped)."""
    spec = {"name": "small_cnn", "input_shape": [1, 12, 12], "input": "grid"}
    pid = _project(app_client, accounts, spec)
    data = _npz(images=_images(2), external_ids=_ids(2), features_grid=_vectors(2, 144))
    assert _bulk(app_client, accounts, pid, data).status_code == 201
