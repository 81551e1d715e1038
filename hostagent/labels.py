"""The labels by which the agent knows its own containers; nothing else is touched."""

from __future__ import annotations

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
