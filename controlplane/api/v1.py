"""The REST API's resources under /v1 (flask-smorest), one module each: thin views over
controlplane.services. This lists their blueprints for the app to register."""

from __future__ import annotations

from controlplane.api import (
    audit,
    builds,
    catalog,
    deliveries,
    environments,
    hosts,
    installations,
    registries,
    tokens,
)

BLUEPRINTS = (
    tokens.blueprint,
    hosts.blueprint,
    deliveries.blueprint,
    installations.blueprint,
    catalog.blueprint,
    builds.blueprint,
    registries.blueprint,
    environments.blueprint,
    audit.blueprint,
)
