from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.core.ids import IdPath
from app.deps import DbSession, Engineer, SettingsDep
from app.projects import service as projects
from app.webhooks import service
from app.webhooks.schemas import DeliveryOut, WebhookCreate, WebhookOut, WebhookWithSecret

router = APIRouter(prefix="/projects/{project_id}/webhooks", tags=["webhooks"])


@router.post("", response_model=WebhookWithSecret, status_code=201)
def create_webhook(
    project_id: IdPath, body: WebhookCreate, db: DbSession, actor: Engineer, settings: SettingsDep
) -> WebhookWithSecret:
    """Subscribe a URL to this project's events. The answer holds the signing secret, which
    is never shown again."""
    project = projects.get_for_engineer(db, actor, project_id)
    hook = service.create(db, actor, project, body, settings)
    return WebhookWithSecret(**service.out(hook).model_dump(), secret=hook.secret)


@router.get("", response_model=list[WebhookOut])
def list_webhooks(project_id: IdPath, db: DbSession, actor: Engineer) -> list[WebhookOut]:
    project = projects.get_for_engineer(db, actor, project_id)
    return [service.out(h) for h in service.list_for(db, project)]


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(project_id: IdPath, webhook_id: IdPath, db: DbSession, actor: Engineer) -> None:
    project = projects.get_for_engineer(db, actor, project_id)
    service.deactivate(db, service.get(db, project, webhook_id))


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(
    project_id: IdPath,
    webhook_id: IdPath,
    db: DbSession,
    actor: Engineer,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryOut]:
    """The delivery log, newest first: state, attempts, last status and error."""
    project = projects.get_for_engineer(db, actor, project_id)
    hook = service.get(db, project, webhook_id)
    return [service.delivery_out(d) for d in service.deliveries(db, hook, limit)]


@router.post("/{webhook_id}/deliveries/{delivery_id}/retry", response_model=DeliveryOut)
def retry_delivery(
    project_id: IdPath, webhook_id: IdPath, delivery_id: IdPath, db: DbSession, actor: Engineer
) -> DeliveryOut:
    """Send a failed delivery again (its attempts start over)."""
    project = projects.get_for_engineer(db, actor, project_id)
    hook = service.get(db, project, webhook_id)
    return service.delivery_out(service.retry(db, hook, delivery_id))
