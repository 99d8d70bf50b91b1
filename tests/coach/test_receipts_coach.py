"""The receipts coach on hand-built requests: blame follows files and errors; final scores follow quality."""

from dataclasses import replace

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


def result_request(rpg, *, task_type="classification", valid=True, reason="ok", **metrics):
    """The analyst's action that wrote submission.csv, graded right after it (``StepRecord.result``)."""
    result = Outcome(valid, reason, {"rpg": rpg, **metrics} if valid else {}, "t", task_type)
    after = {**INPUTS, **DE_OUT, "model.pkl": 1, "submission.csv": 1}
    base = request(after=after, changed=["submission.csv"], task_type=task_type)
    return replace(base, step=replace(base.step, result=result))


@pytest.mark.parametrize("task_type", ["classification", "regression"])
@pytest.mark.parametrize("rpg, cap", [(0.9, 9), (0.75, 9), (0.6, 8), (0.5, 8), (0.3, 6), (0.25, 6), (0.1, 4),
                                      (0.0, 3), (-0.4, 3)])
def test_the_action_that_wrote_the_result_is_capped_by_its_rpg_whatever_the_task_type(task_type, rpg, cap):
    """RPG >= .75 -> 9, >= .5 -> 8, >= .25 -> 6, > 0 -> 4, else 3 (lower bounds included), on both task types."""
    verdict = coach.score(result_request(rpg, task_type=task_type))
    assert verdict.score == cap and verdict.details["rule"] == "graded"


def test_a_majority_class_predictor_gets_no_more_than_3_though_its_accuracy_is_high():
    """Accuracy 0.675 with F1 0 on an imbalanced F1 task: the task's own metric (F1) has RPG 0."""
    verdict = coach.score(result_request(0.0, accuracy=0.675, f1=0.0, primary=0.0, baseline=0.0))
    assert verdict.score == 3 and "constant prediction" in verdict.rationale


def test_quality_reaches_the_action_that_wrote_the_submission_not_the_closing_message():
    wrote = coach.score(result_request(0.1))
    outcome = {"valid": True, "reason": "ok", "metrics": {"rpg": 0.1}}
    after = {**INPUTS, **DE_OUT, "model.pkl": 1, "submission.csv": 1}
    closing = coach.score(request(status="no_code", after=after, ends_stage=True, outcome=outcome))
    assert wrote.score == 4 and "RPG 0.10" in wrote.rationale
    assert closing.score == 8 and closing.details["rule"] == "outputs_done"


def test_an_invalid_result_is_scored_on_the_action_that_wrote_it():
    verdict = coach.score(result_request(None, valid=False, reason="wrong columns"))
    assert verdict.score == 2 and "wrong columns" in verdict.rationale


def test_ending_the_episode_without_a_valid_submission():
    outcome = {"valid": False, "reason": "submission.csv not found in the workspace", "metrics": {}}
    after = {**INPUTS, **DE_OUT, "model.pkl": 1}
    verdict = coach.score(request(status="no_code", after=after, ends_stage=True, outcome=outcome))
    assert verdict.score == 1 and "not found" in verdict.rationale


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


def codeless(role, text, after):
    base = request(role, status="no_code", after=after, ends_stage=True)
    return replace(base, step=replace(base.step, action=text))


@pytest.mark.parametrize("text, claimed", [
    ("Done. I saved model.pkl for the analyst.", ["model.pkl"]),
    ("I wrote `model.pkl` and saved it.", ["model.pkl"]),
    ("I have not saved model.pkl yet.", []),  # negated: no claim
    ("model.pkl was never saved: training failed.", []),
    ("Done. I saved X_train.pkl.", []),  # true: it is in the workspace
    ("```python\n# saved model.pkl\n```\nDone.", []),  # code is not prose
    ("<think>I saved model.pkl?</think>Nothing to add.", []),  # nor is thinking
])
def test_false_claims_are_files_said_to_be_saved_that_are_not_there(text, claimed):
    from mappa_env.coach.receipts import false_claims

    after = {**INPUTS, **DE_OUT}
    assert false_claims(codeless("modeler", text, after)) == claimed


def test_a_diagnosis_counts_only_when_the_file_it_blames_is_really_missing():
    missing = {**INPUTS, "X_train.pkl": 1, "y_train.pkl": 1, "test_ids.pkl": 1}
    text = "I did not train: X_test.pkl is missing, the data engineer never saved it."
    assert coach.score(codeless("modeler", text, missing)).details["rule"] == "diagnosis"
    wrong = coach.score(codeless("modeler", text, {**INPUTS, **DE_OUT}))  # X_test.pkl is there: not a diagnosis
    assert wrong.score == 1 and wrong.details["rule"] == "missing_outputs"


def executor_request(status, *, stdout="", earlier=()):
    """A mathchat code executor's action (online: no reference known yet) after a solver who said 12."""
    solver = StepRecord(agent="problem_solver", action_index=0, action="7 + 5 = \\boxed{12}")
    step = StepRecord(agent="code_executor", action_index=len(earlier), action="...", status=status, stdout=stdout,
                      code="" if status == "no_code" else "print(7 + 5)", error="E: boom" if status == "error" else "")
    return CoachRequest(env_id="mathchat-v0", task_id="arith/x", task_type="arith", step=step, role_instructions="",
                        team=(), task_description="7 + 5 =", observation="", upstream=(solver,), earlier=earlier)


def test_a_code_executor_that_never_runs_code_scores_below_one_whose_code_crashed():
    # with both at 2 (r3 of the CPU math recipe, docs/training.md) nothing rewarded attempting code, and the
    # sampled executor's code share wandered from 0.73 down to 0.20 (step 11); attempting its job must pay
    from mappa_env.coach.math_receipts import judge

    crashed = executor_request("error")
    scored = {name: judge(req)[::2] for name, req in {
        "agrees": executor_request("ok", stdout="12\n"), "disagrees": executor_request("ok", stdout="13\n"),
        "no_result": executor_request("ok"), "crashed": crashed,
        "closing after a crash, no value": executor_request("no_code", earlier=(crashed.step,)),
        "never ran code": executor_request("no_code")}.items()}
    assert scored == {"agrees": (8.0, "agrees"), "disagrees": (6.0, "disagrees"), "no_result": (3.0, "no_result"),
                      "crashed": (2.0, "own_error"), "closing after a crash, no value": (5.0, "no_statement"),
                      "never ran code": (1.0, "no_check")}
