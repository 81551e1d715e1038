"""Three deployables, three import graphs: what each process start really imports.

Each command runs as a real process under ``python -X importtime`` (set through
``PYTHONPROFILEIMPORTTIME``, so a process it execs reports too) and the modules it loaded
are read from that report. Import contracts (setup.cfg) say who may import whom; these
say what a started process ends up holding, lazy imports included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
CONTROL_PLANE = ("controlplane", "flask", "sqlalchemy")
# What the API commands and --help need none of (issue 20: start-up under 0.3 / 0.5 s).
HEAVY = ("sqlalchemy", "alembic", "flask", "docker", "celery", "kombu", "redis")


def loaded(command: list[str], env: dict[str, str] | None = None) -> set[str]:
    """The modules ``command`` (and whatever it execs) imported, from -X importtime."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PORTSIDE_")}
    environ.update(env or {}, PYTHONPROFILEIMPORTTIME="1")
    completed = subprocess.run(
        command, env=environ, capture_output=True, text=True, timeout=120, check=False
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in completed.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert modules, f"no import report from {command}: {completed.stderr[-2000:]}"
    return modules


def of_packages(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m.split(".", 1)[0] in packages}


def test_the_agent_loads_no_control_plane() -> None:
    # The issue's own command; without PORTSIDE_URL the agent says so and exits 2.
    modules = loaded([sys.executable, "-m", "hostagent", "--help"])

    assert "hostagent.agent" in modules
    assert of_packages(modules, CONTROL_PLANE) == set()


def test_the_build_worker_loads_its_task_module_and_no_control_plane() -> None:
    script = (
        "from buildworker.settings import BuildWorkerSettings\n"
        "from tasks.app import configure\n"
        "import tasks.buildmain\n"
        "configure(BuildWorkerSettings())\n"
        "import tasks.build\n"
    )
    modules = loaded([sys.executable, "-c", script])

    assert {"tasks.build", "buildworker.runner", "celery"} <= modules
    assert of_packages(modules, CONTROL_PLANE) == set()
    assert "tasks.control" not in modules and "tasks.pipeline" not in modules


@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "portside-buildworker"), "--help"],
        [sys.executable, "-m", "buildworker", "--help"],
    ],
    ids=["console script", "python -m"],
)
def test_the_build_worker_entry_points_load_no_control_plane(command: list[str]) -> None:
    modules = loaded(command)

    assert "tasks.buildmain" in modules
    assert of_packages(modules, CONTROL_PLANE) == set()


def test_portside_agent_reaches_the_agent_through_no_control_plane_module() -> None:
    # `portside` execs `python -m hostagent`: the report covers both processes. The
    # launcher's own package (and the tuples its commands offer) is all of controlplane:
    # no settings, errors, database or client.
    modules = loaded([str(BIN / "portside"), "agent"])
    launcher = {m for m in modules if m == "controlplane.cli" or m.startswith("controlplane.cli.")}

    assert "hostagent.agent" in modules
    assert of_packages(modules, ("controlplane",)) - launcher <= {
        "controlplane",
        "controlplane.statuses",
    }
    assert of_packages(modules, ("flask", "sqlalchemy")) == set()


def test_portside_agent_script_runs_the_agent() -> None:
    completed = subprocess.run(
        [str(BIN / "portside-agent")],
        env={k: v for k, v in os.environ.items() if not k.startswith("PORTSIDE_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2, completed
    assert "PORTSIDE_URL" in completed.stderr


def test_portside_help_imports_nothing_heavy() -> None:
    modules = loaded([str(BIN / "portside"), "--help"])

    assert of_packages(modules, (*HEAVY, "requests")) == set()


@pytest.mark.parametrize(
    "command",
    # services list goes to the database only when no API is configured.
    [["builds", "list"], ["services", "list"], ["logs", "1", "-f"]],
    ids=" ".join,
)
def test_an_api_command_imports_its_http_client_and_nothing_heavy(command: list[str]) -> None:
    env = {"PORTSIDE_URL": "http://127.0.0.1:1", "PORTSIDE_TOKEN": "ps_x_y"}
    modules = loaded([str(BIN / "portside"), *command], env)

    assert "controlplane.client" in modules
    assert of_packages(modules, HEAVY) == set()


def test_the_services_load_no_flask() -> None:
    # Services take a Session and raise domain errors: the request-scoped session and the
    # error → HTTP table live in controlplane.api, so a worker importing them needs no web.
    script = (
        "import importlib, pkgutil, controlplane.services as s\n"
        "for m in pkgutil.iter_modules(s.__path__):\n"
        "    importlib.import_module(f'controlplane.services.{m.name}')\n"
    )
    modules = loaded([sys.executable, "-c", script])

    assert {"controlplane.services.builds", "controlplane.db", "sqlalchemy"} <= modules
    assert of_packages(modules, ("flask", "werkzeug", "flask_smorest")) == set()
