"""The hand-off between build steps: sealed whole, for one step of one build attempt.

Whoever can write to the broker (every worker holds its password) must not be able to
read a claim's secrets, forge the state that decides what is pushed and deployed, or move
a hand-off to another build, attempt or step.
"""

from __future__ import annotations

import json
import time

import pytest

from buildworker.handoff import HANDOFF_TTL_SECONDS, Handoff, HandoffRefused, Sealer

TOKEN = "pst_worker_secret_token_value"
STATE = {"images": {"app": {"repository": "r/app", "digest": "sha256:" + "a" * 64}}}
CLAIM = {"step": "push", "registry_auth": {"password": "hunter2-registry"}}


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(TOKEN)


def test_a_hand_off_opens_for_its_own_step_with_state_and_claim(sealer: Sealer) -> None:
    sealed = sealer.seal(Handoff(STATE, CLAIM), 7, 2, "push")
    assert sealer.open(sealed, 7, 2, "push") == Handoff(STATE, CLAIM)


def test_nothing_of_it_shows_in_the_message(sealer: Sealer) -> None:
    sealed = sealer.seal(Handoff(STATE, CLAIM), 7, 2, "push")
    for visible in ("hunter2-registry", "r/app", "sha256", "push"):
        assert visible not in sealed


@pytest.mark.parametrize(
    ("build_id", "attempt", "step"),
    [(8, 2, "push"), (7, 3, "push"), (7, 2, "upload_compose")],
)
def test_a_hand_off_moved_to_another_build_attempt_or_step_is_refused(
    sealer: Sealer, build_id: int, attempt: int, step: str
) -> None:
    sealed = sealer.seal(Handoff(STATE, CLAIM), 7, 2, "push")
    with pytest.raises(HandoffRefused):
        sealer.open(sealed, build_id, attempt, step)


def test_another_workers_key_and_a_forged_or_altered_one_are_refused(sealer: Sealer) -> None:
    sealed = sealer.seal(Handoff(STATE, CLAIM), 7, 2, "push")
    with pytest.raises(HandoffRefused):
        Sealer("another-token").open(sealed, 7, 2, "push")
    forged = json.dumps({"build_id": 7, "attempt": 2, "step": "push", "state": {}})
    with pytest.raises(HandoffRefused):
        sealer.open(forged, 7, 2, "push")
    altered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(HandoffRefused):
        sealer.open(altered, 7, 2, "push")


def test_an_old_hand_off_is_a_replay_and_refused(
    sealer: Sealer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed = sealer.seal(Handoff(STATE, None), 7, 2, "push")
    later = time.time() + HANDOFF_TTL_SECONDS + 60
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(HandoffRefused):
        sealer.open(sealed, 7, 2, "push")
