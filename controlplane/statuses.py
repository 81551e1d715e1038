"""The values of status-like columns and options, without the ORM: the models declare a
check constraint per column from these enums (migration 0019), and the ``portside``
command offers them as choices without loading SQLAlchemy.

The statuses a build worker sees live in :mod:`contracts.statuses`; they are re-exported
here so the control plane has one place to import every status from. The ``*_STATUSES``
tuples are the enums' values, kept for callers that want plain choices.
"""

from __future__ import annotations

from enum import StrEnum

from contracts.statuses import BuildStatus, DeploymentStatus, StepStatus

__all__ = [
    "BUILD_LANES",
    "BUILD_STATUSES",
    "DELIVERY_STATUSES",
    "DEPLOYMENT_STATUSES",
    "DEPLOY_WHEN",
    "ENVIRONMENT_STATUSES",
    "PREVIEW_PROTECTIONS",
    "STEP_STATUSES",
    "TOKEN_SCOPES",
    "BuildLane",
    "BuildStatus",
    "DeliveryStatus",
    "DeployWhen",
    "DeploymentStatus",
    "EnvironmentStatus",
    "NotificationKind",
    "PreviewProtection",
    "StepStatus",
    "TokenScope",
    "VariableKind",
    "VariableScope",
    "values",
]


class DeliveryStatus(StrEnum):
    """A webhook delivery's way through the intake (services.deliveries)."""

    RECEIVED = "received"
    ENQUEUED = "enqueued"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class EnvironmentStatus(StrEnum):
    PENDING = "pending"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_CHECKS = "awaiting_checks"
    BUILDING = "building"
    DEPLOYING = "deploying"
    RUNNING = "running"
    FAILED = "failed"
    REFUSED = "refused"
    INACTIVE = "inactive"


class DeployWhen(StrEnum):
    """When a service's builds may deploy: at once, or once the commit's checks passed."""

    PUSHED = "pushed"
    CHECKS_PASSED = "checks_passed"


class PreviewProtection(StrEnum):
    """Who may open a service's previews: anyone, a basic-auth login, or listed networks."""

    NONE = "none"
    BASIC_AUTH = "basic_auth"
    IP_ALLOW = "ip_allow"


class TokenScope(StrEnum):
    ADMIN = "admin"
    WORKER = "worker"
    READ = "read"
    HOST = "host"


class BuildLane(StrEnum):
    """Which builds a worker token claims: a fork's, the others', or both."""

    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"
    ALL = "all"


class VariableKind(StrEnum):
    """Given to the running container, or a docker build argument."""

    RUNTIME = "runtime"
    BUILD = "build"


class VariableScope(StrEnum):
    """Which environments get a variable."""

    ALL = "all"
    PRODUCTION = "production"
    PREVIEW = "preview"


class NotificationKind(StrEnum):
    """A signed JSON webhook or a Slack incoming webhook."""

    WEBHOOK = "webhook"
    SLACK = "slack"


def values(statuses: type[StrEnum]) -> tuple[str, ...]:
    """An enum's values as plain strings (YAML dumpers and templates want no subclass)."""
    return tuple(status.value for status in statuses)


DELIVERY_STATUSES = values(DeliveryStatus)
BUILD_STATUSES = values(BuildStatus)
STEP_STATUSES = values(StepStatus)
DEPLOYMENT_STATUSES = values(DeploymentStatus)
ENVIRONMENT_STATUSES = values(EnvironmentStatus)
DEPLOY_WHEN = values(DeployWhen)
PREVIEW_PROTECTIONS = values(PreviewProtection)
TOKEN_SCOPES = values(TokenScope)
BUILD_LANES = values(BuildLane)
