"""Whether the database holds the hot path's functions as ``app/fastpath/sql`` defines them.

Checked when the API starts (``app.main``): if not, ``next`` and submit go through the ORM,
which applies the same rules from this process's own code, and the API says so: an error in
the log, ``hot_path: "fallback"`` on ``/healthz`` and in ``annoloop_hot_path`` on
``/metrics``. Functions that an older release or a hand edit left behind would apply rules the
code no longer holds, which is worse than a third of the throughput. ``annoloop migrate``
installs them again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from app.fastpath import functions
from app.fastpath.pool import HotPool, Tx
from app.observability.metrics import HOT_PATH

log = logging.getLogger(__name__)

State = Literal["unchecked", "on", "fallback"]


class FunctionCheck:
    # A check that could not reach the database is tried again by a later request, at most
    # this often; until one succeeds the ORM serves.
    RETRY_S = 5.0

    def __init__(self, pool: HotPool) -> None:
        self.pool = pool
        self.state: State = "unchecked"
        HOT_PATH.state("unchecked")
        self.problems: list[str] = []
        self._last_try = float("-inf")
        self._running: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._last_try = time.monotonic()

        async def listed(tx: Tx) -> list[tuple[str, str, str | None]]:
            return [tuple(row) for row in await tx.all(functions.LISTED, {})]

        try:
            rows = await self.pool.run(listed)
        except Exception:
            log.warning(
                "could not check the hot path's functions; the ORM serves meanwhile",
                exc_info=True,
            )
            return
        self.problems = functions.problems(rows)
        if self.problems:
            self.state = "fallback"
            HOT_PATH.state("fallback")
            log.error(
                "the database's hot path functions differ from app/fastpath/sql (%s): next and "
                "submit go through the ORM until `annoloop migrate` installs them",
                "; ".join(self.problems),
            )
        else:
            self.state = "on"
            HOT_PATH.state("on")

    def serving(self) -> bool:
        """Whether the hot path may serve this request; while unchecked, a check is started
        (in the background) and the ORM serves."""
        if self.state == "on":
            return True
        if self.state == "unchecked" and self._due():
            self._running = asyncio.get_running_loop().create_task(self.run())
        return False

    def _due(self) -> bool:
        if self._running is not None and not self._running.done():
            return False
        return time.monotonic() - self._last_try >= self.RETRY_S
