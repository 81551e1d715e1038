"""/healthz says the process is up; /readyz that its database and Redis answer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controlplane.app import create_app
from controlplane.db import Database
from controlplane.settings import Settings

CLOSED_PORT = 1


@pytest.fixture
def app_with(database: Database) -> Iterator[Callable[[Settings], Flask]]:
    """Build apps from other settings; their connections are closed at teardown."""
    made: list[Flask] = []

    def make(settings: Settings) -> Flask:
        app = create_app(settings)
        app.config["TESTING"] = True
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["portside.db"].dispose()
        app.extensions["portside.redis"].close()


def test_healthz_is_200(client: FlaskClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_needs_no_token_and_no_dependency(
    app_with: Callable[[Settings], Flask], settings: Settings
) -> None:
    broken = dataclasses.replace(
        settings,
        redis_url=f"redis://127.0.0.1:{CLOSED_PORT}/0",
        database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{CLOSED_PORT}/x",
    )

    assert app_with(broken).test_client().get("/healthz").status_code == 200


def test_readyz_is_200_when_database_and_redis_answer(client: FlaskClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_is_503_naming_redis_when_it_is_down(
    app_with: Callable[[Settings], Flask], settings: Settings
) -> None:
    app = app_with(dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{CLOSED_PORT}/0"))

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["redis"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("down")


def test_readyz_is_503_naming_the_database_when_it_is_down(
    app_with: Callable[[Settings], Flask], settings: Settings
) -> None:
    unreachable = f"postgresql+psycopg2://postgres:db-password@127.0.0.1:{CLOSED_PORT}/x"
    app = app_with(dataclasses.replace(settings, database_url=unreachable))

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["down"] == ["database"]
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["database"].startswith("down")
    assert "db-password" not in response.get_data(as_text=True)


def test_readyz_names_both_when_both_are_down(
    app_with: Callable[[Settings], Flask], settings: Settings
) -> None:
    app = app_with(
        dataclasses.replace(
            settings,
            redis_url=f"redis://127.0.0.1:{CLOSED_PORT}/0",
            database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{CLOSED_PORT}/x",
        )
    )

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["down"] == ["database", "redis"]
