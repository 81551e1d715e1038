"""Feedback on GitHub through the App: a commit status and a Check Run for every build,
a GitHub Deployment per deploy of every environment, and one PR comment per preview,
edited in place (the writes themselves: :mod:`controlplane.services.githubwrites`).

Events of one environment run one at a time (an advisory lock), so two never both create.
A build's early events say nothing once it has finished, so a late retry never turns a
final status back to pending. The links ("Details") go to the dashboard's build page,
which a person can open after logging in.

A cancelled or superseded build ends on GitHub too: its commit status says so (state
``error``), its Check Run ends ``cancelled`` (or ``neutral`` when a newer build was
already deployed), and a GitHub deployment it had is made ``inactive``.
"""

from __future__ import annotations

from github import Github
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.github.app import GitHubApp
from controlplane.models import (
    Build,
    Deployment,
    Environment,
    Service,
)
from controlplane.services import commands, gates
from controlplane.services.builds import FINISHED
from controlplane.services.githubwrites import (
    CONTEXT,
    REDEPLOY_ACTION,
    build_page_url,
    environment_url,
    installation_of,
    mark_inactive,
    replaced_deployment,
    write_check_run,
    write_comment,
    write_commit_status,
    write_deployment_status,
)
from controlplane.services.variables import secrets_of
from controlplane.settings import Settings
from controlplane.statuses import BuildStatus, EnvironmentStatus, PreviewProtection, StepStatus

# pg_advisory_xact_lock(FEEDBACK_LOCK, environment id): one feedback event at a time per
# environment (the two-key space never meets dispatch.DISPATCH_LOCK's one-key space).
FEEDBACK_LOCK = 7370


def _one_at_a_time(session: Session, environment_id: int) -> None:
    """Wait for the environment's other feedback events, then read the rows afresh (the
    one before may have recorded a deployment or comment id, or the build moved on)."""
    session.execute(select(func.pg_advisory_xact_lock(FEEDBACK_LOCK, environment_id)))
    session.expire_all()


def build_queued(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    build = session.get(Build, build_id)
    installation = installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status in FINISHED:
        return

    def act(client: Github) -> None:
        write_commit_status(
            client, build, "pending", build_page_url(settings, build), "Portside is building"
        )
        write_check_run(client, github, settings, build, "Queued", status="queued")
        write_deployment_status(
            client, github, build, "queued", log_url=build_page_url(settings, build)
        )

    github.call(installation, f"feedback for build {build.id}", act)


def build_running(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    build = session.get(Build, build_id)
    installation = installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status in FINISHED or build.status in gates.HELD:
        return
    current = next((step for step in build.steps if step.status == StepStatus.RUNNING), None)
    title = (
        f"Step {current.position + 1} of {len(build.steps)}: {current.name}"
        if current is not None
        else "Starting"
    )
    first = current is None or current.position == 0

    def act(client: Github) -> None:
        write_check_run(client, github, settings, build, title, status="in_progress")
        if first:  # the deployment is in progress once, from the first step
            write_deployment_status(
                client, github, build, "in_progress", log_url=build_page_url(settings, build)
            )

    github.call(installation, f"feedback for build {build.id}", act)


def build_held(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    """A built commit waits at a deployment gate (its checks, an approval): a pending
    commit status and the Check Run in progress, both saying what it waits for."""
    build = session.get(Build, build_id)
    installation = installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status not in gates.HELD:
        return
    log_url = build_page_url(settings, build)
    reason = build.environment.status_reason or build.status.replace("_", " ")

    def act(client: Github) -> None:
        write_commit_status(client, build, "pending", log_url, reason)
        write_check_run(client, github, settings, build, reason, status="in_progress")

    github.call(installation, f"feedback for build {build.id}", act)


def build_failed(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    build = session.get(Build, build_id)
    installation = installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    log_url = build_page_url(settings, build)
    secrets = secrets_of(session, settings, build.service_id)

    def act(client: Github) -> None:
        failed = f"{build.failed_step or 'build'} failed: {build.error or ''}"
        write_commit_status(client, build, "failure", log_url, failed, secrets=secrets)
        write_check_run(
            client, github, settings, build, failed, conclusion="failure", secrets=secrets
        )
        write_deployment_status(client, github, build, "failure", log_url=log_url)

    github.call(installation, f"feedback for build {build.id}", act)


def build_cancelled(session: Session, github: GitHubApp, settings: Settings, build_id: int) -> None:
    """A cancelled build (a newer push superseded it while unfinished) or one superseded
    when it came to deploy (a newer build was deployed first) ends on GitHub: an ``error``
    commit status saying why, the Check Run ``cancelled`` or ``neutral``, and a GitHub
    deployment it had made ``inactive`` (none is made just to say so)."""
    build = session.get(Build, build_id)
    installation = installation_of(build) if build else None
    if build is None or installation is None:
        return
    _one_at_a_time(session, build.environment_id)
    if build.status not in (BuildStatus.CANCELLED, BuildStatus.SUPERSEDED):
        return
    log_url = build_page_url(settings, build)
    secrets = secrets_of(session, settings, build.service_id)
    reason = build.error or "a newer build was deployed first"
    text = f"Superseded: {reason}"
    conclusion = "cancelled" if build.status == BuildStatus.CANCELLED else "neutral"

    def act(client: Github) -> None:
        write_commit_status(client, build, "error", log_url, text, secrets=secrets)
        write_check_run(
            client, github, settings, build, text, conclusion=conclusion, secrets=secrets
        )
        if build.github_deployment_id is not None:
            write_deployment_status(
                client, github, build, "inactive", log_url=log_url, description=text
            )

    github.call(installation, f"feedback for build {build.id}", act)


def _protection_note(service: Service) -> str:
    """What the PR comment tells reviewers about a protected preview (never a secret)."""
    if service.preview_protection == PreviewProtection.BASIC_AUTH:
        return "\n\nProtected: it asks for a login, which a maintainer can share."
    if service.preview_protection == PreviewProtection.IP_ALLOW:
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
    installation = installation_of(deployment.build) if deployment else None
    if deployment is None or deployment.promoted_from is None or installation is None:
        return
    build = deployment.build
    environment = deployment.environment
    _one_at_a_time(session, environment.id)
    done = state == "success"
    url = environment_url(environment) if done else None
    replaced = replaced_deployment(session, deployment) if done else None
    source = deployment.promoted_from.name
    text = f"Promoted from {source} by {deployment.promoted_by or 'someone'}"

    def act(client: Github) -> None:
        write_deployment_status(
            client,
            github,
            build,
            state,
            log_url=build_page_url(settings, build),
            url=url,
            description=text,
            promotion=deployment,
        )
        if replaced is not None:
            mark_inactive(client, github, replaced, build_page_url(settings, replaced.build))

    github.call(installation, f"feedback for deployment {deployment.id}", act)


def deployment_finished(
    session: Session, github: GitHubApp, settings: Settings, deployment_id: int, *, ok: bool
) -> None:
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None and deployment.promoted_from_id is not None:
        promotion_status(session, github, settings, deployment_id, "success" if ok else "failure")
        return
    build = deployment.build if deployment else None
    installation = installation_of(build) if build else None
    if deployment is None or build is None or installation is None:
        return
    environment = deployment.environment
    _one_at_a_time(session, environment.id)
    url = environment_url(environment)
    log_url = build_page_url(settings, build)
    replaced = (
        replaced_deployment(session, deployment) if ok and environment.kind != "preview" else None
    )

    def act(client: Github) -> None:
        if ok:
            deployed = f"Deployed to {environment.name}" + (f": {url}" if url else "")
            write_commit_status(client, build, "success", url or log_url, deployed)
            write_check_run(
                client,
                github,
                settings,
                build,
                deployed,
                conclusion="success",
                actions=[REDEPLOY_ACTION] if environment.kind == "production" else None,
            )
            write_deployment_status(client, github, build, "success", log_url=log_url, url=url)
            if replaced is not None:
                mark_inactive(client, github, replaced, build_page_url(settings, replaced.build))
        else:
            failed = "The new version did not start"
            write_commit_status(client, build, "failure", log_url, failed)
            write_check_run(client, github, settings, build, failed, conclusion="failure")
            write_deployment_status(client, github, build, "failure", log_url=log_url)
        if environment.kind == "preview" and ok:
            body = (
                f"**Preview of {environment.service.name}** is ready: {url or 'no address yet'}\n\n"
                f"Running commit `{build.commit_sha[:7]}` (deployment {deployment.id})."
                f"{_protection_note(environment.service)}"
            )
            environment.github_comment_id = write_comment(client, github, environment, body)

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
            write_deployment_status(
                client, github, build, "inactive", log_url=build_page_url(settings, build)
            )
        for promotion in promotions:
            write_deployment_status(
                client,
                github,
                promotion.build,
                "inactive",
                log_url=build_page_url(settings, promotion.build),
                promotion=promotion,
            )
        if environment.github_comment_id:
            reason = environment.closed_reason or "closed"
            write_comment(
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
    if environment is None or environment.status != EnvironmentStatus.AWAITING_APPROVAL:
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
        environment.github_comment_id = write_comment(client, github, environment, body)

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
