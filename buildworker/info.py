"""What a build worker can do, as reported to the control plane."""

from __future__ import annotations

import platform
import shutil
import subprocess
from typing import Any

import docker
from docker.errors import DockerException


def describe(node_name: str) -> dict[str, Any]:
    """The node's name, git version and Docker engine (or why it cannot be reached)."""
    info: dict[str, Any] = {"node": node_name, "python": platform.python_version()}
    git = shutil.which("git")
    info["git"] = (
        subprocess.run(
            [git, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if git
        else None
    )
    try:
        client = docker.from_env(timeout=5)
        try:
            info["docker"] = client.version().get("Version")
        finally:
            client.close()
    except DockerException as exc:
        info["docker"] = None
        info["docker_error"] = str(exc).splitlines()[0]
    return info
