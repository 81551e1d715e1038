"""Feedback on GitHub through the App: a commit status for every build, a GitHub
Deployment per preview deploy, and one PR comment per preview, edited in place.

Every write is idempotent, so an event can run again after GitHub failed it before or
after acting: the GitHub deployment is found before one is created, by commit,
environment and the payload Portside wrote (:data:`PAYLOAD_KEY`), and the PR comment by
its hidden marker (:data:`COMMENT_MARKER`); their ids are kept on the build and the
environment. Events of one environment run one at a time (an advisory lock), so two
never both create. A build's early events say nothing once it has finished, so a late
retry never turns a final status back to pending.

The links ("Details") go to the dashboard's build page, which a person can open after
logging in.

Every text written to GitHub passes through :func:`contracts.masking.mask`, the build
logs' masking, at the two places that write text (:func:`_commit_status`,
:func:`_comment`); where the text can carry a build's own words (its error, a reason)
the service's secret values are masked too (:func:`secrets_of`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from github import Github, UnknownObjectException
from github.Deployment import Deployment as GitHubDeployment
from github.IssueComment import IssueComment
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from contracts.masking import mask
from controlplane.crypto import SecretBox
from controlplane.github.app import GitHubApp
from controlplane.models import Build, Deployment, Environment, RegistryCredential, Variable
from controlplane.services.builds import FINISHED
from controlplane.settings import Settings

CONTEXT = "portside/build"
COMMENT_MARKER = "<!-- portside:preview:{name} -->"
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


def secrets_of(session: Session, settings: Settings, service_id: int) -> list[str]:
    """Every secret value a text about ``service_id`` could leak: its secret variables
    (build and runtime, every environment), registry passwords, Portside's own keys."""
    values = [
        secret.reveal()
        for secret in (
            settings.github_webhook_secret,
            settings.secret_key,
            settings.token,
            settings.metrics_token,
            *settings.old_secret_keys,
        )
    ]
    if not settings.secret_key:
        return values  # nothing can have been stored encrypted
    box = SecretBox.from_settings(settings)
    stored = session.scalars(
        select(Variable.value_encrypted).where(
            Variable.service_id == service_id, Variable.is_secret.is_(True)
        )
    )
    values.extend(box.decrypt(ciphertext) for ciphertext in stored)
    registries = session.execute(
        select(RegistryCredential.password_encrypted, RegistryCredential.pull_password_encrypted)
    )
    for row in registries:
        values.extend(box.decrypt(ciphertext) for ciphertext in row if ciphertext)
    return values


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


def _github_deployment(client: Github, build: Build) -> GitHubDeployment:
    """The build's GitHub deployment: the one kept on the build, else the one Portside
    made earlier for this commit and environment (a retry whose first answer was lost),
    else a new one."""
    repo = client.get_repo(build.service.repository_full_name)
    if build.github_deployment_id is not None:
        return repo.get_deployment(build.github_deployment_id)
    environment = build.environment
    payload = {"environment": environment.id}
    earlier = repo.get_deployments(sha=build.commit_sha, environment=environment.name)
    deployment = next(
        (
            d
            for d in earlier
            if isinstance(d.payload, dict) and d.payload.get(PAYLOAD_KEY) == payload
        ),
        None,
    ) or repo.create_deployment(
        ref=build.commit_sha,
        environment=environment.name,
        payload={PAYLOAD_KEY: payload},
        transient_environment=True,
        production_environment=False,
        auto_merge=False,
        required_contexts=[],
        description=f"Preview of {build.service.name} for #{environment.pr_number}",
    )
    build.github_deployment_id = deployment.id
    return deployment


def _deployment_status(
    client: Github, build: Build, state: str, *, log_url: str, url: str | None = None
) -> None:
    """A status on the build's GitHub deployment; previews only have one."""
    if build.github_deployment_id is None and build.environment.kind != "preview":
        return
    deployment = _github_deployment(client, build)
    options: dict[str, Any] = {"target_url": log_url}
    if url:
        options["environment_url"] = url
    deployment.create_status(state, **options)


def _comment(
    client: Github, environment: Environment, body: str, *, secrets: Collection[str] = ()
) -> int:
    """Write the preview's one PR comment: edit the one kept on the environment, else the
    one carrying its marker (a retry whose first answer was lost), else create it."""
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
            (c for c in issue.get_comments() if c.user.type == "Bot" and c.body.startswith(marker)),
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
        if build.environment.kind == "preview":
            _deployment_status(client, build, "queued", log_url=_log_url(settings, build))

    github.call(installation, f"feedback for build {build.id}", act)


def build_running(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    build = session.get(Build, build_id)
    installation = _installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status in FINISHED:
        return
    github.call(
        installation,
        f"feedback for build {build.id}",
        lambda client: _deployment_status(
            client, build, "in_progress", log_url=_log_url(settings, build)
        ),
    )


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
        _deployment_status(client, build, "failure", log_url=log_url)

    github.call(installation, f"feedback for build {build.id}", act)


def deployment_finished(
    session: Session, github: GitHubApp, settings: Settings, deployment_id: int, *, ok: bool
) -> None:
    deployment = session.get(Deployment, deployment_id)
    build = deployment.build if deployment else None
    installation = _installation_of(build) if build else None
    if deployment is None or build is None or installation is None:
        return
    environment = deployment.environment
    _one_at_a_time(session, environment.id)
    url = environment_url(environment)
    log_url = _log_url(settings, build)

    def act(client: Github) -> None:
        if ok:
            _commit_status(
                client, build, "success", url or log_url, f"Deployed to {environment.name}"
            )
            _deployment_status(client, build, "success", log_url=log_url, url=url)
        else:
            _commit_status(client, build, "failure", log_url, "The new version did not start")
            _deployment_status(client, build, "failure", log_url=log_url)
        if environment.kind == "preview" and ok:
            body = (
                f"**Preview of {environment.service.name}** is ready: {url or 'no address yet'}\n\n"
                f"Running commit `{build.commit_sha[:7]}` (deployment {deployment.id})."
            )
            environment.github_comment_id = _comment(client, environment, body)

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
    secrets = secrets_of(session, settings, environment.service_id)

    def act(client: Github) -> None:
        for build in builds:
            _deployment_status(client, build, "inactive", log_url=_log_url(settings, build))
        if environment.github_comment_id:
            reason = environment.closed_reason or "closed"
            _comment(
                client,
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
        f'`POST {approve}` with the body `{{"sha": "{sha}"}}` and an admin token. '
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
        environment.github_comment_id = _comment(client, environment, body)

    github.call(repository.installation_id, f"feedback for {environment.name}", act)


EVENTS = {
    "build_queued": build_queued,
    "build_running": build_running,
    "build_failed": build_failed,
    "preview_removed": preview_removed,
    "awaiting_approval": awaiting_approval,
}


def send(
    session: Session, github: GitHubApp, settings: Settings, event: str, object_id: int
) -> None:
    """Run the feedback of one event (a control task's body)."""
    if event == "deployment_active":
        deployment_finished(session, github, settings, object_id, ok=True)
    elif event == "deployment_failed":
        deployment_finished(session, github, settings, object_id, ok=False)
    elif event in EVENTS:
        EVENTS[event](session, github, settings, object_id)
