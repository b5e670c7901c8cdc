"""Driving the two pages the way a person does: sign in, wait for an item, press keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page


def sign_in(page: Page, base: str, token: str) -> None:
    """Type the token on the start page and press Enter, as a person would."""
    page.goto(f"{base}/")
    page.locator("#token").fill(token)
    page.keyboard.press("Enter")
    page.locator("#project-list li[data-project-id]").first.wait_for()


@dataclass(frozen=True)
class Shown:
    item_id: int
    lease_id: int
    external_id: str


def shown_item(page: Page, other_than: int | None = None, timeout: float = 15_000) -> Shown:
    """Wait until the page shows a leased item (a different one than ``other_than``, if
    given) with its image decoded, and return it."""
    page.wait_for_function(
        """prev => document.body.dataset.phase === "leased"
             && document.getElementById("stage").dataset.itemId !== prev""",
        arg=str(other_than),
        timeout=timeout,
    )
    stage = page.locator("#stage")
    caption = page.locator("#item-caption").inner_text()
    return Shown(
        item_id=int(stage.get_attribute("data-item-id") or 0),
        lease_id=int(stage.get_attribute("data-lease-id") or 0),
        external_id=caption.split(" ", 1)[0],
    )


def wait_phase(page: Page, phase: str, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "phase => document.body.dataset.phase === phase", arg=phase, timeout=timeout
    )
