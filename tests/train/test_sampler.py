"""Task sampling: stratified by task type, whole passes before repeats, and resumable exactly."""

from __future__ import annotations

from collections import Counter

import pytest

from mappa_train.sampler import TaskSampler

TASKS = [(f"c{i}", "classification") for i in range(30)] + [(f"r{i}", "regression") for i in range(34)]
KIND = dict(TASKS)


def test_each_step_keeps_the_split_balance_and_a_pass_covers_every_task():
    sampler = TaskSampler(TASKS, seed=0)
    steps = [sampler.next(16) for _ in range(8)]  # 128 draws = two passes over 64 tasks
    for step in steps:
        kinds = Counter(KIND[t] for t in step)
        assert set(kinds) == {"classification", "regression"} and 7 <= kinds["classification"] <= 8
    drawn = Counter(t for step in steps for t in step)
    # 30/64 of 16 is 7.5: the half task goes to each type in turn, so both stay in step with their pools
    assert all(count == 2 for count in drawn.values()) and len(drawn) == 64


def test_without_stratification_tasks_come_from_one_pool():
    sampler = TaskSampler(TASKS, stratify=False, seed=0)
    assert sorted(t for _ in range(4) for t in sampler.next(16)) == sorted(t for t, _ in TASKS)


def test_each_pass_over_the_tasks_is_a_new_shuffle():
    sampler = TaskSampler(TASKS, stratify=False, seed=0)
    first, second = sampler.next(64), sampler.next(64)
    assert sorted(first) == sorted(second) and first != second


def test_a_restored_sampler_draws_what_the_original_would_have():
    original = TaskSampler(TASKS, seed=3)
    original.next(16)
    state = original.state_dict()
    restored = TaskSampler(TASKS, seed=3)
    restored.load_state_dict(state)
    assert [restored.next(5) for _ in range(20)] == [original.next(5) for _ in range(20)]
    # 16 draws split 7.5 / 8.5: which type gets the half task rotates with the number of draws so far
    assert [restored.next(16) for _ in range(4)] == [original.next(16) for _ in range(4)]
    with pytest.raises(ValueError, match="same env.split"):
        TaskSampler([("x", "multiclass")]).load_state_dict(state)


def test_the_shuffles_come_from_the_seed():
    def draws(seed):
        sampler = TaskSampler(TASKS, seed=seed)
        return [sampler.next(16) for _ in range(8)]

    assert draws(5) == draws(5) and draws(5) != draws(6)
