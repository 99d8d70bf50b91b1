"""Checkpoints: the newest complete one is found again, with the random states that were current when it was saved."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")

from mappa_train import checkpoint  # noqa: E402


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_loading_restores_the_random_states_of_the_moment_of_saving(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    draws()  # somewhere in the middle of the streams
    checkpoint.save(tmp_path, 3, {"x": torch.arange(3)})
    expected = draws()  # what the uninterrupted run draws next
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # a new process starts from other states
    state = checkpoint.load_latest(tmp_path)
    assert draws() == expected
    assert state["step"] == 3 and torch.equal(state["x"], torch.arange(3))


def test_the_newest_complete_checkpoint_is_loaded_and_only_the_last_ones_kept(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, {"value": step}, keep=2)
    (tmp_path / ".tmp-step-4-123").mkdir()  # a save killed before its rename
    (tmp_path / "step-5").mkdir()  # a directory without state.pt is not a checkpoint
    assert checkpoint.checkpoints(tmp_path) == [2, 3]
    assert checkpoint.load_latest(tmp_path)["value"] == 3
    assert checkpoint.load_latest(tmp_path / "nothing-here") is None


def test_the_coach_totals_of_a_resumed_run_go_on_from_the_checkpoints():
    from mappa_env.coach.accounting import CoachStats
    from mappa_train.trainer import coach_counters

    class Coach:
        stats = CoachStats()

    coach = Coach()
    coach.stats.record_call(prompt_tokens=100, completion_tokens=10, cost=0.5, latency_s=1.0)
    coach.stats.count("unscored", "no score line")
    carried = {"calls": 7, "cache_hits": 2, "retries": 1, "unscored": 3, "prompt_tokens": 900, "completion_tokens": 90,
               "cost_usd": 1.25}
    snapshots = [coach.stats.snapshot()]
    totals = coach_counters(snapshots, carried)
    assert totals == {"calls": 8, "cache_hits": 2, "retries": 1, "unscored": 4, "prompt_tokens": 1000,
                      "completion_tokens": 100, "cost_usd": 1.75}
    assert coach_counters(snapshots, {}) == {"calls": 1, "cache_hits": 0, "retries": 0, "unscored": 1, "prompt_tokens": 100,
                                             "completion_tokens": 10, "cost_usd": 0.5}
    assert coach_counters(snapshots, {**carried, "cost_usd": None})["cost_usd"] is None  # unknown stays unknown
    # the Ray workers' coaches add up with the trainer's; one without a price makes the total unknown
    assert coach_counters(snapshots * 3, carried)["calls"] == 10
    assert coach_counters([*snapshots, {**snapshots[0], "cost_usd": None}], carried)["cost_usd"] is None
    assert coach_counters([], carried) == {}  # a coach without statistics (receipts) logs none
