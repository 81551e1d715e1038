"""The backstop for missed pushes: build the head of every tracked branch Portside has not
built (beat's ``portside.reconcile_branches``, every 5 minutes), through the same
:func:`~controlplane.services.pushes.start_build` a push takes, so whichever comes first
wins and the other finds the build there."""

from __future__ import annotations

import datetime as dt
import logging

from github import Github
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from contracts import envkinds
from controlplane.errors import PermanentError, TransientError
from controlplane.github.app import GitHubApp
from controlplane.models import Build, Deployment, Environment, Installation, Repository, Service
from controlplane.services import pushes
from controlplane.statuses import EnvironmentStatus

log = logging.getLogger(__name__)


def reconcile_branches(session: Session, github: GitHubApp) -> list[int]:
    """The backstop: build the head of every tracked branch that Portside has not built
    for an environment tracking it (production, staging), unless a person chose what that
    environment runs after the head was committed (a deploy by ref, a promotion).
    Production of a service tracking tags is left to its tag pushes."""
    services = session.scalars(
        select(Service)
        .join(Repository, Service.repository_id == Repository.id)
        .join(Installation, Repository.installation_id == Installation.id)
        .where(
            Service.deleted_at.is_(None),
            Repository.removed_at.is_(None),
            Installation.deleted_at.is_(None),
            Installation.suspended_at.is_(None),
        )
    ).all()
    started: list[int] = []
    for service in services:
        assert service.repository is not None
        branches = set(
            session.scalars(
                select(Environment.branch).where(
                    Environment.service_id == service.id,
                    Environment.kind.not_in((envkinds.PRODUCTION, envkinds.PREVIEW)),
                    Environment.status != EnvironmentStatus.INACTIVE,
                )
            )
        )
        if not service.track_tags:
            branches.add(service.branch)
        for branch in sorted(branches):

            def head_of(
                client: Github, service: Service = service, branch: str = branch
            ) -> tuple[str, str, str, dt.datetime]:
                commit = client.get_repo(service.repository_full_name).get_branch(branch).commit
                author = commit.author.login if commit.author else commit.commit.author.name
                return commit.sha, commit.commit.message, author, commit.commit.committer.date

            try:
                sha, message, author, committed = github.call(
                    service.repository.installation_id, f"head of {service.name}@{branch}", head_of
                )
            except (TransientError, PermanentError) as exc:
                log.warning("backstop skipped %s@%s: %s", service.name, branch, exc)
                continue
            for environment in pushes.deployed_by(session, service, branch=branch):
                already = session.scalar(
                    select(Build.id).where(
                        Build.environment_id == environment.id, Build.commit_sha == sha
                    )
                )
                if already is not None or _chosen_since(session, environment, committed):
                    continue
                build = pushes.start_build(
                    session,
                    service,
                    environment,
                    sha,
                    branch=branch,
                    commit_message=message,
                    author=author,
                )
                if build is not None:
                    started.append(build.id)
    session.commit()
    return started


def _chosen_since(session: Session, environment: Environment, moment: dt.datetime) -> bool:
    """Whether a person chose what the environment runs (a deploy by ref, a promotion) at
    or after ``moment``: a branch head committed before that is not the backstop's to
    deploy."""
    chosen = session.scalar(
        select(func.max(Build.created_at)).where(
            Build.environment_id == environment.id,
            Build.ref.is_not(None),
            Build.delivery_id.is_(None),
        )
    )
    promoted = session.scalar(
        select(func.max(Deployment.promoted_at)).where(Deployment.environment_id == environment.id)
    )
    return any(
        (at if at.tzinfo else at.replace(tzinfo=dt.UTC)) >= moment  # SQLite's are naive
        for at in (chosen, promoted)
        if at is not None
    )
