"""``/docs`` renders in a real browser from the packaged Swagger UI, under its own CSP, with
no request leaving the site (issue 15, item 13)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tests.browser.helpers import Demo

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_api_docs_render_from_the_site_alone(demo: Demo, new_page: Callable[..., Page]) -> None:
    page = new_page()
    elsewhere: list[str] = []
    refused: list[str] = []
    host = urlsplit(demo.base).hostname
    page.on(
        "request",
        lambda r: elsewhere.append(r.url) if urlsplit(r.url).hostname not in (host, None) else None,
    )
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(f"{demo.base}/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "annoloop" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock-tag").first.wait_for()  # the operations, from /openapi.json
    assert not elsewhere
    assert not refused
