"""The writes feedback makes on GitHub (see :mod:`controlplane.services.feedback` for
when): a commit status, a build's Check Run, a GitHub deployment and its statuses, a
preview's PR comment.

Every write is idempotent, so an event can run again after GitHub failed it before or
after acting: the GitHub deployment is found before one is created, by commit,
environment and the payload Portside wrote (:data:`PAYLOAD_KEY`), the Check Run by its
head commit, name (:data:`CHECK_NAME`) and external id (the build's id), and the PR
comment by its hidden marker (:data:`COMMENT_MARKER`); their ids are kept on the build
and the environment.

Every text written to GitHub passes through :func:`contracts.masking.mask`, the build
logs' masking, at the places that write text (:func:`write_commit_status`,
:func:`write_check_run`, :func:`write_deployment_status`, :func:`write_comment`); where
the text can carry a build's own words (its error, its log, a reason) the service's
secret values are masked too (:func:`~controlplane.services.variables.secrets_of`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Collection
from typing import Any

from github import Github, GithubException, UnknownObjectException
from github.Deployment import Deployment as GitHubDeployment
from github.IssueComment import IssueComment
from github.NamedUser import NamedUser
from github.Organization import Organization
from github.Repository import Repository as GitHubRepository
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.masking import mask
from controlplane.github.app import GitHubApp, rate_limit_wait
from controlplane.models import (
    Build,
    Deployment,
    Environment,
)
from controlplane.services import gates, images
from controlplane.settings import Settings
from controlplane.statuses import BuildStatus

log = logging.getLogger(__name__)


CONTEXT = "portside/build"


# Every build is a Check Run of this name on its commit, external id = the build's id.
CHECK_NAME = "Portside"


# The failing step's last log lines shown in a failed build's Check Run, each cut to
# FAILED_LOG_LINE_CHARS so that they fit in GitHub's limit with the steps above them.
FAILED_LOG_LINES = 40


FAILED_LOG_LINE_CHARS = 1000


# GitHub refuses a Check Run summary or text longer than this (characters).
CHECK_OUTPUT_MAX = 65535


# A GitHub deployment per environment kind: (transient, production, description).
DEPLOYMENT_KINDS = {
    "preview": (True, False, "Preview of {service} for #{pr}"),
    "production": (False, True, "{service} in production"),
}


COMMENT_MARKER = "<!-- portside:preview:{name} -->"


# The button a successful production build's Check Run offers (GitHub's limits: label and
# identifier 20 characters, description 40); clicking it sends ``requested_action``.
REDEPLOY_ACTION = {
    "label": "Redeploy",
    "description": "Build and deploy this commit again",
    "identifier": "redeploy",
}


# The key of the payload Portside writes on its GitHub deployments: {"environment": id}.
PAYLOAD_KEY = "portside"


def installation_of(build: Build) -> int | None:
    repository = build.service.repository
    return repository.installation_id if repository else None


def build_page_url(settings: Settings, build: Build) -> str:
    """The dashboard's page of the build (its log and steps): a person who is not logged
    in is sent to the login form and back (the API's log URL would answer 401)."""
    return f"{settings.url}/builds/{build.id}"


def environment_url(environment: Environment) -> str | None:
    if environment.domain:
        return f"https://{environment.domain}"
    if environment.address:
        return f"http://{environment.address}"
    return None


def write_commit_status(
    client: Github,
    build: Build,
    state: str,
    url: str,
    text: str,
    *,
    secrets: Collection[str] = (),
) -> None:
    repo = client.get_repo(build.service.repository_full_name)
    repo.get_commit(build.commit_sha).create_status(
        state=state, target_url=url, description=mask(text, secrets)[:140], context=CONTEXT
    )


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return ""
    return f"{max(0.0, (end - start).total_seconds()):.0f} s"


def _fenced(text: str) -> str:
    """``text`` as a Markdown code block whose fence no run of backticks in it closes."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def check_summary(build: Build, lines: int = FAILED_LOG_LINES) -> str:
    """A build's Check Run summary (Markdown): its steps with their state and duration,
    the images it pushed by digest and, when it failed, the failing step, its error and
    the log's last ``lines`` lines. Unmasked: :func:`write_check_run` masks what it writes."""
    rows = [
        f"| {step.name} | {step.status} | {_seconds(step.started_at, step.finished_at)} |"
        for step in build.steps
    ]
    parts = [
        f"Build {build.id} of `{build.commit_sha[:7]}` ({build.branch}) "
        f"for {build.environment.name}: {build.status}.",
        "| Step | State | Took |\n| --- | --- | --- |\n" + "\n".join(rows),
    ]
    pushed = images.listed(build)
    if pushed:
        listing = "\n".join(f"- `{i['service']}`: `{i['reference'] or i['tag']}`" for i in pushed)
        parts.append(f"**Images**\n\n{listing}")
    if build.status == BuildStatus.FAILED:
        parts.append(f"**{build.failed_step or 'build'} failed**: {build.error or ''}")
        tail = [line[:FAILED_LOG_LINE_CHARS] for line in (build.log or "").splitlines()[-lines:]]
        if tail:
            parts.append(f"Last {len(tail)} lines of the log:\n\n{_fenced(chr(10).join(tail))}")
    elif build.status in (BuildStatus.CANCELLED, BuildStatus.SUPERSEDED) and build.error:
        parts.append(build.error)
    elif build.status in gates.HELD and build.environment.status_reason:
        parts.append(f"**Built; not deployed yet**: {build.environment.status_reason}")
    return "\n\n".join(parts)


def write_check_run(
    client: Github,
    app: GitHubApp,
    settings: Settings,
    build: Build,
    title: str,
    *,
    status: str = "completed",
    conclusion: str | None = None,
    secrets: Collection[str] = (),
    actions: list[dict[str, str]] | None = None,
) -> None:
    """Bring the build's Check Run to ``status`` (``completed`` with ``conclusion``, and
    the action buttons ``actions``): the
    one kept on the build, else the App's own found on its commit by name and external id
    (an answer lost after GitHub created it; another app's run of the same name is not
    Portside's, and GitHub would refuse editing it), else a new one.

    An installation that has not granted the App ``checks: write`` (an App upgraded from
    before Check Runs, until its owner accepts the new permission) gets none: the commit
    status and the deployment still go out, and the log says what to grant."""
    try:
        repo = client.get_repo(build.service.repository_full_name)
        limit = CHECK_OUTPUT_MAX - 100  # room for the mask's longer words
        fields: dict[str, Any] = {
            "details_url": build_page_url(settings, build),
            "status": status,
            "output": {
                "title": mask(title, secrets)[:255],
                "summary": mask(check_summary(build), secrets)[-limit:],
            },
        }
        if status == "completed":
            fields["conclusion"] = conclusion
        if actions is not None:
            fields["actions"] = actions
        if build.check_run_id is not None:
            repo.get_check_run(build.check_run_id).edit(**fields)
            return
        earlier = next(
            (
                run
                for run in repo.get_commit(build.commit_sha).get_check_runs(
                    check_name=CHECK_NAME, filter="all"
                )
                if run.external_id == str(build.id)
                and run.app is not None
                and run.app.id == app.app_id
            ),
            None,
        )
        if earlier is not None:
            wanted = (status, fields.get("conclusion"), fields["output"]["title"])
            found = (earlier.status, earlier.conclusion, earlier.output.title)
            if found != wanted or earlier.output.summary != fields["output"]["summary"]:
                earlier.edit(**fields)  # else the write whose answer was lost had done it
            build.check_run_id = earlier.id
            return
        created = repo.create_check_run(
            CHECK_NAME, build.commit_sha, external_id=str(build.id), **fields
        )
        build.check_run_id = created.id
    except GithubException as exc:
        data = exc.data if isinstance(exc.data, dict) else {}
        message = str(data.get("message") or "")
        if exc.status != 403 or rate_limit_wait(403, exc.headers, message, time.time()):
            raise
        log.warning(
            "no Check Run for build %s: GitHub refused it on %s (%s); grant the App "
            "'checks: write' and accept it on the installation",
            build.id,
            build.service.repository_full_name,
            message or "403",
        )


def promotion_of(deployment: Deployment) -> Deployment | None:
    """``deployment`` if it is a promotion (another environment's build), which has a
    GitHub deployment of its own; None for a build's deploy to its own environment."""
    return deployment if deployment.promoted_from_id is not None else None


def find_github_deployment(
    client: Github, app: GitHubApp, build: Build, promotion: Deployment | None = None
) -> GitHubDeployment:
    """The build's GitHub deployment, or ``promotion``'s (the build deployed to another
    environment, see :func:`promotion_of`): the one kept on the build (the promotion),
    else the one Portside's App made earlier for this commit, environment and payload (a
    retry whose first answer was lost), else a new one."""
    repo = client.get_repo(build.service.repository_full_name)
    kept = build.github_deployment_id if promotion is None else promotion.github_deployment_id
    if kept is not None:
        return repo.get_deployment(kept)
    environment = build.environment if promotion is None else promotion.environment
    payload = {"environment": environment.id}
    if promotion is not None:
        payload["deployment"] = promotion.id
    earlier = repo.get_deployments(sha=build.commit_sha, environment=environment.name)
    deployment = next(
        (
            d
            for d in earlier
            if isinstance(d.payload, dict)
            and d.payload.get(PAYLOAD_KEY) == payload
            and _by_app(app, d.creator)
        ),
        None,
    ) or create_github_deployment(repo, build, environment, payload)
    if promotion is None:
        build.github_deployment_id = deployment.id
    else:
        promotion.github_deployment_id = deployment.id
    return deployment


def create_github_deployment(
    repo: GitHubRepository, build: Build, environment: Environment, payload: dict[str, int]
) -> GitHubDeployment:
    """A GitHub deployment of the build's commit to ``environment``: transient for a
    preview, ``production_environment`` for production, neither for another (staging)."""
    transient, production, description = DEPLOYMENT_KINDS.get(
        environment.kind, (False, False, "{service} in {environment}")
    )
    return repo.create_deployment(
        ref=build.commit_sha,
        environment=environment.name,
        payload={PAYLOAD_KEY: payload},
        transient_environment=transient,
        production_environment=production,
        auto_merge=False,
        required_contexts=[],
        description=description.format(
            service=build.service.name, pr=environment.pr_number, environment=environment.name
        ),
    )


def _by_app(app: GitHubApp, user: NamedUser | Organization | None) -> bool:
    """Whether ``user`` is Portside's App: a marker or payload is text anyone may copy."""
    return user is not None and user.login == app.bot_login()


def write_deployment_status(
    client: Github,
    app: GitHubApp,
    build: Build,
    state: str,
    *,
    log_url: str,
    url: str | None = None,
    description: str | None = None,
    promotion: Deployment | None = None,
) -> None:
    """A status on the build's GitHub deployment, or ``promotion``'s (made first when it
    has none)."""
    deployment = find_github_deployment(client, app, build, promotion)
    options: dict[str, Any] = {"target_url": log_url}
    if url:
        options["environment_url"] = url
    if description:
        options["description"] = mask(description)[:140]
    deployment.create_status(state, **options)


def replaced_deployment(session: Session, deployment: Deployment) -> Deployment | None:
    """The deployment that ran in the environment before ``deployment`` became active
    (the one it replaced), when it has a GitHub deployment (its build's, or its own for
    a promotion)."""
    return session.scalar(
        select(Deployment)
        .join(Build, Deployment.build_id == Build.id)
        .where(
            Deployment.environment_id == deployment.environment_id,
            Deployment.id != deployment.id,
            Deployment.activated_at.is_not(None),
            Build.id != deployment.build_id,
            Deployment.github_deployment_id.is_not(None)
            | (Deployment.promoted_from_id.is_(None) & Build.github_deployment_id.is_not(None)),
        )
        .order_by(Deployment.activated_at.desc())
        .limit(1)
    )


def mark_inactive(client: Github, app: GitHubApp, replaced: Deployment, log_url: str) -> None:
    """Mark the GitHub deployment of ``replaced`` ``inactive`` unless it already is
    (GitHub does it by itself for non-production environments, and a retry must not add
    another)."""
    deployment = find_github_deployment(client, app, replaced.build, promotion_of(replaced))
    latest = next(iter(deployment.get_statuses()), None)
    if latest is None or latest.state != "inactive":
        deployment.create_status("inactive", target_url=log_url)


def write_comment(
    client: Github,
    app: GitHubApp,
    environment: Environment,
    body: str,
    *,
    secrets: Collection[str] = (),
) -> int:
    """Write the preview's one PR comment: edit the one kept on the environment, else the
    one of the App's own carrying its marker (a retry whose first answer was lost), else
    create it."""
    repo = client.get_repo(environment.service.repository_full_name)
    issue = repo.get_issue(environment.pr_number or 0)
    marker = COMMENT_MARKER.format(name=environment.name)
    text = f"{marker}\n{mask(body, secrets)}"
    comment: IssueComment | None = None
    if environment.github_comment_id:
        try:
            comment = issue.get_comment(environment.github_comment_id)
        except UnknownObjectException:  # deleted by a person: write another
            comment = None
    if comment is None:
        comment = next(
            (c for c in issue.get_comments() if _by_app(app, c.user) and c.body.startswith(marker)),
            None,
        )
    if comment is None:
        return int(issue.create_comment(text).id)
    if comment.body != text:
        comment.edit(text)
    return int(comment.id)
