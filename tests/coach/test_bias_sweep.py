"""The receipts coach's task-type tilt on the 77-task scripted sweep, and the bias monitor that must see it.

``data/coach_sweep.json`` is written by ``benchmarks/coach_sweep.py``: for every builtin task, the graded
result of the scripted team's submission (its metrics and RPG) and the score the caps before issue 13 gave
it (``old_score``). The current coach re-scores the same results here, live, so a tilt brought back into
the caps fails this test.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from mappa_env.coach import CoachRequest, ReceiptsCoach
from mappa_env.coach.bias import bias_test
from mappa_env.envs.dsbench.roles import ROLES
from mappa_env.records import Outcome, RoleInfo, StepRecord

SWEEP = json.loads((Path(__file__).parent / "data" / "coach_sweep.json").read_text(encoding="utf-8"))
TEAM = tuple(RoleInfo(r.name, r.consumes, r.produces) for r in ROLES)
BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01))


def rescored(row: dict) -> float:
    """The current receipts coach's score of the action that wrote this row's submission."""
    result = Outcome(True, "ok", row["metrics"], row["task_id"], row["task_type"])
    workspace = {f: 1 for r in TEAM for f in r.produces}
    step = StepRecord(agent="analyst", action_index=0, action="", code="...", status="ok",
                      files_changed=("submission.csv",), workspace_after=workspace, ends_stage=False, result=result)
    request = CoachRequest(env_id="dsbench-v0", task_id=row["task_id"], task_type=row["task_type"], step=step,
                           role_instructions="", team=TEAM, task_description="", observation="")
    return ReceiptsCoach().score(request).score


def monitor_rows(scores: list[float]) -> list[dict]:
    return [{"score": s, "task_type": r["task_type"], "role": r["role"], "task_id": r["task_id"], "quality": r["rpg"],
             "graded": True, "success": True} for s, r in zip(scores, SWEEP)]


@pytest.fixture(scope="module")
def new_scores() -> list[float]:
    return [rescored(row) for row in SWEEP]


def test_the_sweep_covers_both_task_types_over_the_quality_range():
    assert len(SWEEP) == 77
    assert {r["task_type"] for r in SWEEP} == {"classification", "regression"}
    assert min(r["rpg"] for r in SWEEP) < 0.25 and max(r["rpg"] for r in SWEEP) > 0.75


def test_the_old_caps_tilt_toward_regression_and_the_monitor_flags_it():
    """The measurement of issue 13 (3): 8.61 on regression against 7.78 on classification, at lower quality."""
    by_type = {t: [r for r in SWEEP if r["task_type"] == t] for t in ("classification", "regression")}
    assert statistics.fmean(r["old_score"] for r in by_type["regression"]) == pytest.approx(8.61, abs=0.01)
    assert statistics.fmean(r["old_score"] for r in by_type["classification"]) == pytest.approx(7.78, abs=0.01)
    estimate = bias_test(monitor_rows([r["old_score"] for r in SWEEP]))
    assert estimate.flagged and estimate.estimate > 1.0, estimate.message


def test_the_rpg_caps_score_equal_quality_equally_on_both_task_types(new_scores):
    for low, high in BANDS:
        inside = [(s, r["task_type"]) for s, r in zip(new_scores, SWEEP) if low <= r["rpg"] < high]
        means = {t: statistics.fmean(s for s, kind in inside if kind == t) for t in ("classification", "regression")
                 if any(kind == t for _, kind in inside)}
        if len(means) == 2:
            assert abs(means["regression"] - means["classification"]) < 0.3, (low, high, means)
    estimate = bias_test(monitor_rows(new_scores))
    assert not estimate.flagged and abs(estimate.estimate) < 0.3, estimate.message


def test_a_planted_one_and_a_half_points_on_regression_is_flagged(new_scores):
    planted = [min(10.0, s + 1.5) if r["task_type"] == "regression" else s for s, r in zip(new_scores, SWEEP)]
    estimate = bias_test(monitor_rows(planted))
    assert estimate.flagged and estimate.estimate == pytest.approx(1.5, abs=0.3), estimate.message
