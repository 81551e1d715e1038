"""Wait for checks: a service with ``deploy_when: checks_passed`` builds at once, and its
build deploys only once the commit's checks on GitHub passed (the build waits in
``awaiting_checks``, see :mod:`~controlplane.services.gates`).

Which checks: the service's ``required_checks`` by name (a Check Run's name or a commit
status's context), or, when the list is empty, every Check Run and commit status on the
commit but Portside's own (its Check Run and its ``portside/build`` status never count,
whatever they are named in the list). One that failed fails the build at once; none
reported yet waits; nothing passed within the service's ``checks_timeout`` fails it.

GitHub is asked each time (the newest run of each name, the combined status), so a
delivery lost, late or out of order changes nothing: the ``check_suite``, ``check_run``
and ``status`` webhooks of a commit that has a build waiting make Portside look at once,
and beat's poll (:func:`poll`) looks at every waiting build as the backstop.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from github import Github
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.errors import PortsideError
from controlplane.github.app import GitHubApp
from controlplane.models import Build, Environment, Service, WebhookDelivery, utcnow
from controlplane.services import builds, checkrerun, deployments, gates, githubwrites, pushes
from controlplane.services.outcomes import HandlerContext, Outcome
from controlplane.statuses import DeployWhen

log = logging.getLogger(__name__)

# Check Run conclusions that let a deployment through; any other completed one fails it.
PASSING_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
# Commit status states: success passes, pending waits, failure and error fail.
PASSING_STATES = frozenset({"success"})
WAITING_STATES = frozenset({"pending"})
# Check Run actions worth looking again for (a re-run or a button is feedback's).
CHECK_RUN_ACTIONS = frozenset({"created", "completed"})
# GitHub's largest page.
PER_PAGE = 100


@dataclass(frozen=True, slots=True)
class Check:
    """One check on a commit as GitHub reports it now."""

    name: str
    state: Literal["passed", "failed", "pending"]
    detail: str  # the conclusion or state, for a person


@dataclass(frozen=True, slots=True)
class Verdict:
    state: Literal["passed", "failed", "waiting"]
    reason: str


def from_check_run(name: str, status: str, conclusion: str | None) -> Check:
    if status != "completed":
        return Check(name, "pending", status)
    passed = conclusion in PASSING_CONCLUSIONS
    return Check(name, "passed" if passed else "failed", conclusion or "no conclusion")


def from_status(context: str, state: str) -> Check:
    if state in PASSING_STATES:
        return Check(context, "passed", state)
    return Check(context, "pending" if state in WAITING_STATES else "failed", state)


def evaluate(checks: Iterable[Check], required: Sequence[str], sha: str) -> Verdict:
    """Whether the checks on commit ``sha`` let its build deploy: ``required`` by name
    (empty: all of them); Portside's own are not among ``checks`` (see :func:`fetch`)."""
    known: dict[str, list[Check]] = {}
    for check in checks:
        known.setdefault(check.name, []).append(check)
    own = {githubwrites.CHECK_NAME, githubwrites.CONTEXT}
    names = [name for name in dict.fromkeys(required) if name not in own]
    if not names:
        names = sorted(known)
        if not names:
            return Verdict("waiting", f"waiting for checks on {sha[:7]}: none reported yet")
    failed = [c for name in names for c in known.get(name, []) if c.state == "failed"]
    if failed:
        listed = ", ".join(f"{c.name} ({c.detail})" for c in failed)
        return Verdict("failed", f"{listed} on {sha[:7]}")
    waiting = [
        f"{name} (not reported yet)" if name not in known else f"{name} ({c.detail})"
        for name in names
        for c in known.get(name, [Check(name, "pending", "")])
        if c.state == "pending"
    ]
    if waiting:
        return Verdict("waiting", f"waiting for {', '.join(waiting)} on {sha[:7]}")
    return Verdict("passed", f"checks passed on {sha[:7]}: {', '.join(names)}")


def fetch(client: Github, app_id: int, full_name: str, sha: str) -> list[Check]:
    """The newest Check Run of each name and the combined status's statuses on ``sha``,
    every page of each, less Portside's own."""
    repo = client.get_repo(full_name)
    found = [
        from_check_run(run.name, run.status, run.conclusion)
        for run in repo.get_commit(sha).get_check_runs()
        if run.app is None or run.app.id != app_id
    ]
    page = 1
    seen = 0
    while True:
        _, data = client.requester.requestJsonAndCheck(
            "GET",
            f"/repos/{full_name}/commits/{sha}/status",
            parameters={"per_page": PER_PAGE, "page": page},
        )
        statuses: list[dict[str, Any]] = data.get("statuses") or []
        seen += len(statuses)
        found += [
            from_status(str(s.get("context")), str(s.get("state")))
            for s in statuses
            if s.get("context") != githubwrites.CONTEXT
        ]
        if not statuses or seen >= int(data.get("total_count") or 0):
            return found
        page += 1


def verdict_for(github: GitHubApp, build: Build) -> Verdict:
    """Ask GitHub about the build's commit now."""
    service = build.service
    repository = service.repository
    if repository is None:
        return Verdict("waiting", "the service has no GitHub repository to read checks from")
    checks = github.call(
        repository.installation_id,
        f"checks of {build.commit_sha[:7]}",
        lambda client: fetch(client, github.app_id, service.repository_full_name, build.commit_sha),
    )
    return evaluate(checks, [str(name) for name in service.required_checks], build.commit_sha)


def _timed_out(build: Build, now: dt.datetime) -> bool:
    held_at = build.held_at or build.finished_at or build.created_at
    return now - held_at >= dt.timedelta(seconds=build.service.checks_timeout)


def apply(session: Session, build_id: int, verdict: Verdict | None, actor: str) -> str:
    """Act on what GitHub said of a waiting build (None: it could not be asked): deploy it,
    fail it, time it out or note what it waits for. Returns what became of it."""
    build = builds.get_build(session, build_id, lock=True)
    environment = session.get(Environment, build.environment_id, with_for_update=True)
    assert environment is not None
    if build.status != gates.CHECKS or environment.held_build_id != build.id:
        return f"build {build.id} is {build.status}"
    if build.service.deploy_when != DeployWhen.CHECKS_PASSED:  # switched off meanwhile
        verdict = Verdict("passed", "the service deploys without waiting for checks now")
    if verdict is not None and verdict.state == "passed":
        deployment = deployments.deliver(
            session, environment, build, actor, cleared=(gates.CHECKS,)
        )
        if deployment is None:
            return f"build {build.id}: {verdict.reason}; now {build.status}"
        return f"build {build.id}: {verdict.reason}; deployment {deployment.id}"
    if verdict is not None and verdict.state == "failed":
        gates.fail_held(session, environment, build, verdict.reason)
        return f"build {build.id}: {verdict.reason}"
    if _timed_out(build, utcnow()):
        waited = verdict.reason if verdict is not None else "GitHub could not be asked"
        reason = f"not all passed within {build.service.checks_timeout} s ({waited})"
        gates.fail_held(session, environment, build, reason)
        return f"build {build.id}: {reason}"
    if verdict is not None:
        gates.note_reason(session, environment, build, verdict.reason)
        return f"build {build.id}: {verdict.reason}"
    return f"build {build.id}: still waiting"


def waiting(
    session: Session, *, sha: str | None = None, repository_id: int | None = None
) -> list[int]:
    """Builds held for their commit's checks, oldest first; of one commit and repository."""
    query = select(Build.id).where(Build.status == gates.CHECKS).order_by(Build.id)
    if sha is not None:
        query = query.where(Build.commit_sha == sha)
    if repository_id is not None:
        query = query.join(Service, Build.service_id == Service.id).where(
            Service.repository_id == repository_id
        )
    return list(session.scalars(query))


def poll(session: Session, github: GitHubApp | None) -> list[str]:
    """The backstop for missed deliveries: ask GitHub about every waiting build (and time
    out those waiting too long, even when GitHub cannot be asked). Each build is committed
    on its own, so one GitHub failure holds up no other."""
    outcomes = []
    for build_id in waiting(session):
        build = builds.get_build(session, build_id)
        verdict: Verdict | None = None
        if github is not None:
            try:
                verdict = verdict_for(github, build)
            except PortsideError as exc:  # GitHub down or refusing: the next poll
                log.warning("checks of build %s could not be read: %s", build_id, exc)
        outcomes.append(apply(session, build_id, verdict, "checks poll"))
        session.commit()
    return outcomes


def handle_check_event(
    session: Session, delivery: WebhookDelivery, context: HandlerContext
) -> Outcome:
    """``check_suite`` completed, ``check_run`` created or completed, or ``status`` on a
    commit whose build waits for its checks: look at that commit's checks now. Portside's
    own Check Run and status, and commits nothing waits for, are ignored."""
    payload = delivery.payload
    event = delivery.event
    subject = payload if event == "status" else (payload.get(event) or {})
    app = context.github
    if event == "check_suite" and delivery.action != "completed":
        return Outcome("ignored", f"check_suite {delivery.action}: nothing to learn")
    if event == "check_run" and delivery.action not in CHECK_RUN_ACTIONS:
        return Outcome("ignored", f"check_run {delivery.action}: nothing to learn")
    if event == "status" and payload.get("context") == githubwrites.CONTEXT:
        return Outcome("ignored", "Portside's own commit status")
    if event != "status" and app is not None and (subject.get("app") or {}).get("id") == app.app_id:
        return Outcome("ignored", f"Portside's own {event}")
    sha = str(subject.get("head_sha") or subject.get("sha") or "")
    if refusal := pushes.installation_refusal(session, delivery) or pushes.repository_refusal(
        session, delivery
    ):
        return Outcome("ignored", refusal)
    held = waiting(session, sha=sha, repository_id=delivery.repository_id) if sha else []
    if not held:
        return Outcome("ignored", f"no deployment waits for the checks of {sha[:7] or '?'}")
    if app is None:
        return Outcome("ignored", "no GitHub App configured to read the checks")
    outcomes = [
        apply(session, build_id, verdict_for(app, builds.get_build(session, build_id)), event)
        for build_id in held
    ]
    return Outcome("processed", "; ".join(outcomes))


def handle_check_run(
    session: Session, delivery: WebhookDelivery, context: HandlerContext
) -> Outcome:
    """``check_run``: created or completed may let a waiting build through; the others
    (a re-run or an action asked of Portside's own run) are feedback's."""
    if delivery.action not in CHECK_RUN_ACTIONS:
        return checkrerun.handle_check_run(session, delivery, context)
    return handle_check_event(session, delivery, context)
