"""The values of status-like columns and options, without the ORM: the models check
against them, and the ``portside`` command offers them as choices without loading
SQLAlchemy."""

from __future__ import annotations

DELIVERY_STATUSES = ("received", "enqueued", "processing", "processed", "ignored", "failed")
BUILD_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "superseded")
STEP_STATUSES = ("pending", "running", "succeeded", "failed", "skipped")
DEPLOYMENT_STATUSES = ("pending", "active", "superseded", "failed", "inactive")
ENVIRONMENT_STATUSES = (
    "pending",
    "awaiting_approval",
    "building",
    "deploying",
    "running",
    "failed",
    "refused",
    "inactive",
)
# Who may open a service's previews: anyone, a basic-auth login, or listed source networks.
PREVIEW_PROTECTIONS = ("none", "basic_auth", "ip_allow")
TOKEN_SCOPES = ("admin", "worker", "read", "host")
# Which builds a worker token claims: a fork's ("untrusted"), the others ("trusted"), or both.
BUILD_LANES = ("trusted", "untrusted", "all")
