"""The worker sends the routed service its compose plan found, with the pinned file, as
upload_compose's result."""

from __future__ import annotations

from buildworker.runner import StepRunner
from buildworker.steplog import BuildLog

DIGEST = "sha256:" + "4" * 64
COMPOSE = (
    "x-portside: {route: frontend}\n"
    "services:\n  frontend:\n    build: .\n  api:\n    build: ./api\n    ports: ['8000']\n"
)


def test_the_routed_service_goes_up_with_the_artifacts() -> None:
    images = {
        name: {"repository": f"127.0.0.1:5000/o/shop-{name}", "tag": "abc", "digest": DIGEST}
        for name in ("api", "frontend")
    }
    state = {"images": images, "compose": COMPOSE, "routed_service": "frontend"}

    artifacts = StepRunner._artifacts(state, BuildLog(lambda *_: None, 5))

    assert sorted(artifacts["images"]) == ["api", "frontend"]
    assert artifacts["routed_service"] == "frontend"
    assert artifacts["compose"] is not None and f"shop-frontend@{DIGEST}" in artifacts["compose"]
