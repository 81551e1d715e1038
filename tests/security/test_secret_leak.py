"""Secrets planted everywhere a user or the platform keeps one must show up only where
they belong, after a whole production deploy and a whole preview lifecycle.

Planted: a secret runtime variable, a secret build variable (consumed by ``ARG``/``RUN``),
registry credentials, the webhook secret, ``PORTSIDE_SECRET_KEY``, the GitHub App key,
the admin, worker and host tokens, and every installation token the test GitHub issued.
Searched, for each secret in its plain form and in base64 at every alignment (so Celery's
base64 message bodies and HTTP basic/registry auth headers are covered): every process's
log, every Redis command of the run (recorded with MONITOR), every API response the test
received (build logs stored and streamed among them), every row of the database, every
file the run left on disk, what the test GitHub shows on the pull request, and every file
of every layer of the images that were built.
"""

from __future__ import annotations

import base64
import codecs
import copy
import json
import logging
import re
import secrets
import stat
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import requests
from sqlalchemy import select

from controlplane.models import Base, Build, Environment, WebhookDelivery
from controlplane.services import tokens
from controlplane.settings import Secret, Settings
from tests.conftest import TEST_REDIS_DB
from tests.controlplane.test_previews_e2e import NAME as PREVIEW
from tests.controlplane.test_previews_e2e import pull_request
from tests.fixtures.docker import MANIFEST_MEDIA_TYPES, Registry
from tests.fixtures.processes import WorkerProcess
from tests.fixtures.stack import Stack, wait_for
from tests.helpers import json_payload, webhook_headers
from tests.tasks.test_pipeline_e2e import INSTALLATION, REPOSITORY

pytestmark = [pytest.mark.docker, pytest.mark.slow]

INFRASTRUCTURE_LOGS = (
    Path("/var/log/portside-test/dockerd.log"),
    Path("/var/log/portside-test/registry.log"),
)
AGENT_CACHE = "desired-state.json"
RUNTIME_VARIABLE = "RUNTIME_API_KEY"
BUILD_VARIABLE = "NPM_TOKEN"

# Where a secret may be found, and why. Keys are (secret, place); a place is matched as
# a prefix. Anything found elsewhere is a leak.
ALLOWED: dict[tuple[str, str], str] = {
    ("host token", "api POST /v1/hosts "): "the new host's agent token is shown once, by design",
    ("runtime secret", f"file data/agent-web-1/{AGENT_CACHE}"): (
        "the agent's last good desired state, kept so a control-plane outage does not stop "
        "it; written 0600 (asserted below)"
    ),
    ("registry password", f"file data/agent-web-1/{AGENT_CACHE}"): (
        "the same file: the agent needs the pull credentials while the control plane is down"
    ),
}


@dataclass(frozen=True)
class Planted:
    """The secret values of this run, made fresh so nothing else can contain them."""

    webhook_secret: str = field(default_factory=lambda: f"whsec{secrets.token_hex(16)}")
    secret_key: str = field(default_factory=lambda: f"skey{secrets.token_hex(16)}")
    runtime_secret: str = field(default_factory=lambda: f"rt{secrets.token_hex(16)}")
    build_secret: str = field(default_factory=lambda: f"bld{secrets.token_hex(16)}")
    registry_password: str = field(default_factory=lambda: f"regpw{secrets.token_hex(16)}")


@pytest.fixture
def planted() -> Planted:
    return Planted()


@pytest.fixture
def settings(settings: Settings, planted: Planted) -> Settings:
    """The tests' settings with this run's own webhook secret and secret key."""
    return replace(
        settings,
        github_webhook_secret=Secret(planted.webhook_secret),
        secret_key=Secret(planted.secret_key),
    )


# -- where things are recorded --------------------------------------------------------


class RedisRecorder:
    """Every command sent to the test's Redis database while it runs, via MONITOR."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._stop_marker = f"portside-monitor-stop-{secrets.token_hex(8)}"
        self.commands: list[list[str]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)

    def __enter__(self) -> RedisRecorder:
        self._thread.start()
        assert self._ready.wait(10), "MONITOR did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._client.echo(self._stop_marker)
        self._thread.join(30)
        self._client.close()
        assert not self._thread.is_alive(), "the MONITOR thread did not stop"

    def _record(self) -> None:
        with self._client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            while True:
                raw = monitor.connection.read_response()
                line = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
                found = re.match(r"[\d.]+ \[(\d+) [^\]]*\] (.*)", line, re.S)
                if found is None or int(found.group(1)) != TEST_REDIS_DB:
                    continue
                args = [
                    _unescape(arg) for arg in re.findall(r'"((?:[^"\\]|\\.)*)"', found.group(2))
                ]
                if args[-1:] == [self._stop_marker]:
                    return
                self.commands.append(args)


def _unescape(arg: str) -> str:
    """Undo Redis's quoting of a MONITOR argument (\\" \\\\ \\n \\xHH ...)."""
    return codecs.escape_decode(arg.encode("latin-1"))[0].decode("utf-8", errors="replace")


class Api:
    """The test's HTTP client of the control plane, keeping every response body."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = ""
        self.received: list[tuple[str, str]] = []

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        response = requests.request(
            method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs
        )
        self.received.append((f"api {method} {path} {response.status_code}", response.text))
        return response

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
        json_body = response.headers.get("Content-Type", "").startswith("application/json")
        return response.json() if json_body else None

    def follow(self, path: str) -> list[str]:
        """Follow a build log as server-sent events until its end."""
        lines: list[str] = []
        with requests.get(
            f"{self.url}{path}",
            headers={"Accept": "text/event-stream", "Authorization": f"Bearer {self.token}"},
            stream=True,
            timeout=300,
        ) as response:
            for raw in response.iter_lines(decode_unicode=True):
                lines.append(raw)
                if raw.startswith("event: end"):
                    break
        self.received.append((f"api GET {path} (event stream)", "\n".join(lines)))
        return lines

    def webhook(self, event: str, payload: dict[str, Any], secret: str) -> int:
        body = json.dumps(payload).encode()
        response = requests.post(
            f"{self.url}/webhooks/github",
            data=body,
            headers=webhook_headers(event, body, secret=secret),
            timeout=30,
        )
        self.received.append((f"api POST /webhooks/github {response.status_code}", response.text))
        assert response.status_code == 202, response.text
        return int(response.json()["id"])


# -- searching ---------------------------------------------------------------------------


def forms(value: str) -> set[str]:
    """``value`` and the part of its base64 (standard and URL-safe) that does not depend on
    the bytes around it, at each of the three alignments it can have in encoded text."""
    raw = value.encode()
    found = {value}
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + raw).decode()
            found.add(encoded[-(-8 * shift // 6) : 8 * (shift + len(raw)) // 6])
    return found


@dataclass
class Scan:
    """Which secret was found in which place."""

    secrets: dict[str, set[str]]
    places: list[str] = field(default_factory=list)
    found: set[tuple[str, str]] = field(default_factory=set)

    def search(self, place: str, content: str | bytes) -> None:
        haystack = content.decode("latin-1") if isinstance(content, bytes) else content
        self.places.append(place)
        for name, variants in self.secrets.items():
            if any(variant in haystack for variant in variants):
                self.found.add((name, place))

    def leaks(self) -> list[str]:
        return sorted(
            f"{name} in {place}"
            for name, place in self.found
            if not any(name == n and place.startswith(p) for n, p in ALLOWED)
        )


def scan_image(scan: Scan, reference: str, saved: Path) -> int:
    """Search an image as it was pushed: its manifest, its config (the history included)
    and every file of every layer; return how many layer entries were read."""
    entries = 0
    for path in sorted(saved.iterdir()):
        if not path.name.startswith("layer-"):
            scan.search(f"image {reference} {path.name}", path.read_bytes())
            continue
        with tarfile.open(path, "r:*") as layer:
            for entry in layer:
                entries += 1
                inner = layer.extractfile(entry) if entry.isfile() else None
                body = inner.read() if inner is not None else b""
                where = f"image {reference} {path.name}:{entry.name}"
                scan.search(where, f"{entry.name}\n{entry.linkname}\n".encode() + body)
    return entries


def scan_database(scan: Scan, stack: Stack) -> None:
    with stack.database.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(table.select()):
                scan.search(f"database {table.name}", repr(tuple(row)))


def scan_redis(scan: Scan, commands: list[list[str]]) -> None:
    for args in commands:
        key = args[1] if len(args) > 1 else ""
        scan.search(f"redis {args[0].upper()} {key}", "\n".join(args))


def scan_files(scan: Scan, root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        scan.search(f"file {path.relative_to(root).as_posix()}", path.read_bytes())


# -- the run -----------------------------------------------------------------------------


def wait_delivery(stack: Stack, delivery_id: int) -> None:
    def processed() -> bool:
        with stack.database.session_scope() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            return delivery is not None and delivery.status == "processed"

    wait_for(processed, 60, what=f"delivery {delivery_id} to be processed")


def finished(stack: Stack, sha: str) -> Build | None:
    with stack.database.session_scope() as session:
        build = session.scalar(select(Build).where(Build.commit_sha == sha))
        return build if build and build.status in ("succeeded", "failed", "cancelled") else None


def serving(stack: Stack, kind: str, text_served: str) -> Environment | None:
    with stack.database.session_scope() as session:
        environment = session.scalar(
            select(Environment).where(Environment.kind == kind, Environment.status != "inactive")
        )
    if environment is None or not environment.address:
        return None
    try:
        page = requests.get(f"http://{environment.address}/", timeout=2).text
    except requests.RequestException:
        return None
    return environment if text_served in page else None


def containers_of(client: docker.DockerClient, name: str, build: Build) -> list[Any]:
    """The containers of environment ``name`` running ``build``'s image (other test runs
    share the engine and may have an environment of the same name)."""
    image = build.images["app"]
    return [
        container
        for container in client.containers.list(
            all=True, filters={"label": f"io.portside.environment={name}"}
        )
        if container.attrs["Config"]["Image"] == f"{image['repository']}@{image['digest']}"
    ]


def start_agent(stack: Stack, token: str) -> WorkerProcess:
    """``portside agent`` for web-1 with the token the API gave when the host was made."""
    env = {
        "PORTSIDE_URL": stack.settings.url,
        "PORTSIDE_TOKEN": token,
        "PORTSIDE_AGENT_INTERVAL": "2",
        "PORTSIDE_AGENT_PUBLISH_HOST": "127.0.0.1",
        "PORTSIDE_AGENT_STATE_DIR": str(stack.settings.data_dir / "agent-web-1"),
    }
    return stack.workers.start("agent-web-1", ["agent"], None, env)


def save_image(registry: Registry, image: dict[str, Any], directory: Path) -> Path:
    """Download a pushed image from the registry: manifest, config and layers. (Not
    ``docker save``: other test runs share the engine and remove the images their tests
    saw appear, ours among them; the registry keeps ours until we delete it.)"""
    repository = image["repository"].split("/", 1)[1]
    saved = directory / str(len(list(directory.iterdir())))
    saved.mkdir()
    manifest = registry.session.get(
        f"{registry.url}/v2/{repository}/manifests/{image['digest']}",
        headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
        timeout=registry.timeout,
    )
    manifest.raise_for_status()
    (saved / "manifest.json").write_bytes(manifest.content)
    blobs = [("config.json", manifest.json()["config"]["digest"])]
    blobs += [(f"layer-{n}", layer["digest"]) for n, layer in enumerate(manifest.json()["layers"])]
    for name, digest in blobs:
        blob = registry.session.get(
            f"{registry.url}/v2/{repository}/blobs/{digest}", timeout=registry.timeout
        )
        blob.raise_for_status()
        (saved / name).write_bytes(blob.content)
    return saved


@dataclass
class Run:
    """What the run produced that is searched afterwards."""

    host_token: str = ""
    images: dict[str, Path] = field(default_factory=dict)
    built: list[dict[str, Any]] = field(default_factory=list)


def set_up(stack: Stack, api: Api, planted: Planted, base_image: str, run: Run) -> int:
    """Install the App, then make the host, service, variables and registry via the API."""
    state = stack.github.state
    state.add_installation(INSTALLATION, "Codertocat")
    state.add_repository(INSTALLATION, REPOSITORY, default_branch="master")
    state.commit(
        REPOSITORY,
        {
            # The build secret is consumed the way a private package token is; the copy
            # takes the whole checkout (its .git too) into the image.
            "Dockerfile": f"FROM {base_image}\nARG {BUILD_VARIABLE}\n"
            f'RUN test -n "${BUILD_VARIABLE}"\nCOPY . /www\n'
            'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
            "index.html": "hello\n",
        },
        branch="master",
    )
    payload = json_payload("installation__created.payload.json")
    payload["installation"]["id"] = INSTALLATION
    repo = state.repository(REPOSITORY)
    payload["repositories"] = [{"id": repo.id, "name": repo.name, "full_name": REPOSITORY}]
    wait_delivery(stack, api.webhook("installation", payload, planted.webhook_secret))

    run.host_token = api.ok("POST", "/v1/hosts", json={"name": "web-1"})["token"]
    service = api.ok(
        "POST",
        "/v1/services",
        json={
            "name": "hello",
            "repository": REPOSITORY,
            "branch": "master",
            "host": "web-1",
            "port": 8080,
            "domain": "hello.example.com",
        },
    )
    service_id = int(service["id"])
    api.ok(
        "PUT",
        f"/v1/services/{service_id}/variables/{RUNTIME_VARIABLE}",
        json={"value": planted.runtime_secret, "kind": "runtime", "secret": True},
    )
    api.ok(
        "PUT",
        f"/v1/services/{service_id}/variables/{BUILD_VARIABLE}",
        json={"value": planted.build_secret, "kind": "build", "secret": True},
    )
    api.ok(
        "POST",
        "/v1/registries",
        json={
            "address": stack.settings.registry,
            "username": "portside-bot",
            "password": planted.registry_password,
        },
    )
    return service_id


def deploy_production(
    stack: Stack,
    api: Api,
    planted: Planted,
    engines: tuple[docker.DockerClient, Registry],
    run: Run,
    saved: Path,
) -> None:
    client, registry = engines
    sha = stack.github.state.commit(REPOSITORY, {"index.html": "production\n"}, branch="master")
    payload = copy.deepcopy(json_payload("push__with-new-branch.payload.json"))
    payload["installation"]["id"] = INSTALLATION
    repo = stack.github.repository_json(REPOSITORY)
    payload["repository"].update({k: repo[k] for k in ("id", "clone_url", "full_name", "name")})
    payload["repository"]["pushed_at"] = 1_700_000_000
    payload["after"] = sha
    payload["head_commit"]["id"] = sha
    api.webhook("push", payload, planted.webhook_secret)

    def build_id() -> int | None:
        with stack.database.session_scope() as session:
            return session.scalar(select(Build.id).where(Build.commit_sha == sha))

    streamed = api.follow(f"/v1/builds/{wait_for(build_id, 60, what='the build row')}/logs")
    assert any(line.startswith("data: ") for line in streamed)
    done = wait_for(lambda: finished(stack, sha), 300, 0.5, "the production build")
    assert done.status == "succeeded", done.error  # so the build argument was given
    environment = wait_for(lambda: serving(stack, "production", "production"), 180, 0.5)
    (container,) = containers_of(client, environment.name, done)
    assert f"{RUNTIME_VARIABLE}={planted.runtime_secret}" in container.attrs["Config"]["Env"]
    record_images(registry, done, run, saved)


def preview_lifecycle(
    stack: Stack,
    api: Api,
    planted: Planted,
    engines: tuple[docker.DockerClient, Registry],
    run: Run,
    saved: Path,
) -> None:
    client, registry = engines
    state = stack.github.state
    state.commit(REPOSITORY, {"index.html": "preview\n"}, branch="changes")
    state.add_pull_request(REPOSITORY, 2, "changes", base_ref="master")
    opened = pull_request(stack, "opened", "changes")
    api.webhook("pull_request", opened, planted.webhook_secret)
    environment = wait_for(lambda: serving(stack, "preview", "preview"), 300, 0.5, "preview")
    assert environment.name == PREVIEW
    sha = opened["pull_request"]["head"]["sha"]
    built = wait_for(lambda: finished(stack, sha), 60)
    (container,) = containers_of(client, PREVIEW, built)
    assert f"{RUNTIME_VARIABLE}={planted.runtime_secret}" in container.attrs["Config"]["Env"]
    record_images(registry, built, run, saved)

    api.webhook("pull_request", pull_request(stack, "closed", "changes"), planted.webhook_secret)
    pushed = run.built[-1]

    def torn_down() -> bool:
        repo_path = pushed["repository"].split("/", 1)[1]
        gone = registry.manifest_digest(repo_path, pushed["tag"]) is None
        return gone and not containers_of(client, PREVIEW, built)

    wait_for(torn_down, 120, 0.5, "the preview's container and image to go")


def record_images(registry: Registry, build: Build, run: Run, saved: Path) -> None:
    for image in build.images.values():
        reference = f"{image['repository']}@{image['digest']}"
        run.images[reference] = save_image(registry, image, saved)
        run.built.append(image)


def read_everything(api: Api, service_id: int) -> None:
    """Every read endpoint a user has, so their answers are searched too."""
    for path in (
        "/v1/services",
        f"/v1/services/{service_id}",
        f"/v1/services/{service_id}/variables",
        f"/v1/services/{service_id}/deployments",
        "/v1/environments",
        "/v1/registries",
        "/v1/hosts",
        "/v1/tokens",
        "/v1/installations",
        f"/v1/installations/{INSTALLATION}/repositories",
        "/v1/audit",
        "/metrics",
        "/healthz",
        "/readyz",
    ):
        api.ok("GET", path)
    for build in api.ok("GET", "/v1/builds"):
        api.ok("GET", f"/v1/builds/{build['id']}")
        api.ok("GET", f"/v1/builds/{build['id']}/logs")
        api.follow(f"/v1/builds/{build['id']}/logs")
    for delivery in api.ok("GET", "/v1/deliveries"):
        api.ok("GET", f"/v1/deliveries/{delivery['id']}")
    for environment in api.ok("GET", "/v1/environments"):
        api.ok("GET", f"/v1/environments/{environment['id']}")


def secrets_of(stack: Stack, api: Api, planted: Planted, run: Run) -> dict[str, set[str]]:
    """Every secret of the run, by name, in the forms it is searched in."""
    key_lines = stack.settings.github_private_key.reveal().splitlines()
    values = {
        "webhook secret": planted.webhook_secret,
        "PORTSIDE_SECRET_KEY": planted.secret_key,
        "runtime secret": planted.runtime_secret,
        "build secret": planted.build_secret,
        "registry password": planted.registry_password,
        "GitHub App private key": max(key_lines, key=len),
        # A token's third part is its secret (which may hold "_" itself: a cut at the last
        # "_" could leave a few characters found anywhere); searching it finds the token too.
        "admin token": api.token.split("_", 2)[2],
        "worker token": stack.worker_env["PORTSIDE_TOKEN"].split("_", 2)[2],
        "host token": run.host_token.split("_", 2)[2],
    }
    issued = [token.token for token in stack.github.state.tokens]
    assert issued, "the test GitHub issued no installation token"
    values.update({f"installation token {n}": token for n, token in enumerate(issued, 1)})
    return {name: forms(value) for name, value in values.items()}


def test_no_secret_shows_up_where_it_does_not_belong(
    stack: Stack,
    planted: Planted,
    base_image: str,
    docker_client: docker.DockerClient,
    registry: Registry,
    docker_cleanup: None,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO)
    offsets = {path: path.stat().st_size for path in INFRASTRUCTURE_LOGS if path.is_file()}
    api = Api(stack.url)
    with stack.database.session_scope() as session:
        api.token = tokens.create_token(session, "security-admin", "admin")[1]
    run = Run()
    with tempfile.TemporaryDirectory() as saved:
        with RedisRecorder(stack.settings.redis_url) as red:
            service_id = set_up(stack, api, planted, base_image, run)
            stack.start_beat()
            stack.start_buildworker("build-security")
            start_agent(stack, run.host_token)
            try:
                engines = (docker_client, registry)
                deploy_production(stack, api, planted, engines, run, Path(saved))
                preview_lifecycle(stack, api, planted, engines, run, Path(saved))
                read_everything(api, service_id)
            finally:
                stack.workers.stop_all()
                for image in run.built:
                    registry.delete_image(image["repository"].split("/", 1)[1], image["tag"])

        scan = Scan(secrets_of(stack, api, planted, run))
        layer_files = {ref: scan_image(scan, ref, path) for ref, path in run.images.items()}
        assert len(layer_files) == 2 and all(layer_files.values()), layer_files
        for path in run.images.values():  # the RUN step saw the build argument, hidden
            assert f"{BUILD_VARIABLE}=***" in (path / "config.json").read_text()
    scan_redis(scan, red.commands)
    scan_files(scan, tmp_path)
    scan.search("log web (in-process: API, webhooks, werkzeug)", caplog.text)
    for path, offset in offsets.items():
        with path.open("rb") as log_file:
            log_file.seek(offset)
            scan.search(f"log {path.name}", log_file.read())
    for place, body in api.received:
        scan.search(place, body)
    scan_database(scan, stack)
    state = stack.github.state
    written = [*state.comments, *state.statuses, *state.deployments, *state.deployment_statuses]
    for item in [*written, *state.check_runs]:  # a Check Run carries the log's last lines
        scan.search(f"github {type(item).__name__}", repr(item))

    # The searches looked where they claim to: what is allowed was found where allowed.
    assert any(args[0].upper() == "LPUSH" for args in red.commands), "no Celery message seen"
    assert ("runtime secret", f"file data/agent-web-1/{AGENT_CACHE}") in scan.found
    cache = tmp_path / "data" / "agent-web-1" / AGENT_CACHE
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    leaks = scan.leaks()
    assert not leaks, "secrets found where they do not belong:\n" + "\n".join(leaks)
