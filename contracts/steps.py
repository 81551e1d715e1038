"""The build pipeline's steps, in order: the one list the control plane (the build's
step rows), the senders (the Celery chain), the build worker and the CLI all read.

Each step is a Celery task named ``portside.<step>`` (visible as such in Flower) and a
row of the build. A worker ends a step and claims the next in one HTTP exchange
(``POST /v1/builds/{id}/steps/{step}/finish`` with its ``worker``).
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    CLONE = "clone"
    BUILD = "build"
    PUSH = "push"
    UPLOAD_COMPOSE = "upload_compose"
    RECORD_DEPLOYMENT = "record_deployment"

    @property
    def task_name(self) -> str:
        """The Celery task that runs this step."""
        return f"portside.{self.value}"

    @property
    def verb(self) -> str:
        """What the build is doing during this step, as a person reads it ("pushing")."""
        return _VERBS[self]

    @property
    def next(self) -> Step | None:
        """The step after this one; None for the last."""
        position = STEPS.index(self)
        return STEPS[position + 1] if position + 1 < len(STEPS) else None


STEPS: tuple[Step, ...] = tuple(Step)
FIRST_STEP = STEPS[0]
LAST_STEP = STEPS[-1]
_VERBS = {
    Step.CLONE: "cloning",
    Step.BUILD: "building",
    Step.PUSH: "pushing",
    Step.UPLOAD_COMPOSE: "uploading the compose file",
    Step.RECORD_DEPLOYMENT: "deploying",
}
