"""Build logs are capped per line and per build, where the worker writes and where the
control plane reads and keeps them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from buildworker import channel
from contracts import buildredis
from controlplane.db import Database
from controlplane.models import Build
from controlplane.services import catalog, hosts, logs, pushes, servicerules

BUILD = 7


@pytest.fixture
def client_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.delete(buildredis.stream_key(BUILD), buildredis.size_key(BUILD))
    yield client
    client.delete(buildredis.stream_key(BUILD), buildredis.size_key(BUILD))
    client.close()


@pytest.fixture
def build_id(database: Database) -> int:
    """A queued build of a new service (its log key removed by the test)."""
    with database.session_scope() as session:
        hosts.create_host(session, "web-1", "test")
        service = catalog.create_service(
            session,
            servicerules.ServiceSpec(
                name="hello", repository="o/hello", branch="main", host="web-1"
            ),
            "test",
        )
        environment = pushes.production_environment(session, service)
        build = pushes.start_build(session, service, environment, "a" * 40, branch="main")
        assert build is not None
        return build.id


def lines_of(client: redis.Redis, build_id: int = BUILD) -> list[str]:
    return [line for _id, line in logs.read(client, build_id) if line is not None]


def test_a_long_line_is_cut_with_a_marker(client_redis: redis.Redis) -> None:
    channel.append(client_redis, BUILD, ["short", "x" * 100_000, "é" * 5000])
    short, long, accented = lines_of(client_redis)
    assert short == "short"
    assert long.endswith(buildredis.LINE_CUT) and long.startswith("xxxx")
    assert len(long.encode()) <= buildredis.MAX_LINE_BYTES
    assert (
        accented.endswith(buildredis.LINE_CUT)
        and len(accented.encode()) <= buildredis.MAX_LINE_BYTES
    )
    assert buildredis.cap_line("y" * buildredis.MAX_LINE_BYTES) == "y" * buildredis.MAX_LINE_BYTES


def test_a_build_stops_at_its_cap_with_one_truncated_line(client_redis: redis.Redis) -> None:
    line = "z" * 1023  # 1 KiB with its newline
    batch = [line] * 1000
    for _ in range(8):  # 8,000 KiB offered, 5 MiB kept
        channel.append(client_redis, BUILD, batch)
    channel.append(client_redis, BUILD, ["after the cap"])
    kept = lines_of(client_redis)
    assert kept[-1] == buildredis.TRUNCATED
    assert kept.count(buildredis.TRUNCATED) == 1
    assert kept[:-1] == [line] * (buildredis.MAX_BUILD_BYTES // 1024)
    assert "after the cap" not in kept


def test_a_batch_landing_exactly_on_the_cap_is_followed_by_the_marker(
    client_redis: redis.Redis,
) -> None:
    line = "a" * 1023
    channel.append(client_redis, BUILD, [line] * (buildredis.MAX_BUILD_BYTES // 1024))
    assert buildredis.TRUNCATED not in lines_of(client_redis)
    channel.append(client_redis, BUILD, ["one more"])
    channel.append(client_redis, BUILD, ["and another"])
    assert lines_of(client_redis)[-1] == buildredis.TRUNCATED
    assert lines_of(client_redis).count(buildredis.TRUNCATED) == 1


def test_the_control_plane_caps_what_a_worker_wrote_around_the_writer(
    client_redis: redis.Redis, build_id: int, db_session: Session
) -> None:
    """A worker writing the stream by itself: lines are cut when read, the kept log at
    the build's cap."""
    key = buildredis.stream_key(build_id)
    try:
        client_redis.xadd(key, {"line": "w" * 50_000})
        pipe = client_redis.pipeline(transaction=False)
        for _ in range(6 * 1024):
            pipe.xadd(key, {"line": "v" * 1023})
        pipe.execute()
        (_first_id, first), *_ = logs.read(client_redis, build_id)
        assert first is not None and first.endswith(buildredis.LINE_CUT)
        stored = db_session.get(Build, build_id)
        assert stored is not None
        logs.persist(db_session, client_redis, stored)
        kept = (stored.log or "").split("\n")
        assert len((stored.log or "").encode()) <= buildredis.MAX_BUILD_BYTES + len(
            buildredis.TRUNCATED
        )
        assert kept[0].endswith(buildredis.LINE_CUT) and kept[-1] == buildredis.TRUNCATED
        assert kept.count(buildredis.TRUNCATED) == 1
    finally:
        client_redis.delete(key)


def test_a_capped_log_is_kept_as_it_was_written(client_redis: redis.Redis) -> None:
    channel.append(client_redis, BUILD, ["b" * 1023] * (6 * 1024))
    written = lines_of(client_redis)
    assert logs.cap(written) == written


def test_the_api_serves_lines_within_the_cap(
    client: FlaskClient,
    client_redis: redis.Redis,
    read_headers: dict[str, str],
    build_id: int,
) -> None:
    client_redis.xadd(buildredis.stream_key(build_id), {"line": "q" * 20_000})
    try:
        answer = client.get(f"/v1/builds/{build_id}/logs", headers=read_headers)
        assert answer.status_code == 200
        (line,) = answer.json["lines"]
        assert len(line.encode()) <= buildredis.MAX_LINE_BYTES and line.endswith(
            buildredis.LINE_CUT
        )
    finally:
        client_redis.delete(buildredis.stream_key(build_id))
