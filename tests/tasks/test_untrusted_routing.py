"""A fork's builds go to their own queue, which only workers told to take untrusted builds
read; a worker that is handed one anyway drops it before claiming or cloning anything.
With PostgreSQL, Redis and real ``portside buildworker`` processes."""

from __future__ import annotations

import datetime as dt

import pytest
import redis
from celery import Celery
from sqlalchemy import select

from controlplane.db import Database
from controlplane.models import Build, Environment, Service
from controlplane.services import catalog, hosts, pushes, servicerules, stepclaims
from controlplane.services import dispatch as dispatching
from controlplane.services.dispatch import DISPATCHED_KEY, UNTRUSTED_DISPATCHED_KEY
from controlplane.settings import Settings
from tasks import pipeline
from tasks.app import BUILDS_QUEUE, UNTRUSTED_BUILDS_QUEUE, node_queue
from tasks.buildmain import build_queues
from tests.fixtures.processes import Workers, wait_until, worker_environment

LOST_AFTER = dt.timedelta(seconds=90)


def fork_builds(database: Database, numbers: list[int], *, untrusted: bool = True) -> list[int]:
    """A queued build of a preview of service ``hello`` per PR number, from a fork."""
    made = []
    with database.session_scope() as session:
        service = session.scalar(select(Service).where(Service.name == "hello"))
        if service is None:
            hosts.create_host(session, "web-1", "test")
            service = catalog.create_service(
                session,
                servicerules.ServiceSpec(
                    name="hello", repository="o/hello", branch="main", host="web-1"
                ),
                "test",
            )
        for number in numbers:
            environment = Environment(
                service_id=service.id,
                host_id=service.environments[0].host_id,
                name=f"hello-pr-{number}",
                kind="preview",
                branch="main",  # a fork's branch may be called main
                pr_number=number,
                from_fork=untrusted,
            )
            session.add(environment)
            session.flush()
            build = pushes.start_build(
                session, service, environment, f"{number:040x}", branch="main"
            )
            assert build is not None
            build.untrusted = untrusted
            session.flush()
            made.append(build.id)
    return made


class Lanes:
    """Both shared queues as the dispatcher fills them: sends recorded, not published."""

    def __init__(self) -> None:
        self.sent: dict[bool, list[tuple[int, int]]] = {False: [], True: []}

    def send(self, build_id: int, attempt: int, *, untrusted: bool = False) -> None:
        self.sent[untrusted].append((build_id, attempt))

    def length(self, *, untrusted: bool = False) -> int:
        return len(self.sent[untrusted])


def dispatch(database: Database, broker: redis.Redis, lanes: Lanes) -> list[int]:
    with database.session_scope() as session:
        return dispatching.dispatch(
            session, broker, lanes.send, shared_queue_length=lanes.length, lost_after=LOST_AFTER
        )


def test_fork_builds_are_dispatched_to_their_own_queue_and_capacity(
    database: Database, redis_url: str
) -> None:
    broker = redis.Redis.from_url(redis_url)
    (trusted,) = fork_builds(database, [1], untrusted=False)
    first, second = fork_builds(database, [2, 3])
    lanes = Lanes()

    assert sorted(dispatch(database, broker, lanes)) == sorted([trusted, first])
    assert lanes.sent == {False: [(trusted, 1)], True: [(first, 1)]}
    assert broker.zrange(DISPATCHED_KEY, 0, -1) == [f"{trusted}:1".encode()]
    assert broker.zrange(UNTRUSTED_DISPATCHED_KEY, 0, -1) == [f"{first}:1".encode()]

    # The untrusted lane counts its own workers: the second waits for the first's place.
    assert dispatch(database, broker, lanes) == []
    with database.session_scope() as session:
        stepclaims.claim_step(session, trusted, "clone", 1, "build-1@test")
    assert dispatch(database, broker, lanes) == []  # a trusted worker frees no fork's place
    with database.session_scope() as session:
        spec = stepclaims.claim_step(session, first, "clone", 1, "fork-1@test")
    assert (spec.untrusted, spec.pr_number, spec.compose_allow) == (True, 2, [])
    assert dispatch(database, broker, lanes) == [second]
    assert lanes.sent[True] == [(first, 1), (second, 1)]


def test_the_chain_of_a_fork_build_goes_to_the_untrusted_queue_and_says_so() -> None:
    fork = pipeline.build_chain(4, 2, untrusted=True)
    assert [task.options["queue"] for task in fork.tasks] == [UNTRUSTED_BUILDS_QUEUE] * 5
    assert all(task.kwargs == {"untrusted": True} for task in fork.tasks)
    assert all(task.args == (4, 2) for task in fork.tasks)
    trusted = pipeline.build_chain(4, 2)
    assert [task.options["queue"] for task in trusted.tasks] == [BUILDS_QUEUE] * 5
    assert all(task.kwargs == {} for task in trusted.tasks)


@pytest.mark.parametrize(
    ("mode", "shared"),
    [
        ("no", [BUILDS_QUEUE]),
        ("only", [UNTRUSTED_BUILDS_QUEUE]),
        ("yes", [BUILDS_QUEUE, UNTRUSTED_BUILDS_QUEUE]),
    ],
)
def test_a_worker_reads_the_shared_queues_its_setting_allows(mode: str, shared: list[str]) -> None:
    assert build_queues("b1", mode) == [node_queue("b1"), *shared]


def test_the_setting_is_checked() -> None:
    assert Settings.from_env({"PORTSIDE_DATABASE_URL": "sqlite://"}).build_untrusted == "no"
    assert (
        Settings.from_env(
            {"PORTSIDE_DATABASE_URL": "sqlite://", "PORTSIDE_BUILD_UNTRUSTED": "Only"}
        ).build_untrusted
        == "only"
    )
    with pytest.raises(Exception, match="PORTSIDE_BUILD_UNTRUSTED"):
        Settings.from_env({"PORTSIDE_DATABASE_URL": "sqlite://", "PORTSIDE_BUILD_UNTRUSTED": "1"})


@pytest.mark.slow
def test_a_default_worker_neither_reads_nor_runs_a_fork_build(
    database: Database, settings: Settings, celery_client: Celery, worker_processes: Workers
) -> None:
    default = worker_processes.build("build-plain")
    forks = worker_processes.build(
        "build-forks", {**worker_environment(settings), "PORTSIDE_BUILD_UNTRUSTED": "only"}
    )
    replies = celery_client.control.inspect(
        destination=[default.node, forks.node], timeout=5
    ).active_queues()
    assert replies is not None
    assert {q["name"] for q in replies[default.node]} == {node_queue("build-plain"), BUILDS_QUEUE}
    assert {q["name"] for q in replies[forks.node]} == {
        node_queue("build-forks"),
        UNTRUSTED_BUILDS_QUEUE,
    }

    # A fork's step misrouted to the default worker's own queue: refused before its claim.
    (build_id,) = fork_builds(database, [5])
    celery_client.send_task(
        "portside.clone",
        args=(build_id, 1),
        kwargs={"untrusted": True},
        queue=node_queue("build-plain"),
    )
    wait_until(
        lambda: f"step clone of build {build_id} refused" in default.log(),
        "the worker to refuse the step",
        diagnostics=default.log,
    )
    with database.session_scope() as session:
        build = session.get(Build, build_id)
        assert build is not None
        assert (build.status, build.worker, build.heartbeat_at) == ("queued", None, None)
        assert {step.status for step in build.steps} == {"pending"}
    assert not (settings.data_dir / "workspaces" / f"build-{build_id}-1").exists()
