from __future__ import annotations

import json
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import Annotator
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Conflict, NotFound, Unprocessable
from app.projects.models import Project
from app.webhooks.models import Webhook, WebhookDelivery
from app.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookOut
from app.webhooks.urls import BadWebhookUrl, check_url


def create(
    db: Session, actor: Annotator, project: Project, body: WebhookCreate, settings: Settings
) -> Webhook:
    try:
        check_url(
            body.url,
            allow_private=settings.webhook_allow_private or settings.environment != "production",
        )
    except BadWebhookUrl as exc:
        raise Unprocessable(str(exc), code=exc.code) from None
    hook = Webhook(
        project_id=project.id,
        url=body.url,
        secret=body.secret or secrets.token_urlsafe(32),
        events="," + ",".join(body.events) + ",",
        active=True,
        created_by_id=actor.id,
    )
    db.add(hook)
    db.flush()
    return hook


def get(db: Session, project: Project, webhook_id: int) -> Webhook:
    hook = db.get(Webhook, webhook_id)
    if hook is None or hook.project_id != project.id:
        raise NotFound("no such webhook in this project")
    return hook


def list_for(db: Session, project: Project) -> list[Webhook]:
    return list(
        db.scalars(select(Webhook).where(Webhook.project_id == project.id).order_by(Webhook.id))
    )


def deactivate(db: Session, hook: Webhook) -> None:
    """Kept, inactive, so that its delivery log stays readable; nothing more is sent."""
    hook.active = False
    db.flush()


def deliveries(db: Session, hook: Webhook, limit: int) -> list[WebhookDelivery]:
    return list(
        db.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == hook.id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
    )


def retry(db: Session, hook: Webhook, delivery_id: int) -> WebhookDelivery:
    delivery = db.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.webhook_id != hook.id:
        raise NotFound("no such delivery for this webhook")
    if delivery.state != "failed":
        raise Conflict(f"the delivery is {delivery.state}, not failed", code="not_failed")
    if not hook.active:
        raise Conflict("the webhook was removed", code="webhook_inactive")
    delivery.state = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    db.flush()
    return delivery


def out(hook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=hook.id,
        project_id=hook.project_id,
        url=hook.url,
        events=hook.event_list,
        active=hook.active,
        created_at=hook.created_at,
    )


def delivery_out(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        webhook_id=row.webhook_id,
        event=row.event,
        payload=json.loads(row.payload),
        created_at=row.created_at,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status=row.last_status,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )
