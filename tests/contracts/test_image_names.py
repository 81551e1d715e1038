"""The control plane checks uploads against contracts.image_names; the build worker names
its pushes with buildworker.names. Both must name every image the same."""

from __future__ import annotations

import pytest

from buildworker import names
from contracts import image_names

CASES = [
    ("127.0.0.1:5001", "Codertocat/Hello-World", None),
    ("127.0.0.1:5001", "o/hello", "web"),
    ("registry.example.com/Team/sub", "o/.github", "Web"),
    ("https://registry.example.com/", "o/repo_", "api_1"),
    ("reg:5000", "o/foo..bar", "x-y"),
]


@pytest.mark.parametrize(("registry", "repo", "service"), CASES)
def test_the_worker_and_the_contract_name_images_alike(registry, repo, service):
    assert image_names.image_repository(registry, repo, service) == names.image_repository(
        registry, repo, service
    )
    assert image_names.pull_request_repository(
        registry, repo, 7, service
    ) == names.pull_request_repository(registry, repo, 7, service)
