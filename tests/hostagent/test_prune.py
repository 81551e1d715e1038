"""The image history's bookkeeping, without Docker (the engine's side: test_prune_docker.py)."""

from __future__ import annotations

from hostagent.prune import ImageHistory


def test_each_live_environment_keeps_its_newest_deployments():
    history = ImageHistory()
    for deployment in range(1, 7):
        history.note("app", deployment, f"sha256:app{deployment}")
    history.note("app", 6, "sha256:worker")  # a compose deployment runs several images
    history.note("gone", 1, "sha256:gone")
    history.note("gone", 1, "sha256:app6")  # shared with a kept deployment

    kept, retired = history.retire(2, alive={"app"})

    assert kept == {"sha256:app4", "sha256:app5", "sha256:app6", "sha256:worker"}
    assert retired == {"sha256:app1", "sha256:app2", "sha256:app3", "sha256:gone", "sha256:app6"}
    assert history.environments == {
        "app": {4: {"sha256:app4"}, 5: {"sha256:app5"}, 6: {"sha256:app6", "sha256:worker"}}
    }


def test_the_history_survives_a_restart_and_a_broken_file_starts_afresh(caplog):
    history = ImageHistory({"app": {3: {"sha256:a"}, 12: {"sha256:b"}}}, {"sha256:old"})
    assert ImageHistory.loads(history.dumps()) == history
    assert ImageHistory.loads("{not json") == ImageHistory()
    assert ImageHistory.loads('{"version": 99, "environments": {}}') == ImageHistory()
    assert "starting a new image history" in caplog.text
