"""Real-browser tests: Debian's Chromium, driven by Playwright, against ``annoloop up --demo``.

The browser is /usr/bin/chromium (``scripts/ensure_chromium.sh`` installs it), never a
download by ``playwright install``. Without it (or without the playwright package) these
tests skip on a developer machine and FAIL when ``CI`` is set.

One demo server (API + worker on the embedded SQLite setup) serves the whole session; the
tests share its project, so they are written to hold whatever order they run in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.browser.helpers import Demo, wait_for_cycle
from tests.integration.processes import env_for, free_port, process, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("ANNOLOOP_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the browser tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def demo(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``annoloop up --demo`` on a free port, its first cycle in ``labeling``."""
    root = tmp_path_factory.mktemp("browser-demo")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = root / "up.log"
    env = env_for({"ANNOLOOP_DATA_DIR": str(root / "data")})
    with process(["up", "--demo", "--port", str(port)], env, log):

        def tokens() -> tuple[str, str] | None:
            text = log.read_text(errors="replace")
            admin = re.search(r"admin token\s+(al_\S+)", text)
            annotator = re.search(r"annotator token\s+(al_\S+)", text)
            return (admin.group(1), annotator.group(1)) if admin and annotator else None

        admin, annotator = wait_for(tokens, 90, "the demo tokens", log)

        def healthy() -> bool | None:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200 or None
            except httpx.TransportError:
                return None

        wait_for(healthy, 60, "/healthz to answer 200", log)
        projects = httpx.get(
            f"{base}/api/v1/projects", headers={"Authorization": f"Bearer {admin}"}
        ).json()
        d = Demo(base, admin, annotator, int(projects[0]["id"]), log)
        wait_for_cycle(d, d.project_id, 1, "labeling", timeout=180)
        yield d


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Pages in fresh contexts (their own sessionStorage); a page's uncaught JS error fails
    the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(width: int = 1280, height: int = 800) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
