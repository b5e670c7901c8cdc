"""Every mapped class, imported once so that Alembic and the mappers see the whole schema."""

from app.annotations.models import Annotation
from app.auth.models import Annotator, ApiToken
from app.core.db import Base
from app.cycles.models import Cycle
from app.gold.models import GoldLabel
from app.items.models import Item, ItemFeature
from app.pretraining.models import Pretraining
from app.projects.models import Project, ProjectMember
from app.queue.models import Lease, QueueEntry
from app.webhooks.models import Webhook, WebhookDelivery

__all__ = [
    "Annotation",
    "Annotator",
    "ApiToken",
    "Base",
    "Cycle",
    "GoldLabel",
    "Item",
    "ItemFeature",
    "Lease",
    "Pretraining",
    "Project",
    "ProjectMember",
    "QueueEntry",
    "Webhook",
    "WebhookDelivery",
]
