"""Build-queue tasks: thin wrappers around the buildworker library (no database here)."""

from __future__ import annotations

from typing import Any

from celery import Task

from buildworker import info
from tasks.app import celery_app

WORKER_INFO = "portside.worker_info"


@celery_app.task(name=WORKER_INFO, bind=True, acks_late=True, ignore_result=False)
def worker_info(self: Task[Any, Any]) -> dict[str, Any]:
    """Report which node answered and what it can build with (fleet health check)."""
    return info.describe(self.request.hostname or "unknown")
