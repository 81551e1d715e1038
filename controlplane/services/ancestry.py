"""Which of two commits of a branch is the newer one: by ancestry, not by arrival.

GitHub's ``pushed_at`` has one-second resolution and deliveries arrive in any order, so
the order of pushes alone can deploy a parent after its child. The evidence, strongest
first:

1. The push payloads Portside already holds: a push names its ``before`` commit (unless
   it was forced) and the commits it added, all ancestors of its ``after``; chained
   through the builds of the environment, this decides most pairs with no API call.
2. GitHub's compare API (``GET /repos/{o}/{r}/compare/{base}...{head}``), when a caller
   that may reach GitHub passes ``compare``: ``ahead``/``behind`` decide.
3. Otherwise (``diverged``: a force-push; no answer: GitHub unavailable; the same commit
   built twice): the branch's newest push, by ``pushed_at`` and then by arrival.

A build made from a chosen ref (a person's deploy of a branch, tag or commit; a pushed
tag) skips the ancestry: it is ordered by when it was asked for or pushed, so deploying
an older commit on purpose is not undone, and a later push replaces it as usual.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.errors import PermanentError, TransientError
from controlplane.models import Build, Deployment, WebhookDelivery

log = logging.getLogger(__name__)

# GitHub's answer for (base, head): "ahead", "behind", "diverged" or "identical".
Compare = Callable[[str, str], str]
# Commit -> the commits push payloads name as its ancestors.
Facts = dict[str, set[str]]

_SHA = re.compile(r"[0-9a-f]{40}")
_ZERO_SHA = "0" * 40
# Builds of an environment whose payloads are read to chain pushes together.
RECENT_BUILDS = 50
# Steps followed through the payloads before giving up on finding an ancestor.
MAX_WALK = 500


@dataclass(frozen=True, slots=True)
class Pushed:
    """A commit as pushed: its SHA, when GitHub received the push, and its arrival;
    ``chosen``: a ref a person or a tag push chose (ordered by time alone)."""

    sha: str
    moment: dt.datetime
    arrival: float  # the build id; a push not built yet arrives after every build
    chosen: bool = False


class BuildLike(Protocol):
    """A build, or a row of its columns."""

    id: Any
    commit_sha: Any
    pushed_at: Any
    created_at: Any
    ref: Any


def of_build(build: BuildLike) -> Pushed:
    moment: dt.datetime = build.pushed_at or build.created_at
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # SQLite's
    return Pushed(build.commit_sha, aware, float(build.id), chosen=build.ref is not None)


def of_deployment(deployment: Deployment) -> Pushed:
    """What a deployment runs, as pushed: its build, or for a promotion (another
    environment's build) that build's commit chosen when it was promoted, ordered by that
    time as a chosen ref is: a later push replaces it, an earlier one does not."""
    if deployment.promoted_at is None:
        return of_build(deployment.build)
    moment = deployment.promoted_at
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # SQLite's
    return Pushed(deployment.build.commit_sha, aware, float(deployment.build_id), chosen=True)


def payload_ancestors(payload: Mapping[str, Any]) -> set[str]:
    """The commits a push payload names as ancestors of its ``after``: ``before`` (not
    after a force-push, whose ``before`` was dropped from the branch) and those pushed."""
    after = payload.get("after")
    named: set[str] = set()
    before = payload.get("before")
    if isinstance(before, str) and not payload.get("forced") and before != _ZERO_SHA:
        named.add(before)
    for commit in payload.get("commits") or []:
        if isinstance(commit, Mapping):
            named.add(str(commit.get("id")))
    return {sha for sha in named if _SHA.fullmatch(sha) and sha != after}


def facts_for(
    session: Session, environment_id: int, payloads: Iterable[Mapping[str, Any]] = ()
) -> Facts:
    """What the push deliveries of the environment's recent builds, and ``payloads``,
    say about ancestry."""
    delivery_ids = session.scalars(
        select(Build.delivery_id)
        .where(Build.environment_id == environment_id, Build.delivery_id.is_not(None))
        .order_by(Build.id.desc())
        .limit(RECENT_BUILDS)
    ).all()
    deliveries = session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.event == "push"
        )
    ).all()
    facts: Facts = {}
    for payload in [*(d.payload for d in deliveries), *payloads]:
        after = payload.get("after")
        if isinstance(after, str):
            facts.setdefault(after, set()).update(payload_ancestors(payload))
    return facts


def descends(facts: Facts, ancestor: str, commit: str) -> bool:
    """Whether the payloads show ``ancestor`` to be an ancestor of ``commit``."""
    seen = {commit}
    frontier = [commit]
    while frontier and len(seen) < MAX_WALK:
        for parent in facts.get(frontier.pop(), ()):
            if parent == ancestor:
                return True
            if parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return False


def is_newer(
    candidate: Pushed, other: Pushed, facts: Facts, compare: Compare | None = None
) -> bool:
    """Whether ``candidate`` should be deployed rather than ``other``: its commit descends
    from the other's, or, when ancestry cannot tell (a force-push, GitHub unavailable)
    or must not (either is a chosen ref), it is the later push."""
    if candidate.sha != other.sha and not (candidate.chosen or other.chosen):
        if descends(facts, other.sha, candidate.sha):
            return True
        if descends(facts, candidate.sha, other.sha):
            return False
        status = _compared(compare, other.sha, candidate.sha)
        if status in ("ahead", "behind"):
            return status == "ahead"
    return (candidate.moment, candidate.arrival) > (other.moment, other.arrival)


def _compared(compare: Compare | None, base: str, head: str) -> str | None:
    """GitHub's status of ``head`` against ``base``, or None when it cannot be had."""
    if compare is None:
        return None
    try:
        return compare(base, head)
    except (TransientError, PermanentError) as exc:  # GitHub's trouble: ancestry unknown
        log.warning("cannot compare %s...%s on GitHub: %s", base[:7], head[:7], exc)
        return None
