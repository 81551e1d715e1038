"""Feedback on GitHub through the App: a commit status and a Check Run for every build,
a GitHub Deployment per deploy of every environment, and one PR comment per preview,
edited in place.

Every write is idempotent, so an event can run again after GitHub failed it before or
after acting: the GitHub deployment is found before one is created, by commit,
environment and the payload Portside wrote (:data:`PAYLOAD_KEY`), the Check Run by its
head commit, name (:data:`CHECK_NAME`) and external id (the build's id), and the PR
comment by its hidden marker (:data:`COMMENT_MARKER`); their ids are kept on the build
and the environment. Events of one environment run one at a time (an advisory lock), so two
never both create. A build's early events say nothing once it has finished, so a late
retry never turns a final status back to pending.

The links ("Details") go to the dashboard's build page, which a person can open after
logging in.

A cancelled or superseded build ends on GitHub too: its commit status says so (state
``error``), its Check Run ends ``cancelled`` (or ``neutral`` when a newer build was
already deployed), and a GitHub deployment it had is made ``inactive``.

Every text written to GitHub passes through :func:`contracts.masking.mask`, the build
logs' masking, at the places that write text (:func:`_commit_status`,
:func:`_check_run`, :func:`_deployment_status`, :func:`_comment`); where the text can
carry a build's own words (its error, its log, a reason) the service's secret values are
masked too (:func:`secrets_of`).
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
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from contracts.masking import mask
from controlplane.github.app import GitHubApp, rate_limit_wait
from controlplane.models import (
    Build,
    Deployment,
    Environment,
    Service,
    WebhookDelivery,
)
from controlplane.services import commands, gates, images, pushes
from controlplane.services.builds import FINISHED
from controlplane.services.outcomes import HandlerContext, Outcome
from controlplane.services.variables import secrets_of
from controlplane.settings import Settings

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
# pg_advisory_xact_lock(FEEDBACK_LOCK, environment id): one feedback event at a time per
# environment (the two-key space never meets builds.DISPATCH_LOCK's one-key space).
FEEDBACK_LOCK = 7370


def _installation_of(build: Build) -> int | None:
    repository = build.service.repository
    return repository.installation_id if repository else None


def _log_url(settings: Settings, build: Build) -> str:
    """The dashboard's page of the build (its log and steps): a person who is not logged
    in is sent to the login form and back (the API's log URL would answer 401)."""
    return f"{settings.url}/builds/{build.id}"


def _one_at_a_time(session: Session, environment_id: int) -> None:
    """Wait for the environment's other feedback events, then read the rows afresh (the
    one before may have recorded a deployment or comment id, or the build moved on)."""
    session.execute(select(func.pg_advisory_xact_lock(FEEDBACK_LOCK, environment_id)))
    session.expire_all()


def environment_url(environment: Environment) -> str | None:
    if environment.domain:
        return f"https://{environment.domain}"
    if environment.address:
        return f"http://{environment.address}"
    return None


def _commit_status(
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
    the log's last ``lines`` lines. Unmasked: :func:`_check_run` masks what it writes."""
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
    if build.status == "failed":
        parts.append(f"**{build.failed_step or 'build'} failed**: {build.error or ''}")
        tail = [line[:FAILED_LOG_LINE_CHARS] for line in (build.log or "").splitlines()[-lines:]]
        if tail:
            parts.append(f"Last {len(tail)} lines of the log:\n\n{_fenced(chr(10).join(tail))}")
    elif build.status in ("cancelled", "superseded") and build.error:
        parts.append(build.error)
    elif build.status in gates.HELD and build.environment.status_reason:
        parts.append(f"**Built; not deployed yet**: {build.environment.status_reason}")
    return "\n\n".join(parts)


def _check_run(
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
            "details_url": _log_url(settings, build),
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


def _promotion(deployment: Deployment) -> Deployment | None:
    """``deployment`` if it is a promotion (another environment's build), which has a
    GitHub deployment of its own; None for a build's deploy to its own environment."""
    return deployment if deployment.promoted_from_id is not None else None


def _github_deployment(
    client: Github, app: GitHubApp, build: Build, promotion: Deployment | None = None
) -> GitHubDeployment:
    """The build's GitHub deployment, or ``promotion``'s (the build deployed to another
    environment, see :func:`_promotion`): the one kept on the build (the promotion),
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
    ) or _create_deployment(repo, build, environment, payload)
    if promotion is None:
        build.github_deployment_id = deployment.id
    else:
        promotion.github_deployment_id = deployment.id
    return deployment


def _create_deployment(
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


def _deployment_status(
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
    deployment = _github_deployment(client, app, build, promotion)
    options: dict[str, Any] = {"target_url": log_url}
    if url:
        options["environment_url"] = url
    if description:
        options["description"] = mask(description)[:140]
    deployment.create_status(state, **options)


def _replaced(session: Session, deployment: Deployment) -> Deployment | None:
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


def _make_inactive(client: Github, app: GitHubApp, replaced: Deployment, log_url: str) -> None:
    """Mark the GitHub deployment of ``replaced`` ``inactive`` unless it already is
    (GitHub does it by itself for non-production environments, and a retry must not add
    another)."""
    deployment = _github_deployment(client, app, replaced.build, _promotion(replaced))
    latest = next(iter(deployment.get_statuses()), None)
    if latest is None or latest.state != "inactive":
        deployment.create_status("inactive", target_url=log_url)


def _comment(
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


def build_queued(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    build = session.get(Build, build_id)
    installation = _installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status in FINISHED:
        return

    def act(client: Github) -> None:
        _commit_status(client, build, "pending", _log_url(settings, build), "Portside is building")
        _check_run(client, github, settings, build, "Queued", status="queued")
        _deployment_status(client, github, build, "queued", log_url=_log_url(settings, build))

    github.call(installation, f"feedback for build {build.id}", act)


def build_running(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    build = session.get(Build, build_id)
    installation = _installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status in FINISHED or build.status in gates.HELD:
        return
    current = next((step for step in build.steps if step.status == "running"), None)
    title = (
        f"Step {current.position + 1} of {len(build.steps)}: {current.name}"
        if current is not None
        else "Starting"
    )
    first = current is None or current.position == 0

    def act(client: Github) -> None:
        _check_run(client, github, settings, build, title, status="in_progress")
        if first:  # the deployment is in progress once, from the first step
            _deployment_status(
                client, github, build, "in_progress", log_url=_log_url(settings, build)
            )

    github.call(installation, f"feedback for build {build.id}", act)


def build_held(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    """A built commit waits at a deployment gate (its checks, an approval): a pending
    commit status and the Check Run in progress, both saying what it waits for."""
    build = session.get(Build, build_id)
    installation = _installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status not in gates.HELD:
        return
    log_url = _log_url(settings, build)
    reason = build.environment.status_reason or build.status.replace("_", " ")

    def act(client: Github) -> None:
        _commit_status(client, build, "pending", log_url, reason)
        _check_run(client, github, settings, build, reason, status="in_progress")

    github.call(installation, f"feedback for build {build.id}", act)


def build_failed(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    build = session.get(Build, build_id)
    installation = _installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    log_url = _log_url(settings, build)
    secrets = secrets_of(session, settings, build.service_id)

    def act(client: Github) -> None:
        failed = f"{build.failed_step or 'build'} failed: {build.error or ''}"
        _commit_status(client, build, "failure", log_url, failed, secrets=secrets)
        _check_run(client, github, settings, build, failed, conclusion="failure", secrets=secrets)
        _deployment_status(client, github, build, "failure", log_url=log_url)

    github.call(installation, f"feedback for build {build.id}", act)


def build_cancelled(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    """A cancelled build (a newer push superseded it while unfinished) or one superseded
    when it came to deploy (a newer build was deployed first) ends on GitHub: an ``error``
    commit status saying why, the Check Run ``cancelled`` or ``neutral``, and a GitHub
    deployment it had made ``inactive`` (none is made just to say so)."""
    build = session.get(Build, build_id)
    installation = _installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status not in ("cancelled", "superseded"):
        return
    log_url = _log_url(settings, build)
    secrets = secrets_of(session, settings, build.service_id)
    reason = build.error or "a newer build was deployed first"
    text = f"Superseded: {reason}"
    conclusion = "cancelled" if build.status == "cancelled" else "neutral"

    def act(client: Github) -> None:
        _commit_status(client, build, "error", log_url, text, secrets=secrets)
        _check_run(client, github, settings, build, text, conclusion=conclusion, secrets=secrets)
        if build.github_deployment_id is not None:
            _deployment_status(client, github, build, "inactive", log_url=log_url, description=text)

    github.call(installation, f"feedback for build {build.id}", act)


def _protection_note(service: Service) -> str:
    """What the PR comment tells reviewers about a protected preview (never a secret)."""
    if service.preview_protection == "basic_auth":
        return "\n\nProtected: it asks for a login, which a maintainer can share."
    if service.preview_protection == "ip_allow":
        networks = ", ".join(f"`{network}`" for network in service.preview_allow_networks)
        return f"\n\nProtected: open only from {networks}."
    return ""


def promotion_status(
    session: Session, github: GitHubApp, settings: Settings, deployment_id: int, state: str
) -> None:
    """A promotion on GitHub: a deployment of its own, of the build's commit to the target
    environment, ``in_progress`` once promoted, then ``success`` (the one it replaced made
    ``inactive``) or ``failure``. The build's commit status and Check Run tell of the
    build, which ran already, and stay as they are."""
    deployment = session.get(Deployment, deployment_id)
    installation = _installation_of(deployment.build) if deployment else None
    if deployment is None or deployment.promoted_from is None or installation is None:
        return
    build = deployment.build
    environment = deployment.environment
    _one_at_a_time(session, environment.id)
    done = state == "success"
    url = environment_url(environment) if done else None
    replaced = _replaced(session, deployment) if done else None
    source = deployment.promoted_from.name
    text = f"Promoted from {source} by {deployment.promoted_by or 'someone'}"

    def act(client: Github) -> None:
        _deployment_status(
            client,
            github,
            build,
            state,
            log_url=_log_url(settings, build),
            url=url,
            description=text,
            promotion=deployment,
        )
        if replaced is not None:
            _make_inactive(client, github, replaced, _log_url(settings, replaced.build))

    github.call(installation, f"feedback for deployment {deployment.id}", act)


def deployment_finished(
    session: Session, github: GitHubApp, settings: Settings, deployment_id: int, *, ok: bool
) -> None:
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None and deployment.promoted_from_id is not None:
        promotion_status(session, github, settings, deployment_id, "success" if ok else "failure")
        return
    build = deployment.build if deployment else None
    installation = _installation_of(build) if build else None
    if deployment is None or build is None or installation is None:
        return
    environment = deployment.environment
    _one_at_a_time(session, environment.id)
    url = environment_url(environment)
    log_url = _log_url(settings, build)
    replaced = _replaced(session, deployment) if ok and environment.kind != "preview" else None

    def act(client: Github) -> None:
        if ok:
            deployed = f"Deployed to {environment.name}" + (f": {url}" if url else "")
            _commit_status(client, build, "success", url or log_url, deployed)
            _check_run(
                client,
                github,
                settings,
                build,
                deployed,
                conclusion="success",
                actions=[REDEPLOY_ACTION] if environment.kind == "production" else None,
            )
            _deployment_status(client, github, build, "success", log_url=log_url, url=url)
            if replaced is not None:
                _make_inactive(client, github, replaced, _log_url(settings, replaced.build))
        else:
            failed = "The new version did not start"
            _commit_status(client, build, "failure", log_url, failed)
            _check_run(client, github, settings, build, failed, conclusion="failure")
            _deployment_status(client, github, build, "failure", log_url=log_url)
        if environment.kind == "preview" and ok:
            body = (
                f"**Preview of {environment.service.name}** is ready: {url or 'no address yet'}\n\n"
                f"Running commit `{build.commit_sha[:7]}` (deployment {deployment.id})."
                f"{_protection_note(environment.service)}"
            )
            environment.github_comment_id = _comment(client, github, environment, body)

    github.call(installation, f"feedback for deployment {deployment.id}", act)


def preview_removed(
    session: Session, github: GitHubApp, settings: Settings, environment_id: int
) -> None:
    environment = session.get(Environment, environment_id)
    if environment is None or environment.service.repository is None:
        return
    installation = environment.service.repository.installation_id
    _one_at_a_time(session, environment.id)
    builds = list(
        session.scalars(
            select(Build).where(
                Build.environment_id == environment.id, Build.github_deployment_id.is_not(None)
            )
        )
    )
    promotions = list(
        session.scalars(
            select(Deployment).where(
                Deployment.environment_id == environment.id,
                Deployment.github_deployment_id.is_not(None),
            )
        )
    )
    secrets = secrets_of(session, settings, environment.service_id)

    def act(client: Github) -> None:
        for build in builds:
            _deployment_status(client, github, build, "inactive", log_url=_log_url(settings, build))
        for promotion in promotions:
            _deployment_status(
                client,
                github,
                promotion.build,
                "inactive",
                log_url=_log_url(settings, promotion.build),
                promotion=promotion,
            )
        if environment.github_comment_id:
            reason = environment.closed_reason or "closed"
            _comment(
                client,
                github,
                environment,
                f"The preview of {environment.service.name} was removed ({reason}).",
                secrets=secrets,
            )

    github.call(installation, f"feedback for {environment.name}", act)


AWAITING_STATUS = "Waiting for a maintainer to approve this commit"


def awaiting_approval(
    session: Session, github: GitHubApp, settings: Settings, environment_id: int
) -> None:
    """A fork's head waits for a person: a pending status on that commit and a PR comment
    saying how to approve it (nothing is said once the preview moved on)."""
    environment = session.get(Environment, environment_id)
    if environment is None or environment.status != "awaiting_approval":
        return
    _one_at_a_time(session, environment.id)
    repository = environment.service.repository
    sha = environment.head_sha
    if repository is None or not sha:
        return
    approve = f"{settings.url}/v1/environments/{environment.id}/approve"
    body = (
        f"**Preview of {environment.service.name}** waits for a maintainer's approval.\n\n"
        "This pull request comes from a fork, so Portside builds and runs nothing until a "
        f"maintainer has reviewed commit `{sha}` and approved it; every new push needs a new "
        "approval.\n\n"
        f"To approve it: `portside previews approve {environment.name} --sha {sha}`, or "
        f'`POST {approve}` with the body `{{"sha": "{sha}"}}` and an admin token, or a '
        "comment `/portside approve` here by someone with write access to the repository. "
        "Secrets are a separate approval of the same commit: add `--secrets` (or "
        f"`POST {approve}-secrets` with the same body)."
    )

    def act(client: Github) -> None:
        repo = client.get_repo(environment.service.repository_full_name)
        repo.get_commit(sha).create_status(
            state="pending",
            target_url=f"{settings.url}/#service-{environment.service_id}",
            description=AWAITING_STATUS,
            context=CONTEXT,
        )
        environment.github_comment_id = _comment(client, github, environment, body)

    github.call(repository.installation_id, f"feedback for {environment.name}", act)


EVENTS = {
    "build_queued": build_queued,
    "build_running": build_running,
    "build_held": build_held,
    "build_failed": build_failed,
    "build_cancelled": build_cancelled,
    "preview_removed": preview_removed,
    "awaiting_approval": awaiting_approval,
    commands.ANSWER_EVENT: commands.answer,
}


def send(
    session: Session, github: GitHubApp, settings: Settings, event: str, object_id: int
) -> None:
    """Run the feedback of one event (a control task's body)."""
    if event == "deployment_active":
        deployment_finished(session, github, settings, object_id, ok=True)
    elif event == "deployment_failed":
        deployment_finished(session, github, settings, object_id, ok=False)
    elif event == "deployment_promoted":
        promotion_status(session, github, settings, object_id, "in_progress")
    elif event in EVENTS:
        EVENTS[event](session, github, settings, object_id)


def handle_check_run(
    session: Session, delivery: WebhookDelivery, context: HandlerContext
) -> Outcome:
    """``check_run`` ``rerequested`` on a build's Check Run (a person clicked "Re-run"):
    a new build of that commit for the same environment, once per delivery, while it is
    still the environment's head (re-running an older commit's run must not deploy old
    code over a newer push); ``requested_action`` with :data:`REDEPLOY_ACTION`'s
    identifier redeploys production (see :func:`commands.redeploy_check_run`). Any other
    action, or another app's run, is not Portside's."""
    payload = delivery.payload
    run = payload.get("check_run") or {}
    identifier = (payload.get("requested_action") or {}).get("identifier")
    redeploy = delivery.action == "requested_action" and identifier == REDEPLOY_ACTION["identifier"]
    if delivery.action != "rerequested" and not redeploy:
        return Outcome("ignored", f"check_run {delivery.action}: nothing to do")
    if refusal := pushes.installation_refusal(session, delivery) or pushes.repository_refusal(
        session, delivery
    ):
        return Outcome("ignored", refusal)
    external_id = str(run.get("external_id") or "")
    build = session.get(Build, int(external_id)) if external_id.isdigit() else None
    app = context.github
    if (
        run.get("name") != CHECK_NAME
        or (app is not None and (run.get("app") or {}).get("id") != app.app_id)
        or build is None
        or build.service.repository_id != delivery.repository_id
        or build.commit_sha != run.get("head_sha")
        or build.check_run_id not in (None, run.get("id"))  # the build's own run, no other
    ):
        return Outcome("ignored", f"check run {run.get('id')} is not a Portside build's")
    environment = build.environment
    if environment.status == "inactive" or build.service.deleted_at is not None:
        return Outcome("ignored", f"{environment.name} is gone: build {build.id} is not rebuilt")
    if redeploy:
        return commands.redeploy_check_run(session, delivery, build)
    if environment.head_sha != build.commit_sha:
        return Outcome(
            "ignored",
            f"{build.commit_sha[:7]} is no longer the head of {environment.name}: not rebuilt",
        )
    rebuilt = pushes.start_build(
        session,
        build.service,
        environment,
        build.commit_sha,
        branch=build.branch,
        trigger_key=f"check_run:{delivery.id}",
        delivery_id=delivery.id,
        commit_message=build.commit_message,
        author=(payload.get("sender") or {}).get("login") or build.author,
        pushed_at=build.pushed_at,
        untrusted=build.untrusted,
        ref=build.ref,  # a chosen ref's build is rebuilt as chosen (ordered by time)
    )
    if rebuilt is None:
        return Outcome("ignored", f"build {build.id} was already rebuilt for this request")
    session.flush()
    return Outcome("processed", f"build {rebuilt.id} rebuilds {build.commit_sha[:7]}")
