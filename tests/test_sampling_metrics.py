"""mean@k and the unbiased pass@k estimator of `evaluate --samples K`."""

from __future__ import annotations

import math

import pytest

from mappa_env.evaluation import pass_at_k, sample_summary, samples_table


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 0, 1, 0.0), (4, 4, 4, 1.0), (4, 1, 1, 0.25), (4, 1, 4, 1.0),
    (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
    (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),
    (8, 7, 2, 1.0),  # n - c < k: every draw of 2 holds a correct one
])
def test_pass_at_k_is_the_unbiased_estimator(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_is_not_at_least_k_correct():
    """The published code counted "at least k correct"; with 1 of 4 right, pass@4 is 1, not 0."""
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 1, 2) == pytest.approx(0.5)


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 5, 1), (4, 1, 0)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def episode(task, task_type, correct, *, valid=True, ran=True):
    status = "ok" if ran else "no_code"
    return {"task_id": task, "task_type": task_type, "outcome": {"valid": valid, "correct": correct},
            "agents": {"a": {"steps": [{"status": status}]}}}


def test_sample_summary_per_task_type():
    episodes = [episode("p1", "arith", True), episode("p1", "arith", False, ran=False),
                episode("p2", "arith", False, valid=False), episode("p2", "arith", False),
                episode("q1", "champ", True), episode("q1", "champ", True)]
    summary = sample_summary(episodes)
    arith, champ = summary["arith"], summary["champ"]
    assert (arith["problems"], arith["samples"]) == (2, 2)
    assert arith["mean_at_k"] == 0.25 and arith["pass_at"] == {1: 0.25, 2: 0.5}
    assert arith["unparsed_rate"] == 0.25 and arith["tool_use_rate"] == 0.75
    assert champ["mean_at_k"] == 1.0 and champ["pass_at"][1] == 1.0
    table = samples_table(summary)
    assert "| arith | 2 | 2 | 25.0 | 25.0 | 50.0 | 25.0 | 75.0 |" in table
