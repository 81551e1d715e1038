"""The routed compose service and the published routes, from the file alone."""

from __future__ import annotations

import pytest

from contracts.compose_routes import (
    RouteChoiceError,
    ServiceRoute,
    container_port,
    published_routes,
    routed_service,
)
from contracts.yamlsafe import load_yaml

# frontend sorts after api: storage order (shortest key first) would pick api.
THREE = """
x-portside: {route: frontend}
services:
  frontend: {image: f, expose: ["3000"]}
  api: {image: a, ports: ["8000"]}
  db: {image: d, expose: ["5432"]}
"""

CHOSEN = {
    "x-portside route": (THREE, "frontend"),
    "x-portside route over a published one": (
        "x-portside: {route: db}\nservices:\n  web: {ports: ['80']}\n  db: {expose: ['5432']}\n",
        "db",
    ),
    "the one published with ports": (
        "services:\n  zz-web: {ports: [{target: 8080}]}\n  api: {expose: ['9000']}\n",
        "zz-web",
    ),
    "the only listening one": (
        "services:\n  worker: {image: w}\n  web-app: {expose: [8080]}\n",
        "web-app",
    ),
    "the only service": ("services:\n  web: {build: .}\n", "web"),
    "x-portside without route": (
        "x-portside: {}\nservices:\n  a: {ports: ['1']}\n  b: {image: b}\n",
        "a",
    ),
    "no services": ("x-other: 1\n", None),
}


@pytest.mark.parametrize("case", CHOSEN, ids=list(CHOSEN))
def test_routed_service_comes_from_the_file(case: str) -> None:
    text, expected = CHOSEN[case]
    assert routed_service(load_yaml(text)) == expected


REFUSED = {
    "two published": (
        "services:\n  web: {ports: ['80']}\n  api: {ports: ['8000']}\n  db: {expose: ['1']}\n",
        r"several services are published with ports: \(web, api\).*x-portside",
    ),
    "two listening": (
        "services:\n  web: {expose: ['80']}\n  api: {expose: ['8000']}\n  worker: {image: w}\n",
        r"cannot tell which service to route between web, api;.*x-portside: \{route:",
    ),
    "several, none listening": (
        "services:\n  web: {image: w}\n  worker: {image: w}\n",
        "between web, worker",
    ),
    "unknown service": (
        "x-portside: {route: nope}\nservices:\n  web: {ports: ['80']}\n  api: {image: a}\n",
        r"x-portside.route: 'nope' is not a service of the file \(services: web, api\)",
    ),
    "route not a string": (
        "x-portside: {route: [web]}\nservices:\n  web: {ports: ['80']}\n",
        r"x-portside.route: \['web'\] is not a service",
    ),
    "x-portside not a mapping": ("x-portside: web\nservices:\n  web: {}\n", "must be a mapping"),
    "unknown x-portside key": (
        "x-portside: {routes: web}\nservices:\n  web: {}\n",
        r"x-portside.routes: not known \(only route\)",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_an_open_choice_is_refused_naming_the_choices(case: str) -> None:
    text, message = REFUSED[case]
    with pytest.raises(RouteChoiceError, match=message):
        routed_service(load_yaml(text))


def test_only_published_services_besides_the_routed_one_get_routes() -> None:
    document = load_yaml(
        THREE + "  admin_ui: {image: x, ports: ['127.0.0.1:9000:9001/tcp', '80']}\n"
    )
    assert published_routes(document, "frontend") == [
        ServiceRoute("api", 8000, "api"),
        ServiceRoute("admin_ui", 9001, "admin-ui"),
    ]
    assert published_routes(document, "api") == [ServiceRoute("admin_ui", 9001, "admin-ui")]


@pytest.mark.parametrize(
    ("entry", "port"),
    [
        (8080, 8080),
        ("80:8080/tcp", 8080),
        ({"target": 53, "protocol": "udp"}, 53),
        ("9000-9005", 9000),
    ],
)
def test_container_port(entry: object, port: int) -> None:
    assert container_port(entry) == port


@pytest.mark.parametrize("entry", [True, 0, 70000, "x", {"published": 80}, None])
def test_not_a_container_port(entry: object) -> None:
    assert container_port(entry) is None
