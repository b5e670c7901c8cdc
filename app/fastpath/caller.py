"""Who is calling, and may they see the project: one statement for the token, its owner
and the project (directly, or through an item), with the rules of ``app.auth.service``,
``app.deps`` and ``app.projects.service``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app.core.db import utcnow
from app.core.enums import ProjectKind
from app.core.errors import NotFound, TooManyRequests, Unauthorized
from app.core.ratelimit import AsyncRateLimiter
from app.core.security import hash_token

_CALLER_COLUMNS = """
    a.id AS annotator_id, a.role, a.active, t.revoked_at, t.expires_at,
    p.id AS project_id, p.kind, p.classes, p.label_budget, p.relabel_budget,
    p.labels_spent, p.finetune_every,
    (a.role = 'admin' OR EXISTS (
        SELECT 1 FROM project_member m WHERE m.project_id = p.id AND m.annotator_id = a.id
    )) AS visible
"""
_TOKEN = """
    FROM api_token t JOIN annotator a ON a.id = t.annotator_id
"""
CALLER_AND_PROJECT = f"""
    SELECT {_CALLER_COLUMNS}
    {_TOKEN} LEFT JOIN project p ON p.id = %(project_id)s
    WHERE t.token_hash = %(token_hash)s
"""
CALLER_AND_ITEM = f"""
    SELECT {_CALLER_COLUMNS},
        i.id AS item_id, i.project_id AS item_project_id, i.split, i.external_id,
        i.blob_sha256, i.media_type, i.width, i.height, i.meta,
        i.created_at AS item_created_at
    {_TOKEN} LEFT JOIN item i ON i.id = %(item_id)s LEFT JOIN project p ON p.id = i.project_id
    WHERE t.token_hash = %(token_hash)s
"""


@dataclass(frozen=True)
class ProjectView:
    """What the hot routes read of a project."""

    id: int
    kind: ProjectKind
    num_classes: int
    budget: int | None  # the budget ``labels_spent`` counts against (relabels when cleaning)
    labels_spent: int
    finetune_every: int | None


class Gate:
    """The failed-token-check limit of ``app.deps.authenticate_request``, awaited.

    Every request must know its address's count, so this process remembers each count for
    ``REMEMBER_S`` instead of asking Redis every time; its own failures update it at once.
    An address past the limit can so get at most ``REMEMBER_S`` of extra checks in another
    API process: nothing, against 256-bit tokens, next to a Redis round trip per request.
    """

    REMEMBER_S = 1.0
    MAX_REMEMBERED = 10_000

    def __init__(self, limiter: AsyncRateLimiter, limit: int, secret: str) -> None:
        self.limiter, self.limit, self.secret = limiter, limit, secret
        self._counts: dict[str, tuple[float, int]] = {}  # address → (valid until, count)

    async def before(self, client: str) -> None:
        # Past the limit an address gets no token checks at all, so a right guess is not
        # told apart from a wrong one.
        if self.limit and await self._count(client) >= self.limit:
            raise TooManyRequests(
                "too many failed token checks from this address",
                retry_after=self.limiter.retry_after(),
            )

    async def check(self, row: Any | None, client: str) -> int:
        """The caller's annotator id from the row of ``CALLER_AND_*``, or 401 (counted)."""
        try:
            return _check_token(row)
        except Unauthorized:
            if self.limit:
                self._remember(client, await self.limiter.hit(f"auth-fail:{client}"))
            raise

    def token_hash(self, token: str) -> str:
        return hash_token(token, self.secret)

    async def _count(self, client: str) -> int:
        known = self._counts.get(client)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        count = await self.limiter.count(f"auth-fail:{client}")
        self._remember(client, count)
        return count

    def _remember(self, client: str, count: int) -> None:
        if len(self._counts) >= self.MAX_REMEMBERED:
            self._counts.clear()
        self._counts[client] = (time.monotonic() + self.REMEMBER_S, count)


def _check_token(row: Any | None) -> int:
    if row is None or row.revoked_at is not None:
        raise Unauthorized("unknown or revoked token")
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise Unauthorized("token expired")
    if not row.active:
        raise Unauthorized("account disabled")
    return int(row.annotator_id)


def visible_project(row: Any, project_id: int) -> ProjectView:
    """The project of a ``CALLER_AND_*`` row, or 404 (missing and hidden look the same)."""
    if row.project_id is None or not row.visible:
        raise NotFound(f"project {project_id} not found")
    kind = ProjectKind(row.kind)
    return ProjectView(
        id=int(row.project_id),
        kind=kind,
        num_classes=len(row.classes),
        budget=row.relabel_budget if kind is ProjectKind.clean else row.label_budget,
        labels_spent=int(row.labels_spent),
        finetune_every=row.finetune_every,
    )
