"""Write ``annoloop/client/_sync_client.py`` from ``_async_client.py`` by removing async/await
(the way httpcore keeps its two APIs equal). ``tests/client/test_types.py`` fails while the
generated file is stale. Run after editing the async client:

    python scripts/unasync_client.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "annoloop" / "client"
SOURCE, TARGET = HERE / "_async_client.py", HERE / "_sync_client.py"

# Whole words only, longest first.
WORDS = {
    "AsyncClient": "Client",
    "AsyncIterator": "Iterator",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
}
LINES = [
    (r"\basync def\b", "def"),
    (r"\basync for\b", "for"),
    (r"\basync with\b", "with"),
    (r"\bawait asyncio\.to_thread\(\n(\s*)(\w+),\n", r"\2(\n\1"),
    (r"\bawait ", ""),
    (r"\basyncio\.sleep\(", "time.sleep("),
    (r"^import asyncio$", "import time"),
    (r"loop = asyncio\.get_running_loop\(\)\n\s*", ""),
    (r"\bloop\.time\(\)", "time.monotonic()"),
]
HEADER = (
    '"""The synchronous client, generated from ``_async_client.py`` by '
    "``scripts/unasync_client.py``;\ndo not edit by hand."
    '"""\n'
)


def render() -> str:
    text = SOURCE.read_text()
    text = text.split('"""', 2)[2].lstrip("\n")  # the module docstring is replaced
    for old, new in LINES:
        text = re.sub(old, new, text, flags=re.MULTILINE)
    for old, new in WORDS.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return _formatted(HEADER + "\n" + text)


def _formatted(source: str) -> str:
    def ruff(*args: str, src: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"],
            input=src,
            capture_output=True,
            text=True,
        )
        return done.stdout or src

    fixed = ruff(
        "check", "--fix-only", "--select", "I,F401,UP028", "--unsafe-fixes", "--quiet", src=source
    )
    return ruff("format", src=fixed)


def main() -> int:
    TARGET.write_text(render())
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
