"""The receipts coach on hand-built requests: blame follows files and errors; final scores follow quality."""

import pytest

from mappa_env.coach import CoachRequest, ReceiptsCoach, RoleInfo, Verdict, make_coach
from mappa_env.envs.dsbench.roles import ROLES
from mappa_env.records import Outcome, StepRecord

TEAM = tuple(RoleInfo(r.name, r.consumes, r.produces) for r in ROLES)
INPUTS = {"train.csv": 100, "test.csv": 50, "sample_submission.csv": 20}
DE_OUT = {"X_train.pkl": 1, "y_train.pkl": 1, "X_test.pkl": 1, "test_ids.pkl": 1}


def request(role="analyst", *, status="ok", error="", after=None, ends_stage=False, outcome=None,
            changed=(), task_type="classification"):
    step = StepRecord(
        agent=role, action_index=0, action="", code="x" if status != "no_code" else "", status=status, error=error,
        workspace_after=after if after is not None else dict(INPUTS), files_changed=tuple(changed), ends_stage=ends_stage,
    )
    return CoachRequest(
        env_id="dsbench-v0", task_id="t", task_type=task_type, step=step, role_instructions="", team=TEAM,
        task_description="", observation="", outcome=None if outcome is None else Outcome.from_info(outcome),
    )


coach = ReceiptsCoach()


def test_missing_upstream_file_blames_its_owner_not_the_reader():
    err = "FileNotFoundError: [Errno 2] No such file or directory: 'X_test.pkl'"
    after = {**INPUTS, "X_train.pkl": 1, "y_train.pkl": 1, "test_ids.pkl": 1, "model.pkl": 1}
    verdict = coach.score(request(status="error", error=err, after=after))
    assert verdict.score == 5 and "data_engineer" in verdict.rationale


def test_missing_file_that_exists_or_is_own_output_is_own_fault():
    err = "FileNotFoundError: [Errno 2] No such file or directory: 'submission.csv'"
    assert coach.score(request(status="error", error=err)).score == 2
    err = "FileNotFoundError: [Errno 2] No such file or directory: 'data/train2.csv'"
    assert coach.score(request(status="error", error=err)).score == 2


def test_stage_end_without_required_outputs_scores_lowest():
    after = {**INPUTS, "X_train.pkl": 1, "y_train.pkl": 1, "test_ids.pkl": 1}
    verdict = coach.score(request("data_engineer", status="no_code", after=after, ends_stage=True))
    assert verdict.score == 1 and "X_test.pkl" in verdict.rationale


def test_stage_end_blocked_by_upstream_is_not_blamed():
    verdict = coach.score(request("modeler", status="no_code", after=dict(INPUTS), ends_stage=True))
    assert verdict.score == 5 and "data_engineer" in verdict.rationale


def test_progress_and_completion():
    partial = {**INPUTS, "X_train.pkl": 1}
    assert coach.score(request("data_engineer", after=partial, changed=["X_train.pkl"])).score == 6
    done = {**INPUTS, **DE_OUT}
    assert coach.score(request("data_engineer", after=done, changed=list(DE_OUT))).score == 8


@pytest.mark.parametrize("status, expected", [("timeout", 1), ("killed", 1)])
def test_timeouts_and_kills(status, expected):
    assert coach.score(request(status=status, error="limit")).score == expected


@pytest.mark.parametrize(
    "metrics, cap",
    [({"accuracy": 0.9, "f1": 0.88}, 9), ({"accuracy": 0.8, "f1": 0.7}, 8), ({"accuracy": 0.7}, 6),
     ({"accuracy": 0.6}, 4), ({"accuracy": 0.4}, 3), ({"accuracy": 0.92, "f1": 0.1}, 3)],
)
def test_final_agent_capped_by_classification_quality(metrics, cap):
    outcome = {"valid": True, "reason": "", "metrics": metrics}
    after = {**INPUTS, **DE_OUT, "model.pkl": 1, "submission.csv": 1}
    assert coach.score(request(after=after, ends_stage=True, outcome=outcome)).score == cap


@pytest.mark.parametrize("pct, cap", [(5, 9), (20, 8), (40, 6), (80, 4)])
def test_final_agent_capped_by_regression_quality(pct, cap):
    outcome = {"valid": True, "reason": "", "metrics": {"rmse_pct_range": pct}}
    verdict = coach.score(request(ends_stage=True, outcome=outcome, task_type="regression"))
    assert verdict.score == cap


@pytest.mark.parametrize(
    "metrics, cap",
    [({"accuracy": 0.85}, 9), ({"accuracy": 0.75}, 8), ({"accuracy": 0.65}, 6), ({"accuracy": 0.55}, 4),
     ({"roc_auc": 0.85, "accuracy": 0.5}, 9),  # ROC-AUC, where there is one, is the quality
     ({"accuracy": 0.7, "f1": 0.29}, 3), ({"accuracy": 0.7, "f1": 0.3}, 6)],
)
def test_a_classification_result_exactly_on_a_threshold_gets_the_higher_cap(metrics, cap):
    """MAPPA's caps: >= 0.85 -> 9, 0.75-0.85 -> 8, 0.65-0.75 -> 6, 0.55-0.65 -> 4 (lower bounds included)."""
    outcome = {"valid": True, "reason": "", "metrics": metrics}
    after = {**INPUTS, **DE_OUT, "model.pkl": 1, "submission.csv": 1}
    assert coach.score(request(after=after, ends_stage=True, outcome=outcome)).score == cap


@pytest.mark.parametrize("pct, cap", [(10, 8), (25, 6), (50, 4), (9.99, 9)])
def test_a_regression_result_exactly_on_a_threshold_gets_the_lower_cap(pct, cap):
    """MAPPA's caps: RMSE < 10 % of the range -> 9, 10-25 % -> 8, 25-50 % -> 6, above -> 4."""
    outcome = {"valid": True, "reason": "", "metrics": {"rmse_pct_range": pct}}
    assert coach.score(request(ends_stage=True, outcome=outcome, task_type="regression")).score == cap


def test_invalid_submission_by_the_analyst_itself():
    outcome = {"valid": False, "reason": "wrong columns", "metrics": {}}
    after = {**INPUTS, **DE_OUT, "model.pkl": 1, "submission.csv": 1}
    verdict = coach.score(request(status="no_code", after=after, ends_stage=True, outcome=outcome))
    assert verdict.score == 2 and "wrong columns" in verdict.rationale


def test_make_coach_by_name_and_instance():
    assert isinstance(make_coach("receipts"), ReceiptsCoach)
    assert isinstance(make_coach("auto"), ReceiptsCoach)
    mine = ReceiptsCoach()
    assert make_coach(mine) is mine
    with pytest.raises(ValueError, match="unknown coach"):
        make_coach("hf:")
    with pytest.raises(ValueError, match="unknown coach"):
        make_coach("oracle")


def test_verdict_rejects_out_of_range_scores_and_keeps_none():
    with pytest.raises(ValueError, match="0-10"):
        Verdict(11, "", "x")
    assert Verdict(None, "API down", "x").to_dict() == {"score": None, "rationale": "API down", "coach": "x"}
