"""SQLAlchemy models: the records of the whole flow, from a delivery to a running container.

PostgreSQL is the state of record; SQLite works for the embedded default. Status columns
are plain strings holding a member of their enum (:mod:`controlplane.statuses`), which a
check constraint per column makes the database enforce (migration 0019).
"""

# The one interface of the models: ``from controlplane.models import Build``. Importing
# every module here registers every table on ``Base.metadata`` (Alembic compares them all).
from controlplane.models.admin import (
    NOTIFICATION_KINDS,
    ApiToken,
    AuditEvent,
    NotificationTarget,
    RegistryCredential,
)
from controlplane.models.apps import Environment, Host, Service, ServiceHost, Variable
from controlplane.models.base import (
    NAMING_CONVENTION,
    Base,
    JSONType,
    TimestampMixin,
    UTCDateTime,
    one_of,
    utcnow,
)
from controlplane.models.builds import Build, BuildStep, Deployment
from controlplane.models.messages import OutboxMessage, WebhookDelivery
from controlplane.models.sources import GitHubAppRegistration, Installation, Repository

__all__ = [
    "NAMING_CONVENTION",
    "NOTIFICATION_KINDS",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Build",
    "BuildStep",
    "Deployment",
    "Environment",
    "GitHubAppRegistration",
    "Host",
    "Installation",
    "JSONType",
    "NotificationTarget",
    "OutboxMessage",
    "RegistryCredential",
    "Repository",
    "Service",
    "ServiceHost",
    "TimestampMixin",
    "UTCDateTime",
    "Variable",
    "WebhookDelivery",
    "one_of",
    "utcnow",
]
