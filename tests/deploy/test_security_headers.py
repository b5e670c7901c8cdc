"""Issue 15, item 13: browser-facing headers on pages, API answers and payloads; no CDN docs
and no open /metrics in production."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.core.config import Settings
from app.main import create_app
from tests.api.helpers import create_project, png_bytes
from tests.conftest import Accounts

STRONG = "9f2c4e7a1b3d5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e"


def _framing_denied(headers: httpx.Headers) -> None:
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_pages_and_api_answers_carry_the_headers(
    app_client: TestClient, accounts: Accounts
) -> None:
    for page in ("/", "/annotate.html", "/dashboard.html", "/js/api.js"):
        r = app_client.get(page)
        assert r.status_code == 200, page
        _framing_denied(r.headers)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
    api = app_client.get("/api/v1/me", headers=accounts.h("engineer"))
    _framing_denied(api.headers)
    refused = app_client.get("/api/v1/me")  # errors too
    assert refused.status_code == 401
    _framing_denied(refused.headers)


def test_frontend_has_no_inline_script_or_style() -> None:
    root = Path(__file__).resolve().parents[2] / "frontend"
    for page in root.glob("*.html"):
        text = page.read_text()
        for inline in ("<script>", "<style", " style="):
            assert inline not in text, (page, inline)
        assert not re.search(r"\son[a-z]+\s*=", text), page  # no onclick= and the like


def test_a_png_with_html_appended_is_never_served_as_a_page(
    app_client: TestClient, accounts: Accounts
) -> None:
    pid = create_project(app_client, accounts)["id"]
    polyglot = png_bytes(3) + b"<html><script>alert(document.domain)</script></html>"
    up = app_client.post(
        f"/api/v1/projects/{pid}/items",
        files={"file": ("x.html", polyglot, "text/html")},
        headers=accounts.h("engineer"),
    )
    if up.status_code != 201:  # refused outright is as good
        assert up.status_code in (415, 422), up.text
        return
    r = app_client.get(f"/api/v1/items/{up.json()['id']}/payload", headers=accounts.h("engineer"))
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith("attachment")
    csp = r.headers["content-security-policy"]
    assert "sandbox" in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp


def _production_app(tmp_path: Path, engine: Engine, token: str | None) -> TestClient:
    settings = Settings(environment="production", secret_key=STRONG, data_dir=tmp_path / "data")
    application = create_app(settings, engine=engine)
    # The token comes from the environment in a real start; set here without touching it.
    application.state.metrics_token = token
    return TestClient(application)


def _docs_served_from_the_package(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert "cdn" not in r.text.lower()
    assert "<script>" not in r.text  # no inline script: the page's CSP allows none
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    for asset in (
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/js/docs.js",
    ):
        got = client.get(asset)
        assert got.status_code == 200, asset
        assert len(got.content) > 30, asset
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200


def test_production_serves_docs_from_the_package(tmp_path: Path, migrated_engine: Engine) -> None:
    with _production_app(tmp_path, migrated_engine, None) as client:
        _docs_served_from_the_package(client)


def test_development_docs_are_the_same(app_client: TestClient) -> None:
    _docs_served_from_the_package(app_client)


def test_production_metrics_need_a_token(tmp_path: Path, migrated_engine: Engine) -> None:
    with _production_app(tmp_path, migrated_engine, None) as client:
        r = client.get("/metrics")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "metrics_token_unset"
    with _production_app(tmp_path, migrated_engine, "s3cret") as client:
        assert client.get("/metrics").status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert "annoloop" in ok.text
