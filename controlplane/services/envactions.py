"""What a person asks of one environment: deploy a ref to production, build its commit
again, approve a fork's commit (to run, or to receive secrets), tear it down."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from controlplane.crypto import SecretBox
from controlplane.errors import (
    Conflict,
    NotFound,
    ValidationFailed,
)
from controlplane.github.app import GitHubApp
from controlplane.models import (
    Build,
    Environment,
    utcnow,
)
from controlplane.services import (
    audit,
    generations,
    gitsources,
    listings,
    previews,
    pushes,
    staging,
)
from controlplane.services.catalog import get_service
from controlplane.services.servicerules import valid_branch
from controlplane.statuses import EnvironmentStatus


def redeploy(session: Session, environment_id: int, actor: str) -> Build:
    """A new build of the environment's current commit (a person asked for it); a fork's
    commit only once it is approved, and only where forks may run."""
    environment = listings.get_environment(session, environment_id)
    if environment.status == EnvironmentStatus.INACTIVE or not environment.head_sha:
        raise ValidationFailed(
            "nothing to redeploy", details={"environment": ["inactive or never built"]}
        )
    trigger_key = f"redeploy:{utcnow().timestamp():.6f}"
    if environment.from_fork:
        if environment.approved_sha != environment.head_sha:
            raise Conflict(
                f"commit {environment.head_sha[:7]} of this fork is not approved; "
                "approve it first: "
                f"portside previews approve {environment.name} --sha {environment.head_sha}"
            )
        build = previews.advance_fork(session, environment, trigger_key=trigger_key)
        if build is None:
            raise Conflict(environment.status_reason or "the preview cannot be built now")
    else:
        build = pushes.start_build(
            session,
            environment.service,
            environment,
            environment.head_sha,
            branch=environment.branch,
            trigger_key=trigger_key,
            author=actor,
        )
    assert build is not None  # the trigger key is new
    session.flush()
    audit.record(
        session, actor, "environment.redeploy", "environment", environment.id, build=build.id
    )
    return build


def _approvable_head(environment: Environment, sha: str) -> str:
    """``sha`` if a person may approve it now: the PR's current head, and only that (the
    commit they reviewed is named, so a push between review and approval is refused)."""
    if environment.kind != "preview" or not environment.from_fork:
        raise Conflict("only previews of pull requests from forks wait for approval")
    if environment.status == EnvironmentStatus.INACTIVE:
        raise Conflict(f"preview {environment.name} is closed")
    head = environment.head_sha
    if not head:
        raise Conflict(f"preview {environment.name} has no head commit yet")
    if sha != head:
        raise Conflict(
            f"the pull request's head is now {head[:7]}, not {sha[:7]}: review that commit "
            "and approve it",
            details={"sha": [f"the current head is {head}"]},
        )
    return head


def approve(
    session: Session, environment_id: int, actor: str, sha: str
) -> tuple[Environment, Build | None]:
    """A person approved the fork commit ``sha`` they reviewed (it must be the head): build
    and run that commit, untrusted; the next push waits for a new approval."""
    environment = session.get(Environment, environment_id, with_for_update=True)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    head = _approvable_head(environment, sha)
    if environment.approved_sha != head:
        environment.approved_sha = head
        audit.record(session, actor, "environment.approve", "environment", environment.id, sha=head)
    build = previews.advance_fork(session, environment)
    if build is not None:
        session.flush()
    return environment, build


def approve_secrets(session: Session, environment_id: int, actor: str, sha: str) -> Environment:
    """A person let the fork commit ``sha`` they reviewed (the head, and only it) receive
    secrets."""
    environment = session.get(Environment, environment_id, with_for_update=True)
    if environment is None:
        raise NotFound(f"environment {environment_id} does not exist")
    head = _approvable_head(environment, sha)
    if not environment.secrets_approved_for(head):
        environment.secrets_approved_sha = head
        environment.generation += 1
        generations.bump(session, environment.host_id)
        audit.record(
            session, actor, "environment.approve_secrets", "environment", environment.id, sha=head
        )
    return environment


def remove(session: Session, environment_id: int, actor: str) -> Environment:
    """Tear down a preview or a staging environment by hand (production environments go
    with their service; a staging environment's images stay, production may run them)."""
    environment = listings.get_environment(session, environment_id)
    if environment.kind == "production":
        raise Conflict("production is not torn down this way; delete the service instead")
    if environment.kind == "preview":
        previews.teardown(session, environment, actor, "removed through the API")
    else:
        staging.delete_environment(session, environment, actor)
    return environment


# A ref that may be a commit SHA, in full or abbreviated.
MAYBE_SHA = re.compile(r"^[0-9a-f]{4,40}$")


def deploy_ref(
    session: Session,
    github: GitHubApp | None,
    service_id: int,
    ref: str | None,
    actor: str,
    *,
    box: SecretBox | None = None,
) -> Build:
    """Build and deploy to production the commit a branch, tag or SHA names (by default
    the head of the service's branch), resolved through GitHub (a git-URL service's
    through ``git ls-remote``, its credentials opened with ``box``). The build is ordered by
    when it was asked for (:mod:`~controlplane.services.ancestry`): an older commit is
    deployed all the same, and a later push replaces it as usual."""
    service = get_service(session, service_id)
    ref = (ref or service.branch).strip()
    if not valid_branch(ref):
        raise ValidationFailed("not a valid ref", details={"ref": ["a branch, tag or commit SHA"]})
    if service.git_url is not None:
        resolved = gitsources.resolve_ref(box, service, ref)
    else:
        resolved = pushes.resolve_ref(github, service, ref)
    if resolved is None:
        source = service.git_url or service.repository_full_name
        raise ValidationFailed(
            f"{ref!r} is not a branch, tag or commit of {source}",
            details={"ref": ["unknown on the remote" if service.git_url else "unknown on GitHub"]},
        )
    sha, message = resolved
    now = utcnow()
    build = pushes.start_build(
        session,
        service,
        pushes.production_environment(session, service),
        sha,
        # Images are tagged by branch: a SHA keeps the service's, a tag or branch its own.
        branch=service.branch if MAYBE_SHA.match(ref) and sha.startswith(ref) else ref,
        trigger_key=f"deploy:{now.timestamp():.6f}",
        commit_message=message,
        author=actor,
        # In GitHub's whole seconds, so a push within the same second counts as later.
        pushed_at=now.replace(microsecond=0),
        ref=ref,
    )
    assert build is not None  # the trigger key is new
    session.flush()
    audit.record(
        session, actor, "service.deploy", "service", service.id, ref=ref, commit=sha, build=build.id
    )
    return build
