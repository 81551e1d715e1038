"""The GitHub App a person registered from the dashboard, and where each process gets its App.

Settings win (``PORTSIDE_GITHUB_APP_ID`` and its key, ``PORTSIDE_GITHUB_WEBHOOK_SECRET``);
without them a process uses the App registered with GitHub's manifest flow
(:mod:`controlplane.github.manifest`), stored encrypted in ``github_app_registrations``.
A process that has none looks again at most every :data:`RECHECK_SECONDS`, so the web
workers and control workers that were running when the App was registered pick it up
without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.db import Database
from controlplane.github.app import GitHubApp
from controlplane.github.manifest import RegisteredApp
from controlplane.models import GitHubAppRegistration
from controlplane.services import audit
from controlplane.settings import Settings

RECHECK_SECONDS = 2.0


def registration(session: Session) -> GitHubAppRegistration | None:
    return session.scalar(select(GitHubAppRegistration).order_by(GitHubAppRegistration.id))


def store(
    session: Session, box: SecretBox, registered: RegisteredApp, actor: str
) -> GitHubAppRegistration:
    """Keep the App GitHub just made (replacing an earlier registration), secrets encrypted."""
    row = registration(session) or GitHubAppRegistration()
    row.app_id = registered.app_id
    row.slug = registered.slug
    row.html_url = registered.html_url
    row.owner_login = registered.owner_login
    row.client_id = registered.client_id
    row.private_key_encrypted = box.encrypt(registered.private_key)
    row.webhook_secret_encrypted = box.encrypt(registered.webhook_secret)
    row.client_secret_encrypted = (
        box.encrypt(registered.client_secret) if registered.client_secret else None
    )
    row.registered_by = actor
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor,
        "github_app.register",
        "github_app",
        registered.app_id,
        slug=registered.slug,
        owner=registered.owner_login,
    )
    return row


def rotate(session: Session, box: SecretBox) -> int:
    """Re-encrypt the registration's secrets with the current key (``secrets rotate-key``)."""
    row = registration(session)
    if row is None:
        return 0
    row.private_key_encrypted = box.rotate(row.private_key_encrypted)
    row.webhook_secret_encrypted = box.rotate(row.webhook_secret_encrypted)
    if row.client_secret_encrypted is not None:
        row.client_secret_encrypted = box.rotate(row.client_secret_encrypted)
    return 1


class AppSource:
    """One per process: the GitHub App and webhook secret this process works with."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self._settings = settings
        self._database = database
        self._configured = GitHubApp.from_settings(settings)
        self._configured_secret = settings.github_webhook_secret.reveal()
        self._registered: tuple[GitHubApp, str] | None = None
        self._looked_at = -RECHECK_SECONDS
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        """Whether the settings name the App (then no registration is used or offered)."""
        return self._configured is not None

    def app(self) -> GitHubApp | None:
        if self._configured is not None:
            return self._configured
        registered = self._registration()
        return registered[0] if registered else None

    def webhook_secret(self) -> str:
        if self._configured_secret:
            return self._configured_secret
        registered = self._registration()
        return registered[1] if registered else ""

    def look_again(self) -> None:
        """Read the registration at the next use (this process just stored a new one)."""
        with self._lock:
            self._registered = None
            self._looked_at = -RECHECK_SECONDS

    def _registration(self) -> tuple[GitHubApp, str] | None:
        if self._registered is not None:
            return self._registered
        with self._lock:
            now = time.monotonic()
            if self._registered is None and now - self._looked_at >= RECHECK_SECONDS:
                self._looked_at = now
                self._registered = self._read()
        return self._registered

    def _read(self) -> tuple[GitHubApp, str] | None:
        if not self._settings.secret_key:
            return None  # nothing stored can be opened (and nothing could be stored)
        with self._database.session_scope() as session:
            row = registration(session)
            if row is None:
                return None
            box = SecretBox.from_settings(self._settings)
            app = GitHubApp(
                row.app_id, box.decrypt(row.private_key_encrypted), self._settings.github_api_url
            )
            return app, box.decrypt(row.webhook_secret_encrypted)


def github_of(extensions: Mapping[str, Any]) -> GitHubApp | None:
    """The web process's App: one set on the app (tests do), else its :class:`AppSource`'s."""
    fixed: GitHubApp | None = extensions.get("portside.github")
    if fixed is not None:
        return fixed
    source: AppSource | None = extensions.get("portside.github_source")
    return source.app() if source is not None else None
