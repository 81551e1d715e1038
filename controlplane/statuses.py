"""The values of status-like columns and options, without the ORM: the models check
against them, and the ``portside`` command offers them as choices without loading
SQLAlchemy."""

from __future__ import annotations

DELIVERY_STATUSES = ("received", "enqueued", "processing", "processed", "ignored", "failed")
BUILD_STATUSES = (
    "queued",
    "running",
    # Built, and held at a deployment gate (services.gates) before it may deploy.
    "awaiting_checks",
    "awaiting_approval",
    "succeeded",
    "failed",
    "cancelled",
    "superseded",
)
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "skipped")
DEPLOYMENT_STATUSES = ("pending", "active", "superseded", "failed", "inactive")
ENVIRONMENT_STATUSES = (
    "pending",
    "awaiting_approval",
    "awaiting_checks",
    "building",
    "deploying",
    "running",
    "failed",
    "refused",
    "inactive",
)
# When a service's builds may deploy: at once, or once the commit's checks passed.
DEPLOY_WHEN = ("pushed", "checks_passed")
# Who may open a service's previews: anyone, a basic-auth login, or listed source networks.
PREVIEW_PROTECTIONS = ("none", "basic_auth", "ip_allow")
TOKEN_SCOPES = ("admin", "worker", "read", "host")
# Which builds a worker token claims: a fork's ("untrusted"), the others ("trusted"), or both.
BUILD_LANES = ("trusted", "untrusted", "all")
