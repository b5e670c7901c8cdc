"""Progress bars: tqdm when it is installed, a plain line per second on stderr otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def set_description_str(self, desc: str) -> Any: ...
    def close(self) -> Any: ...


class PlainBar:
    """``desc: n/total unit`` on stderr, at most once a second and once at the end."""

    def __init__(self, total: int | None, desc: str, unit: str, stream: Any = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.stream = stream or sys.stderr
        self._shown = 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._shown >= 1.0:
            self._show()

    def set_description_str(self, desc: str) -> None:
        if desc != self.desc:
            self.desc = desc
            self._show()

    def close(self) -> None:
        self._show()

    def _show(self) -> None:
        self._shown = time.monotonic()
        total = f"/{self.total}" if self.total is not None else ""
        print(f"{self.desc}: {self.n}{total} {self.unit}", file=self.stream, flush=True)


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_description_str(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass


def make_bar(show: bool | None, total: int | None, desc: str, unit: str = "it") -> Bar:
    """``show``: True, False, or None for "when stderr is a terminal"."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return PlainBar(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, leave=True)
