"""The receipts coach on real dsbench episodes of faulty teams: each fault is blamed on the action that made it.

Every case here was misjudged before issue 13 (the scores the old coach gave are in each docstring):
quality reached only the closing message, blame for faults that pass silently downstream fell on the
analyst, and false claims and correct diagnoses scored like anything else.
"""

from __future__ import annotations

import pytest

import mappa_env
from mappa_env.coach import ReceiptsCoach, quality_cap
from mappa_env.evaluation import run_episode
from mappa_env.policies import make_policy
from mappa_env.tasks import load_tasks

CLASSIFICATION = next(t.id for t in load_tasks("builtin", split="heldout") if t.task_type == "classification")
REGRESSION = next(t.id for t in load_tasks("builtin", split="heldout") if t.task_type == "regression")


def episode(team: str, task_id: str = CLASSIFICATION, *, timing: str = "online") -> dict[str, list[dict]]:
    """Each agent's step infos of one episode of ``team``."""
    env = mappa_env.make("dsbench-v0", split="heldout", exec_timeout_s=30, coach=ReceiptsCoach(timing=timing))
    try:
        result = run_episode(env, make_policy(team), seed=0, task_id=task_id)
    finally:
        env.close()
    return {agent: data["steps"] for agent, data in result["agents"].items()}


def score(step: dict) -> float:
    return step["verdict"]["score"]


@pytest.mark.parametrize("task_id", [CLASSIFICATION, REGRESSION])
def test_the_action_that_wrote_the_submission_is_scored_with_its_grade(task_id):
    """Before: the analyst's code action scored 8 whatever the submission was worth; the cap reached only its
    code-less "Done"."""
    analyst = episode("scripted", task_id)["analyst"]
    wrote, closing = analyst
    assert wrote["result"]["valid"] and "submission.csv" in wrote["files_changed"]
    assert wrote["verdict"]["rule"] == "graded"
    assert score(wrote) == min(9.0, quality_cap(wrote["result"]["metrics"])[0])
    assert closing["result"] is None and score(closing) == 8


def test_test_ids_taken_from_train_csv_are_blamed_on_the_data_engineer():
    """Before: data engineer 8/8, analyst 2 (its own crash)."""
    steps = episode("buggy-train-ids")
    engineer, analyst = steps["data_engineer"], steps["analyst"]
    assert [f["kind"] for f in engineer[0]["findings"]] == ["ids_not_in_test"]
    assert score(engineer[0]) <= 2 and score(engineer[1]) <= 1
    assert score(analyst[0]) == 5 and "data_engineer" in analyst[0]["verdict"]["rationale"]


def test_a_feature_that_equals_the_target_is_blamed_on_the_data_engineer():
    """Before: nobody below 6; the analyst's capped score took the blame for the leak's poor predictions."""
    steps = episode("buggy-target-leak")
    engineer, analyst = steps["data_engineer"], steps["analyst"]
    assert "target_leak" in [f["kind"] for f in engineer[0]["findings"]]
    assert score(engineer[0]) <= 2
    wrote = next(s for s in analyst if s["result"] is not None)
    assert score(wrote) >= 5 and "data_engineer" in wrote["verdict"]["rationale"]


def test_the_id_column_used_as_a_feature_is_found():
    """Before: undetectable (8/8)."""
    engineer = episode("buggy-id-feature", REGRESSION)["data_engineer"]
    assert {(f["kind"], f["file"]) for f in engineer[0]["findings"]} == {("id_feature", "X_train.pkl"),
                                                                        ("id_feature", "X_test.pkl")}
    assert score(engineer[0]) <= 2 and "id column" in engineer[0]["verdict"]["rationale"]


def test_an_exception_caught_and_printed_is_not_a_clean_run():
    """Before: the modeler's swallowed training error scored 8 (a clean run that saved model.pkl)."""
    steps = episode("buggy-swallowed-error")
    modeler, analyst = steps["modeler"], steps["analyst"]
    assert modeler[0]["status"] == "ok" and modeler[0]["verdict"]["rule"] == "swallowed_error"
    assert score(modeler[0]) <= 2 and score(modeler[1]) <= 1
    assert analyst[0]["status"] == "error" and score(analyst[0]) == 5
    assert "modeler" in analyst[0]["verdict"]["rationale"]


def test_a_false_claim_about_a_file_scores_below_an_honest_failure():
    """Before: "I saved submission.csv" with nothing saved scored 2, as a real but invalid submission does."""
    lying = episode("buggy-false-claim")["analyst"]
    honest = episode("buggy-wrong-columns")["analyst"]
    assert score(lying[0]) == 0 and lying[0]["verdict"]["rule"] == "false_claim"
    assert score(honest[0]) == 2 and not honest[0]["result"]["valid"]


def test_a_correct_diagnosis_without_code_is_not_scored_as_a_silent_failure():
    """Before: the modeler that refused to train on a leaking X_train.pkl, naming the fault, scored 1."""
    modeler = episode("leak-diagnosed")["modeler"]
    assert modeler[0]["status"] == "no_code" and modeler[0]["verdict"]["rule"] == "diagnosis"
    assert score(modeler[0]) == 5 and "data_engineer" in modeler[0]["verdict"]["rationale"]


def test_in_hindsight_the_action_that_omitted_an_output_is_the_one_marked():
    """Before: the data engineer's action that saved three of its four files scored 6 ("progress"); only its
    code-less "Done" got the 1. Online that is all a coach can know; in hindsight it is not."""
    online = episode("buggy-missing-x-test")["data_engineer"]
    hindsight = episode("buggy-missing-x-test", timing="hindsight")["data_engineer"]
    assert score(online[0]) == 6
    assert score(hindsight[0]) == 1 and hindsight[0]["verdict"]["rule"] == "omitted_output"
    assert "X_test.pkl" in hindsight[0]["verdict"]["rationale"]


def test_the_sound_team_is_not_marked_by_any_check():
    steps = episode("scripted")
    assert all(not s["findings"] for agent in steps.values() for s in agent)
    assert min(score(s) for agent in ("data_engineer", "modeler") for s in steps[agent]) == 8
