"""The labels by which the agent knows its own containers (nothing else is touched), and
which of them a line forwarded by a Docker logging driver carries."""

from __future__ import annotations

from typing import Any

from contracts import logdrivers
from contracts.agentwire import DesiredEnvironment

ENVIRONMENT = "io.portside.environment"
DEPLOYMENT = "io.portside.deployment"
CONFIG_HASH = "io.portside.config-hash"
MANAGED = "io.portside.managed"
ROLE = "io.portside.role"
KIND = "io.portside.kind"
HOST = "io.portside.host"
# The one label of Portside's own on an image: the build worker marks what it built.
BUILD = "io.portside.build"

ROLE_APP = "app"
ROLE_COMPOSE = "compose"

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"

# Labels a forwarded line carries besides its tag (Docker's ``labels`` log option).
LOG_LABELS = (ENVIRONMENT, KIND, HOST, DEPLOYMENT)


def log_config(
    spec: DesiredEnvironment, compose_service: str | None = None
) -> dict[str, Any] | None:
    """The Docker logging driver of the environment's containers (of ``compose_service``
    in a compose environment), tagged with its labels; None for Docker's default."""
    if spec.log_driver is None:
        return None
    labels = [*LOG_LABELS, *([COMPOSE_SERVICE] if compose_service else [])]
    tag = logdrivers.tag(spec.name, compose_service)
    return {
        "driver": spec.log_driver.driver,
        "options": logdrivers.docker_options(spec.log_driver, tag, labels),
    }
