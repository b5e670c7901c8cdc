"""After signing in, ``?next=`` leads back to a page of this site only (issue 15, item 4): the
browser's own URL parsing decides, so tricks that a prefix test let through stay home."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import pytest

from tests.browser.helpers import Demo

if TYPE_CHECKING:
    from playwright.sync_api import Page

HOST = "127.0.0.1"


@pytest.mark.parametrize(
    "target",
    ["/\\evil.example/", "/\t/evil.example/", "//evil.example/", "https://evil.example/x",
     "/ /evil.example/", "javascript:alert(1)"],
)  # fmt: skip
def test_next_never_leaves_the_site(demo: Demo, new_page: Callable[..., Page], target: str) -> None:
    page = new_page()
    left: list[str] = []  # requests to any host but the site's
    page.on("request", lambda r: left.append(r.url) if urlsplit(r.url).hostname != HOST else None)
    page.goto(f"{demo.base}/?next={quote(target, safe='')}")
    page.locator("#token").fill(demo.admin)
    page.keyboard.press("Enter")
    # Either the project list, or a path of this site (a space is a path, not a host).
    page.wait_for_timeout(1500)
    page.wait_for_load_state("networkidle")
    assert page.url.startswith(demo.base + "/")
    assert not left


def test_next_returns_to_a_page_of_the_site(demo: Demo, new_page: Callable[..., Page]) -> None:
    page = new_page()
    target = f"/dashboard.html?project={demo.project_id}"
    page.goto(f"{demo.base}/?next={quote(target, safe='')}")
    page.locator("#token").fill(demo.admin)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{demo.base}{target}")
