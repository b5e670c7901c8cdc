"""``HotPath``: what the hot routes need in the event loop, built once per app."""

from __future__ import annotations

from sqlalchemy import Engine

from app.annotations.schemas import AnnotationCreate
from app.core.config import Settings
from app.core.ratelimit import RateLimiter, make_async_limiter
from app.core.tasks import TaskSender
from app.fastpath import label, lease
from app.fastpath.caller import Gate
from app.fastpath.check import FunctionCheck
from app.fastpath.label import LabelLimit, Submitted
from app.fastpath.pool import HotPool
from app.queue.schemas import NextOut


class HotPath:
    def __init__(
        self, settings: Settings, engine: Engine, limiter: RateLimiter, sender: TaskSender
    ) -> None:
        self.pool = HotPool(engine.url, max_size=settings.max_in_flight + 1)
        self.limiter = make_async_limiter(settings.broker_url, limiter)
        self.gate = Gate(
            self.limiter, settings.rate_limit_auth_failures_per_minute, settings.secret_key
        )
        self.label_limit = LabelLimit(self.limiter, settings.rate_limit_labels_per_minute)
        self.lease_seconds = settings.lease_seconds
        self.sender = sender
        self.functions = FunctionCheck(self.pool)

    def serving(self) -> bool:
        """Whether this request goes through the database functions; else the ORM serves
        it (the functions are unchecked yet or differ from app/fastpath/sql)."""
        return self.functions.serving()

    async def next_item(self, token: str, client: str, project_id: int, ahead: int) -> NextOut:
        return await lease.next_item(
            self.pool, self.gate, token, client, project_id, self.lease_seconds, ahead
        )

    async def submit(
        self, token: str, client: str, item_id: int, body: AnnotationCreate
    ) -> Submitted:
        done = await label.submit(
            self.pool, self.gate, self.label_limit, token, client, item_id, body
        )
        await label.send_tasks(self.sender, done.tasks)
        return done

    async def close(self) -> None:
        await self.pool.close()
        aclose = getattr(self.limiter, "aclose", None)
        if aclose is not None:
            await aclose()


def make_hot_path(
    settings: Settings,
    engine: Engine,
    limiter: RateLimiter,
    sender: TaskSender,
    own_sessions: bool,
) -> HotPath | None:
    """A hot path on Postgres, unless the app was handed its own session factory (the
    tests' rolled-back transaction): then every route must work through that factory."""
    if not settings.async_hot_path or engine.dialect.name != "postgresql" or not own_sessions:
        return None
    return HotPath(settings, engine, limiter, sender)
