"""The control worker's relay dispatches a build on the commit that queues it (a
PostgreSQL NOTIFY written with the build), not on its poll."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import redis

from controlplane.db import Database
from controlplane.services import catalog, hosts, pushes, servicerules
from controlplane.settings import Settings
from tasks import relay
from tests.fixtures.processes import wait_until


def test_a_queued_build_is_sent_on_the_commit_that_queues_it(
    database: Database, settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "POLL_INTERVAL", 60.0)  # only a notification can wake it
    sent: list[tuple[int, int]] = []
    dispatcher = relay.Relay(
        Database(settings),
        redis.Redis.from_url(redis_url),
        relay.Senders(
            delivery=lambda delivery_id: None,
            effect=lambda kind, args: None,
            build=lambda build_id, attempt: sent.append((build_id, attempt)),
            shared_queue_length=lambda: 0,
        ),
        dt.timedelta(seconds=90),
    )
    dispatcher.start()
    try:
        time.sleep(1.0)  # listening, and its first look found nothing
        assert sent == []
        with database.session_scope() as session:
            hosts.create_host(session, "web-1", "test")
            service = catalog.create_service(
                session,
                servicerules.ServiceSpec(
                    name="hello", repository="o/hello", branch="main", host="web-1"
                ),
                "test",
            )
            build = pushes.start_build(
                session,
                service,
                pushes.production_environment(session, service),
                "a" * 40,
                branch="main",
            )
            assert build is not None  # queued in this transaction: nothing else wakes it
            build_id = build.id

        wait_until(lambda: sent, "the dispatcher to send the build", timeout=10)
        assert sent == [(build_id, 1)]
    finally:
        dispatcher.stop()
        dispatcher.database.dispose()
