"""The worker uploads the routed service its compose plan found, with the pinned file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from buildworker.runner import BuildLog, StepRunner, WorkerConfig

DIGEST = "sha256:" + "4" * 64
COMPOSE = (
    "x-portside: {route: frontend}\n"
    "services:\n  frontend:\n    build: .\n  api:\n    build: ./api\n    ports: ['8000']\n"
)


class RecordingApi:
    """Stands in for the control plane: notes each artifacts upload."""

    def __init__(self) -> None:
        self.uploads: list[tuple[Any, ...]] = []

    def upload_artifacts(
        self,
        build_id: int,
        attempt: int,
        images: dict[str, Any],
        compose: str | None,
        routed_service: str | None = None,
    ) -> None:
        self.uploads.append((build_id, attempt, sorted(images), compose, routed_service))


def test_the_routed_service_goes_up_with_the_artifacts(tmp_path: Path) -> None:
    api = RecordingApi()
    config = WorkerConfig("n1", "127.0.0.1:5000", tmp_path)
    runner = StepRunner(api, None, config, lambda *_: None)  # type: ignore[arg-type]
    spec = {"build_id": 5, "attempt": 2}
    runner.workspace(5, 2).mkdir(parents=True)
    images = {
        name: {"repository": f"127.0.0.1:5000/o/shop-{name}", "tag": "abc", "digest": DIGEST}
        for name in ("api", "frontend")
    }
    state = {"images": images, "compose": COMPOSE, "routed_service": "frontend"}
    (runner.workspace(5, 2) / "state.json").write_text(json.dumps(state))

    runner._upload_compose(spec, BuildLog(lambda *_: None, 5))

    ((build_id, attempt, names, pinned, routed),) = api.uploads
    assert (build_id, attempt, names, routed) == (5, 2, ["api", "frontend"], "frontend")
    assert pinned is not None and f"shop-frontend@{DIGEST}" in pinned
