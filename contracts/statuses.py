"""The statuses a build worker reads and writes over HTTP: a build's, its steps' and its
deployment's. One vocabulary for both sides; the control plane's database refuses any
other value (check constraints, migration 0019).

``StrEnum`` members are their strings: they compare equal to, and serialise as, the
plain values the wire and the database carry.
"""

from __future__ import annotations

from enum import StrEnum


class BuildStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    # Built, and held at a deployment gate (services.gates) before it may deploy.
    AWAITING_CHECKS = "awaiting_checks"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class DeploymentStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    INACTIVE = "inactive"
