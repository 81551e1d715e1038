"""``make demo``: a sample app, from nothing to answering, on the running ``make dev``.

It makes a small repository under the data directory (a Dockerfile serving one page on
port 8080 with busybox's httpd), registers it as a service tracking that local path (a
git-URL service; ``portside dev`` allows local paths), deploys it through the API like
``portside deploy`` would, waits for the build and the agent, and prints the URL.

The image needs no base to pull: it is ``FROM scratch`` with a static busybox copied in
(Debian's ``busybox-static``), or ``FROM $PORTSIDE_DEMO_BASE_IMAGE`` when that is set to
an image the engine has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from controlplane import devmode
from controlplane.client import ApiNotFound, ClientError, PortsideClient
from controlplane.settings import Settings
from controlplane.statuses import BuildStatus

SERVICE = "hello"
PORT = 8080
BUSYBOX = Path("/bin/busybox")
BASE_SETTING = "PORTSIDE_DEMO_BASE_IMAGE"
TIMEOUT = 600.0
# The statuses a build of the demo ends in (it has no gate to wait at).
FINISHED = (BuildStatus.SUCCEEDED, BuildStatus.FAILED, BuildStatus.CANCELLED)
PAGE = """<!doctype html>
<title>Hello from Portside</title>
<h1>Hello from Portside</h1>
<p>Built from {repository} and deployed by make demo. Change this page, commit, and
Portside deploys it within a minute (it polls the repository).</p>
"""


class DemoFailed(Exception):
    """The demo cannot go on; the message says why and what to do."""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Portside demo", "-c", "user.email=demo@portside.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _is_static(binary: Path) -> bool:
    """An ELF file without an interpreter (``PT_INTERP``) runs in an empty image."""
    head = binary.read_bytes()[:65536]
    return head[:4] == b"\x7fELF" and b"/ld-linux" not in head and b"/ld-musl" not in head


def _dockerfile(base: str | None) -> tuple[str, bool]:
    """The sample's Dockerfile, and whether busybox must be copied into the repository."""
    serve = f'["httpd", "-f", "-p", "{PORT}", "-h", "/www"]'
    if base:
        return f"FROM {base}\nCOPY index.html /www/index.html\nCMD {serve}\n", False
    if not (BUSYBOX.is_file() and _is_static(BUSYBOX)):
        raise DemoFailed(
            f"no static busybox at {BUSYBOX} to build the sample from scratch: install "
            f"Debian's busybox-static, or set {BASE_SETTING} to an image the engine has "
            "that provides httpd (e.g. the tests' portside-test/base:latest)"
        )
    return (
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "COPY index.html /www/index.html\n"
        f"EXPOSE {PORT}\n"
        f'ENTRYPOINT ["/bin/busybox"]\nCMD {serve}\n'
    ), True


def make_repository(root: Path, base: str | None) -> Path:
    """The sample app as a git repository at ``root`` (made once, kept after)."""
    if (root / ".git").is_dir():
        return root
    dockerfile, with_busybox = _dockerfile(base)
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "index.html").write_text(PAGE.format(repository=root))
    if with_busybox:
        shutil.copy2(BUSYBOX, root / "busybox")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "A page served by busybox httpd on port 8080")
    return root


def _service(client: PortsideClient, repository: Path) -> dict[str, Any]:
    try:
        service = client.find_service(SERVICE)
    except ApiNotFound:
        print(f"demo: registering service {SERVICE} tracking {repository}")
        return client.create_service(
            {"name": SERVICE, "git_url": str(repository), "port": PORT, "host": devmode.DEV_HOST}
        )
    if service.get("git_url") != str(repository):
        raise DemoFailed(
            f"a service named {SERVICE} exists and does not track {repository}: "
            f"delete it or use another PORTSIDE_DATA_DIR"
        )
    return service


def _wait(what: str, check: Any, deadline: float) -> Any:
    """Poll ``check`` (None: not yet) until it answers or the deadline passes."""
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(1.0)
    raise DemoFailed(f"gave up waiting for {what} after {TIMEOUT:.0f}s")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def run(settings: Settings, environ: Mapping[str, str]) -> tuple[str, str]:
    """Make, register, deploy and wait for the sample; its URL and its dashboard page."""
    connection = devmode.connection(settings.data_dir)
    if connection is None:
        raise DemoFailed(
            f"no `make dev` runs on {settings.data_dir}: start it in another terminal "
            "(`make dev`), wait for its greeting, then run `make demo` again"
        )
    repository = make_repository(
        settings.data_dir / "demo" / SERVICE, (environ.get(BASE_SETTING) or "").strip() or None
    )
    client = PortsideClient(connection.url, connection.token)
    deadline = time.monotonic() + TIMEOUT
    service = _service(client, repository)
    build = client.deploy(service["id"])
    build_page = f"{connection.url}/builds/{build['id']}"
    print(f"demo: build {build['id']} of {build['commit_sha'][:7]}, {build_page}")

    def built() -> dict[str, Any] | None:
        current = client.build(build["id"])
        return current if current["status"] in FINISHED else None

    done = _wait("the build", built, deadline)
    if done["status"] != BuildStatus.SUCCEEDED:
        raise DemoFailed(
            f"build {build['id']} {done['status']}: {done.get('error') or ''} "
            f"(portside logs {build['id']})"
        )
    print("demo: built and pushed; waiting for the agent to run it")

    def served() -> str | None:
        environment = client.find_environment(SERVICE)
        address = environment.get("address")
        if environment.get("status") in ("failed", "refused"):
            reason = environment.get("status_reason") or ""
            raise DemoFailed(f"the deployment {environment['status']}: {reason}")
        if environment.get("status") == "running" and address and _answers(f"http://{address}/"):
            return f"http://{address}/"
        return None

    page = f"{connection.url}/services/{service['id']}"
    return str(_wait("the app to answer", served, deadline)), page


def main() -> int:
    try:
        url, page = run(Settings.from_env(os.environ), os.environ)
    except (DemoFailed, ClientError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    print(f"demo: {SERVICE} answers at {url} (its page on the dashboard: {page})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
