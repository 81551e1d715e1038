"""Per-process resources of the control worker, made after fork and on first use."""

from __future__ import annotations

import functools

from celery import Celery

from controlplane.composition import open_database
from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.services import appsetup
from controlplane.settings import Settings
from tasks.app import celery_app, configured_settings


def settings_of(app: Celery) -> Settings:
    """The control plane's settings this process was configured with."""
    return configured_settings(app, Settings)


@functools.cache
def database() -> Database:
    db, _redis = open_database(settings_of(celery_app))
    return db


@functools.cache
def github_source() -> appsetup.AppSource:
    return appsetup.AppSource(settings_of(celery_app), database())


def github_app() -> GitHubApp | None:
    """The configured App, else the one registered from the dashboard (once it is)."""
    return github_source().app()


def reset() -> None:
    """Forget resources inherited from a parent process (called after fork)."""
    if database.cache_info().currsize:
        database().dispose()
    database.cache_clear()
    github_source.cache_clear()
