"""A build step's message must bring its hand-off: only the first step claims on its own."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from buildworker.handoff import HandoffRefused
from contracts.steps import FIRST_STEP, Step
from tasks.build import _received


def task() -> Any:
    return SimpleNamespace(request=SimpleNamespace(retries=0, delivery_info={}))


def test_the_first_step_needs_no_hand_off() -> None:
    assert _received(task(), FIRST_STEP, 1, 1, None) is None


@pytest.mark.parametrize("step", [s for s in Step if s is not FIRST_STEP])
def test_a_later_step_without_a_hand_off_is_refused(step: Step) -> None:
    """A message injected into the broker with no hand-off (or state in clear) must not
    make the worker claim the step and work on state it never found itself."""
    with pytest.raises(HandoffRefused):
        _received(task(), step, 1, 1, None)
