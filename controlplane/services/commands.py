"""Commands people give from GitHub: ``/portside approve``, ``/portside redeploy`` and
``/portside preview`` as the first line of a pull request comment (``issue_comment``) or a
commit comment (``commit_comment``).

Only a person GitHub says may write to the repository (admin, maintain or write: the
``permission`` of ``GET /repos/{owner}/{repo}/collaborators/{user}/permission``, asked at
the time of the command) is obeyed. Every ``/portside`` line is audited (``github.command``)
whoever wrote it and whatever became of it; other comments, edits and comments by Bots
(Portside's own App included) are ignored without a trace. The writer sees the answer as
a reaction on the comment after the commit: ``+1`` when Portside acted, ``confused`` when
it could not (the reason is in the audit trail and the delivery's outcome); a refused or
unknown command gets no reaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from github import Github, GithubException, UnknownObjectException
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from controlplane.errors import Conflict, DomainError
from controlplane.github.app import GitHubApp
from controlplane.models import (
    AuditEvent,
    Build,
    Environment,
    Repository,
    Service,
    WebhookDelivery,
)
from controlplane.services import approvals, audit, effects, envactions, previews, pushes
from controlplane.services.outcomes import HandlerContext, Outcome
from controlplane.settings import Settings
from controlplane.statuses import EnvironmentStatus

log = logging.getLogger(__name__)

PREFIX = "/portside"
COMMANDS = ("approve", "redeploy", "preview")
# GitHub's ``permission`` values that may command Portside (maintain reports as write).
WRITERS = ("admin", "write")
AUDIT_ACTION = "github.command"
# The feedback event that answers a command on its comment (object id: the audit event).
ANSWER_EVENT = "command_answered"
ANSWERS = {"done": "+1", "failed": "confused"}


@dataclass(frozen=True, slots=True)
class Comment:
    """A command's comment, as the webhook carried it."""

    subject: str  # "issue_comment" (on a pull request) or "commit_comment"
    comment_id: int
    login: str
    body: str
    created_at: dt.datetime | None
    pr_number: int | None = None
    sha: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """A writer's command being carried out."""

    delivery: WebhookDelivery
    context: HandlerContext
    comment: Comment
    services: list[Service]
    actor: str


def parse(body: str) -> str | None:
    """The command a comment's first line gives (``/portside <command>`` exactly, blanks
    around it aside); ``""`` for a ``/portside`` line naming no known command; ``None``
    for any other comment."""
    first = (body or "").strip().splitlines()[0].strip() if (body or "").strip() else ""
    words = first.split()
    if not words or words[0] != PREFIX:
        return None
    if len(words) == 2 and words[1] in COMMANDS:
        return words[1]
    return ""


def _by_bot(payload: dict[str, Any], context: HandlerContext) -> bool:
    """A comment a Bot wrote (this App's own comments included) commands nothing."""
    comment = payload.get("comment") or {}
    user = comment.get("user") or {}
    if user.get("type") == "Bot" or comment.get("performed_via_github_app"):
        return True
    app = context.github
    return app is not None and user.get("login") == app.bot_login()


def _created_at(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _comment_of(delivery: WebhookDelivery) -> Comment | None:
    """The command's comment from an ``issue_comment`` on a pull request or a
    ``commit_comment``; ``None`` for a comment on a plain issue."""
    payload = delivery.payload
    comment = payload.get("comment") or {}
    issue = payload.get("issue") or {}
    on_commit = delivery.event == "commit_comment"
    if not on_commit and (
        not issue.get("pull_request") or not isinstance(issue.get("number"), int)
    ):
        return None
    return Comment(
        subject=delivery.event,
        comment_id=int(comment.get("id") or 0),
        login=str((comment.get("user") or {}).get("login") or ""),
        body=str(comment.get("body") or ""),
        created_at=_created_at(comment.get("created_at")),
        pr_number=None if on_commit else int(issue["number"]),
        sha=str(comment.get("commit_id") or "") if on_commit else None,
    )


def permission_of(github: GitHubApp, installation_id: int, full_name: str, login: str) -> str:
    """The user's permission on the repository as GitHub reports it now (``none`` for a
    login GitHub does not know)."""

    path = f"/repos/{full_name}/collaborators/{quote(login, safe='')}/permission"

    def ask(client: Github) -> str:
        try:
            _headers, data = client.requester.requestJsonAndCheck("GET", path)
        except UnknownObjectException:
            return "none"
        return str(data.get("permission") or "none")

    return github.call(installation_id, f"permission of {login} on {full_name}", ask)


def handle_comment(session: Session, delivery: WebhookDelivery, context: HandlerContext) -> Outcome:
    """An ``issue_comment`` or ``commit_comment`` delivery: obey a writer's command."""
    if delivery.action != "created":
        return Outcome("ignored", f"{delivery.event} {delivery.action}: only new comments count")
    if refusal := pushes.installation_refusal(session, delivery) or pushes.repository_refusal(
        session, delivery
    ):
        return Outcome("ignored", refusal)
    comment = _comment_of(delivery)
    command = parse(comment.body) if comment is not None else None
    if comment is None or command is None or _by_bot(delivery.payload, context):
        return Outcome("ignored", "no /portside command from a person")
    repository = session.get(Repository, delivery.repository_id)
    full_name = delivery.repository_full_name or ""
    if repository is None or context.github is None:
        return Outcome("ignored", "no GitHub App to check the commenter's permission with")
    actor = f"github:{comment.login}"
    permission = permission_of(context.github, repository.installation_id, full_name, comment.login)
    detail: dict[str, Any] = {
        "repository": full_name,
        "subject": comment.subject,
        "comment": comment.comment_id,
        "command": command or comment.body.strip().splitlines()[0][:100],
        "permission": permission,
        **({"pr": comment.pr_number} if comment.pr_number is not None else {"sha": comment.sha}),
    }
    if not command or permission not in WRITERS:
        why = "unknown command" if not command else f"{comment.login} may not write ({permission})"
        audit.record(
            session, actor, AUDIT_ACTION, "repository", repository.id, result="ignored", **detail
        )
        return Outcome("ignored", f"{detail['command']!r} ignored: {why}")
    services = pushes.tracking_services(session, repository.id, full_name)
    try:
        with session.begin_nested():  # a command that fails half way changes nothing
            done = _run(session, Request(delivery, context, comment, services, actor), command)
        result = "done"
    except DomainError as exc:
        done, result = exc.message, "failed"
    event = audit.record(
        session,
        actor,
        AUDIT_ACTION,
        "repository",
        repository.id,
        result=result,
        reason=done,
        **detail,
    )
    session.flush()
    effects.note_feedback(session, ANSWER_EVENT, event.id)
    return Outcome("processed", f"/portside {command} from {comment.login}: {result}: {done}")


def _run(session: Session, request: Request, command: str) -> str:
    """Carry out a writer's command; an :class:`DomainError` says why it could not be."""
    comment = request.comment
    if command == "preview":
        if comment.pr_number is None:
            raise Conflict("/portside preview is a pull request command")
        return _preview(session, request, comment.pr_number)
    targets = _targets(session, comment, command, request.services)
    if not targets:
        where = f"#{comment.pr_number}" if comment.pr_number is not None else comment.sha
        raise Conflict(f"nothing to {command} for {where}")
    notes = []
    for environment in targets:
        if command == "approve":
            notes.append(_approve(session, request, environment))
        else:
            build = envactions.redeploy(session, environment.id, request.actor)
            build.delivery_id = request.delivery.id  # enqueued with the delivery's builds
            notes.append(f"{environment.name}: build {build.id}")
    return "; ".join(notes)


def _targets(
    session: Session, comment: Comment, command: str, services: list[Service]
) -> list[Environment]:
    """The environments a command is about: the pull request's previews, or for a commit
    comment the environments whose head that commit is (those waiting for approval, or
    production for a redeploy)."""
    ids = [service.id for service in services]
    if not ids:
        return []
    statement = select(Environment).where(
        Environment.service_id.in_(ids), Environment.status != EnvironmentStatus.INACTIVE
    )
    if comment.pr_number is not None:
        statement = statement.where(
            Environment.kind == "preview", Environment.pr_number == comment.pr_number
        )
    elif command == "redeploy":
        statement = statement.where(
            Environment.kind == "production", Environment.head_sha == comment.sha
        )
    else:  # what waits for that commit: its own build, or one promoted to it
        held = select(Build.id).where(Build.commit_sha == comment.sha)
        statement = statement.where(
            or_(Environment.head_sha == comment.sha, Environment.held_build_id.in_(held))
        )
    if command == "approve":
        statement = statement.where(Environment.status == EnvironmentStatus.AWAITING_APPROVAL)
    return list(session.scalars(statement.order_by(Environment.id)))


def _approve(session: Session, request: Request, environment: Environment) -> str:
    """Release what waits in ``environment`` (:func:`approvals.approve`: a deployment held
    for approval, or a fork preview's head): the commit named (a commit comment) or the
    one the pull request comment saw, refused when the head moved after the comment was
    written."""
    comment = request.comment
    held = environment.held_build
    sha = comment.sha or (held.commit_sha if held is not None else environment.head_sha) or ""
    # GitHub's times are whole seconds: a head that changed within the comment's second
    # counts as seen.
    moved = (
        comment.created_at is not None
        and environment.last_activity_at.replace(microsecond=0) > comment.created_at
    )
    if comment.sha is None and moved:
        raise Conflict(
            f"{environment.name} moved on after the comment: review its head and comment again"
        )
    if comment.pr_number is not None:
        # What its writer saw: a push whose delivery Portside has not processed yet left
        # an older head here, which nobody reviewed in this comment.
        shown = str((_pull(session, request, comment.pr_number).get("head") or {}).get("sha") or "")
        if shown != sha:
            raise Conflict(
                f"pull request #{comment.pr_number}'s head is {shown[:7]} on GitHub, "
                f"{environment.name} waits with {sha[:7]}: comment again once it caught up"
            )
    approval = approvals.approve(session, environment.id, request.actor, sha)
    note = f"{environment.name}: approved {sha[:7]}"
    if approval.build is not None:
        approval.build.delivery_id = request.delivery.id  # enqueued with the delivery's builds
        note += f", build {approval.build.id}"
    if approval.deployment is not None:
        note += f", deployment {approval.deployment.id}"
    return note


def _preview(session: Session, request: Request, number: int) -> str:
    """Create, bring back (closed for idleness) or rebuild the pull request's previews,
    under the same rules as a pull request event (previews on, forks allowed, a fork's
    commit approved)."""
    delivery, context = request.delivery, request.context
    full_name = delivery.repository_full_name or ""
    pull = _pull(session, request, number)
    if pull.get("state") != "open":
        raise Conflict(f"pull request #{number} is closed")
    base = str((pull.get("base") or {}).get("ref") or "")
    fork = previews.is_fork(pull, full_name)
    notes = []
    for service in request.services:
        if service.branch != base or not service.previews_enabled:
            continue
        if fork and not service.fork_previews:
            continue
        environment, build = previews.open_preview(
            session,
            service,
            number,
            pull,
            from_fork=fork,
            preview_zone=context.preview_zone,
            delivery_id=delivery.id,
        )
        if build is None and environment.status not in (
            EnvironmentStatus.AWAITING_APPROVAL,
            EnvironmentStatus.REFUSED,
        ):
            build = envactions.redeploy(session, environment.id, request.actor)
            build.delivery_id = delivery.id
        if build is not None:
            notes.append(f"{environment.name}: build {build.id}")
        else:
            notes.append(f"{environment.name}: {environment.status}")
    if not notes:
        raise Conflict(f"no service previews pull requests into {base}")
    return "; ".join(notes)


def _pull(session: Session, request: Request, number: int) -> dict[str, Any]:
    """The pull request as GitHub shows it now."""
    github = request.context.github
    repository = session.get(Repository, request.delivery.repository_id)
    full_name = request.delivery.repository_full_name or ""
    if github is None or repository is None:
        raise Conflict("no GitHub App to read the pull request with")

    def read(client: Github) -> dict[str, Any]:
        _headers, data = client.requester.requestJsonAndCheck(
            "GET", f"/repos/{full_name}/pulls/{number}"
        )
        return dict(data)

    return github.call(repository.installation_id, f"pull request #{number}", read)


def answer(session: Session, github: GitHubApp, settings: Settings, audit_id: int) -> None:
    """React on the command's comment (a feedback event, after the commit): ``+1`` done,
    ``confused`` failed. GitHub answers 200 for a reaction already there, so a retry adds
    none; a refused reaction (a commit comment where the App may not write contents) is
    logged, not retried."""
    del settings  # the feedback events' common signature
    event = session.get(AuditEvent, audit_id)
    if event is None or event.action != AUDIT_ACTION:
        return
    detail = event.detail
    content = ANSWERS.get(str(detail.get("result")))
    repository = session.get(Repository, int(event.target_id or 0))
    if content is None or repository is None:
        return
    kind = "issues/comments" if detail.get("subject") == "issue_comment" else "comments"
    path = f"/repos/{detail['repository']}/{kind}/{int(detail['comment'])}/reactions"

    def react(client: Github) -> None:
        try:
            client.requester.requestJsonAndCheck("POST", path, input={"content": content})
        except GithubException as exc:
            if exc.status != 403:
                raise
            log.warning("GitHub refused Portside's reaction on %s (403)", path)

    github.call(repository.installation_id, f"reaction to comment {detail['comment']}", react)


def redeploy_check_run(session: Session, delivery: WebhookDelivery, build: Build) -> Outcome:
    """The Redeploy button on a production build's Check Run: a new build of that commit
    while it is still production's head (an older run's button must not bring old code
    back)."""
    environment = build.environment
    if environment.kind != "production" or environment.head_sha != build.commit_sha:
        return Outcome(
            "ignored", f"{build.commit_sha[:7]} is not the head of production: not redeployed"
        )
    actor = f"github:{(delivery.payload.get('sender') or {}).get('login') or 'unknown'}"
    try:
        rebuilt = envactions.redeploy(session, environment.id, actor)
    except DomainError as exc:
        return Outcome("ignored", f"not redeployed: {exc.message}")
    rebuilt.delivery_id = delivery.id
    session.flush()
    return Outcome("processed", f"build {rebuilt.id} redeploys {build.commit_sha[:7]}")
