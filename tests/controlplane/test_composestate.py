"""The compose part of the desired state: routes of the services a file publishes."""

from __future__ import annotations

from contracts.agentwire import Route
from controlplane.services.composestate import compose_routes

COMPOSE = """
services:
  web:
    build: .
    ports: ["8080"]
  api:
    build: ./api
    ports: ["127.0.0.1:9000:3000/tcp"]
  worker:
    build: ./worker
  db_main:
    image: postgres
    expose: ["5432"]
"""


def test_each_published_compose_service_gets_its_own_subdomain() -> None:
    routes = compose_routes(COMPOSE, "web", "pr-2.hello.example.com")
    # db_main only exposes its port: it stays internal.
    assert routes == (Route("api", 3000, ("api.pr-2.hello.example.com",)),)
    assert compose_routes(COMPOSE, "web", None) == ()
    assert compose_routes("services: [", "web", "x.example.com") == ()
