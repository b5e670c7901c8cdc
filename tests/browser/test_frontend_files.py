"""Static checks of frontend/ that need no browser: it loads nothing from elsewhere, its module
imports resolve, and the dashboard offers exactly the strategies the API accepts."""

from __future__ import annotations

import re
from pathlib import Path

from app.cycles.strategies import ACQUISITION_STRATEGIES, CLEANING_STRATEGIES

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"
SOURCES = sorted(p for p in FRONTEND.rglob("*") if p.suffix in {".html", ".js", ".css"})


def test_nothing_is_fetched_from_another_origin() -> None:
    # No CDN, no web fonts: the pages must work on a network that reaches only this server.
    # The one absolute URL allowed is the SVG namespace, which is a name, not a download.
    absolute = re.compile(r"""https?://[^\s"'`)]+|(?:src|href)=["']//""")
    offenders = [
        f"{p.relative_to(FRONTEND)}: {url}"
        for p in SOURCES
        for url in absolute.findall(p.read_text())
        if url != "http://www.w3.org/2000/svg"
    ]
    assert not offenders


def test_module_imports_resolve() -> None:
    for page in SOURCES:
        text = page.read_text()
        targets = re.findall(r"""from\s+["'](\.[^"']+)["']""", text)
        targets += re.findall(r"""<script[^>]*src="/([^"]+)\"""", text)
        for target in targets:
            base = FRONTEND if not target.startswith(".") else page.parent
            assert (base / target).resolve().is_file(), f"{page.name} imports missing {target}"


def test_dashboard_reads_the_strategies_from_the_api() -> None:
    # One list, served by GET /strategies (worker/ml/strategy_params.py): none hard-coded here.
    js = (FRONTEND / "js" / "dashboard.js").read_text()
    assert 'get("/strategies")' in js
    assert "STRATEGIES" not in js
    # "badge" is also a CSS class there; a list would name several.
    quoted = [n for n in ACQUISITION_STRATEGIES | CLEANING_STRATEGIES if f'"{n}"' in js]
    assert quoted in ([], ["badge"]), quoted
