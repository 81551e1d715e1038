"""Pure helpers of the desired state."""

from __future__ import annotations

from controlplane.services.desired import compose_routes

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


def test_each_listening_compose_service_gets_its_own_subdomain() -> None:
    routes = compose_routes(COMPOSE, "web", "pr-2.hello.example.com")
    assert routes == [
        {"service": "api", "port": 3000, "domains": ["api.pr-2.hello.example.com"]},
        {"service": "db_main", "port": 5432, "domains": ["db-main.pr-2.hello.example.com"]},
    ]
    assert compose_routes(COMPOSE, "web", None) == []
    assert compose_routes("services: [", "web", "x.example.com") == []
