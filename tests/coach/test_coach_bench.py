"""The credit-assignment benchmark (``python -m mappa_env coach-bench``, :mod:`mappa_env.coach.bench`).

Each suite is played once per module. The tests check that every planted fault really is made by the
culprit the suite names, at the action it names (the recorded episode shows it, and nothing before that
action differs from the fault-free team's), that the figures follow the scores on a known case (ties
included), and what the receipts coach gets on both suites: its misses are asserted as misses.
"""

from __future__ import annotations

import json

import pytest

from mappa_env.__main__ import main
from mappa_env.coach import ReceiptsCoach, SyncCoach, Verdict
from mappa_env.coach.bench import (SUITES, THRESHOLD, episode_figures, load_suite, play_suite, report_summary,
                                   score_suite, suite_of)
from mappa_env.evaluation import write_results
from mappa_env.policies import POLICY_NAMES
from mappa_env.records import RECORDS_FORMAT_VERSION


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """env id → (path of the recorded suite, its episodes as loaded back)."""
    out = {}
    for env_id in SUITES:
        path = write_results(play_suite(env_id), tmp_path_factory.mktemp("bench") / f"{env_id}.json")
        out[env_id] = (path, load_suite(path, env_id))
    return out


def cases_of(episodes, name):
    return [e for e in episodes if e["case"] == name]


def record(episode, agent, index):
    return next(r for r in episode["records"] if (r["agent"], r["action_index"]) == (agent, index))


FAULT_CASES = [(env_id, c.name) for env_id, suite in SUITES.items() for c in suite.cases if not c.is_control]


# ------------------------------------------------------------------------------------------ the suites
def test_each_suite_plants_at_least_eight_faults_with_known_culprits_and_has_controls():
    for env_id, suite in SUITES.items():
        faults = [c for c in suite.cases if not c.is_control]
        assert len(faults) >= 8 and any(c.is_control for c in suite.cases), env_id
        assert len({c.name for c in suite.cases}) == len(suite.cases)
        assert all(c.policy in POLICY_NAMES for c in suite.cases)
        assert all(c.culprit and c.action_index is not None and c.what for c in faults)
        assert len(suite.tasks) >= 2
    with pytest.raises(ValueError, match="dsbench-v0, mathchat-v0"):
        suite_of("nope-v0")


@pytest.mark.slow
@pytest.mark.parametrize("env_id, name", FAULT_CASES)
def test_nothing_before_the_culprit_action_differs_from_the_fault_free_team(recorded, env_id, name):
    """The fault is made at the culprit action: every record before it (pipeline order) is the control's,
    and the culprit's own action is not."""
    episodes = recorded[env_id][1]
    case = suite_of(env_id).case(name)
    for episode in cases_of(episodes, name):
        assert (episode["culprit"], episode["culprit_action_index"]) == (case.culprit, case.action_index)
        control = next(e for e in cases_of(episodes, "control") if e["task_id"] == episode["task_id"])
        keys = [(r["agent"], r["action_index"]) for r in episode["records"]]
        here = keys.index((case.culprit, case.action_index))
        for r in episode["records"][:here]:
            assert r["action"] == record(control, r["agent"], r["action_index"])["action"], (r["agent"], r["action_index"])
        assert episode["records"][here]["action"] != record(control, case.culprit, case.action_index)["action"]


def _reference(episode):
    return episode["outcome"]["reference"]


def _printed(r):
    lines = [line.strip() for line in r["stdout"].splitlines() if line.strip()]
    return lines[-1] if lines else None


def _same(reference, text):
    from mappa_env.envs.mathchat.answers import check_answer

    return check_answer(reference, f"\\boxed{{{text}}}").correct


def _boxed(text):
    from mappa_env.envs.mathchat.answers import last_boxed

    return last_boxed(text)


def _kinds(r):
    return {f["kind"] for f in r["findings"]}


def _crashed_on(episode, filename):
    analyst = record(episode, "analyst", 0)
    return analyst["status"] == "error" and "FileNotFoundError" in analyst["error"] + analyst["stderr"] and (
        filename in analyst["error"] + analyst["stderr"])


#: What the recorded culprit action shows, per fault: ``check(culprit_record, episode) -> bool``.
EVIDENCE = {
    ("dsbench-v0", "missing-x-test"): lambda r, e: (
        r["status"] == "ok" and "X_test.pkl" not in r["workspace_after"]
        and {"X_train.pkl", "y_train.pkl", "test_ids.pkl"} <= set(r["files_changed"]) and _crashed_on(e, "X_test.pkl")),
    ("dsbench-v0", "missing-model"): lambda r, e: (
        r["status"] == "ok" and "model.pkl" not in r["workspace_after"] and _crashed_on(e, "model.pkl")),
    ("dsbench-v0", "analyst-keyerror"): lambda r, e: r["status"] == "error" and "KeyError" in r["error"] + r["stderr"],
    ("dsbench-v0", "wrong-columns"): lambda r, e: (
        r["status"] == "ok" and "submission.csv" in r["files_changed"] and not r["result"]["valid"]),
    ("dsbench-v0", "train-ids"): lambda r, e: "ids_not_in_test" in _kinds(r) and "test_ids.pkl" in r["files_changed"],
    ("dsbench-v0", "target-leak"): lambda r, e: "target_leak" in _kinds(r),
    ("dsbench-v0", "id-feature"): lambda r, e: _kinds(r) == {"id_feature"},
    ("dsbench-v0", "swallowed-error"): lambda r, e: (
        r["status"] == "ok" and "except" in r["code"] and "training failed" in r["stdout"]),
    ("dsbench-v0", "false-claim"): lambda r, e: (
        r["status"] == "no_code" and "saved submission.csv" in r["action"] and "submission.csv" not in r["workspace_after"]),
    ("dsbench-v0", "leak-diagnosed"): lambda r, e: (
        "target_leak" in _kinds(r) and record(e, "modeler", 0)["status"] == "no_code"
        and "leaks the target" in record(e, "modeler", 0)["action"]),
    ("mathchat-v0", "executor-crash"): lambda r, e: (
        r["status"] == "error" and "ZeroDivisionError" in r["error"] + r["stderr"] and e["outcome"]["correct"]),
    ("mathchat-v0", "verifier-mismatch"): lambda r, e: (
        _same(_reference(e), _printed(record(e, "code_executor", 0)))
        and e["outcome"]["valid"] and not e["outcome"]["correct"]),
    ("mathchat-v0", "solver-wrong"): lambda r, e: (
        not _same(_reference(e), _boxed(r["action"])) and _same(_reference(e), _printed(record(e, "code_executor", 0)))),
    ("mathchat-v0", "executor-wrong"): lambda r, e: (
        r["status"] == "ok" and not _same(_reference(e), _printed(r))
        and _same(_reference(e), _boxed(record(e, "problem_solver", 0)["action"]))
        and _same(_printed(r), e["outcome"]["answer"])),
    ("mathchat-v0", "executor-false-claim"): lambda r, e: (
        r["status"] == "no_code" and _same(_reference(e), _printed(record(e, "code_executor", 0)))
        and _printed(record(e, "code_executor", 0)) not in r["action"] and e["outcome"]["correct"]),
    ("mathchat-v0", "executor-no-code"): lambda r, e: (
        r["status"] == "no_code" and not r["code"]
        and [x["agent"] for x in e["records"]].count("code_executor") == 1),
    ("mathchat-v0", "solver-no-answer"): lambda r, e: (
        _boxed(r["action"]) is None and not any(ch.isdigit() for ch in r["action"])),
    ("mathchat-v0", "verifier-no-box"): lambda r, e: (
        _boxed(r["action"]) is None and not e["outcome"]["valid"]),
}


def test_every_fault_has_its_evidence_check():
    assert set(EVIDENCE) == set(FAULT_CASES)


@pytest.mark.slow
@pytest.mark.parametrize("env_id, name", FAULT_CASES)
def test_the_recorded_episode_shows_the_fault_at_the_culprit_action(recorded, env_id, name):
    case = suite_of(env_id).case(name)
    episodes = cases_of(recorded[env_id][1], name)
    assert len(episodes) == len(suite_of(env_id).tasks)
    for episode in episodes:
        assert EVIDENCE[(env_id, name)](record(episode, case.culprit, case.action_index), episode), episode["task_id"]


@pytest.mark.slow
def test_the_controls_are_fault_free(recorded):
    for env_id, (_, episodes) in recorded.items():
        for control in cases_of(episodes, "control"):
            assert all(not r["findings"] and r["status"] in ("ok", "no_code") for r in control["records"])
            assert control["outcome"]["valid"] and control["outcome"].get("correct", True)


# ----------------------------------------------------------------------------------------- the metrics
def test_a_tie_for_the_lowest_is_a_miss_and_unscored_actions_are_not_low():
    scores = {("a", 0): 3.0, ("a", 1): 5.0, ("b", 0): 3.0, ("c", 0): None}
    blamed_a = episode_figures(scores, ["a", "b", "c"], culprit="a", action_index=0)
    # a's mean 4 is above b's 3; a's action 3 ties b's 3; downstream b has a 3, c is unscored (never low)
    assert (blamed_a["agent_hit"], blamed_a["step_hit"]) == (False, False)
    assert (blamed_a["downstream"], blamed_a["innocent"], blamed_a["unscored"]) == (["b", "c"], ["c"], 1)
    assert blamed_a["innocence"] == 0.5
    blamed_b = episode_figures(scores, ["a", "b", "c"], culprit="b", action_index=0)
    assert (blamed_b["agent_hit"], blamed_b["step_hit"], blamed_b["innocent"]) == (True, False, ["c"])
    assert episode_figures({("a", 0): 2.0, ("b", 0): 2.5}, ["a", "b"], culprit="a", action_index=0)["step_hit"]
    assert not episode_figures({("a", 0): None, ("b", 0): 5.0}, ["a", "b"], culprit="a", action_index=0)["step_hit"]
    alone = episode_figures({("a", 0): 1.0, ("b", 0): None}, ["a", "b"], culprit="a", action_index=0)
    assert (alone["agent_hit"], alone["step_hit"], alone["innocence"]) == (False, False, 1.0)
    assert episode_figures(scores, ["a", "b", "c"], culprit="c", action_index=0)["innocence"] is None
    control = episode_figures(scores, ["a", "b", "c"], culprit=None, action_index=None)
    assert not control["clean"] and control["flagged"] == [["a", 0, 3.0], ["b", 0, 3.0]]
    assert episode_figures(scores, ["a", "b", "c"], culprit=None, action_index=None, threshold=3)["clean"]


class FixedScores(SyncCoach):
    """Scores every action by its agent and action index alone; None (unscored) for any other."""

    name = "fixed"

    def __init__(self, table):
        self.table = table

    def score(self, request):
        score = self.table.get((request.role, request.action_index))
        return Verdict(score, "fixed", self.name, {} if score is not None else {"unscored_reason": "not_in_table"})


def figures_of(report):
    """case → (agent hits, step hits, innocence) for a fault, (clean episodes, episodes) for the control."""
    return {c["name"]: (c["clean_episodes"], c["episodes"]) if "clean" in c else
            (c["agent_hits"], c["step_hits"], c["innocence"]) for c in report["cases"]}


@pytest.mark.slow
def test_the_figures_are_those_of_the_coachs_scores(recorded):
    """A coach with fixed scores per action on the math suite, figures worked out by hand: the solver 2, the
    executor 2 then 1 (mean 1.5; 2 alone when it writes no code), the verifier 6."""
    coach = FixedScores({("problem_solver", 0): 2.0, ("code_executor", 0): 2.0, ("code_executor", 1): 1.0,
                         ("verifier", 0): 6.0})
    report = score_suite(recorded["mathchat-v0"][1], coach)
    assert figures_of(report) == {
        # the executor has the lowest mean (1.5); its lowest action is the closing message (1), not action 0;
        # the verifier downstream (6) is innocent
        "executor-crash": (2, 0, 1.0), "executor-wrong": (2, 0, 1.0),
        "executor-false-claim": (2, 2, 1.0),  # the closing message is the culprit and the lowest action
        # the executor's only action (2) ties the solver's: a tie is a miss, for the agent and the step
        "executor-no-code": (0, 0, 1.0),
        # the solver (2) is above the executor (1.5); of the two agents downstream the executor is below 4
        "solver-wrong": (0, 0, 0.5), "solver-no-answer": (0, 0, 0.5),
        "verifier-mismatch": (0, 0, None), "verifier-no-box": (0, 0, None),  # no agent downstream
        "control": (0, 2),  # the executor's 2 and 1 are below 4
    }
    faults = report["overall"]["faults"]
    assert (faults["agent_hits"], faults["step_hits"], faults["episodes"]) == (6, 2, 16)
    assert (faults["innocent_agents"], faults["downstream_agents"]) == (12, 16)
    assert faults["agent_accuracy"] == 6 / 16 and faults["step_accuracy"] == 2 / 16
    assert faults["innocence"] == pytest.approx(10 / 12)  # per episode, then averaged: 8 at 1, 4 at 1/2
    assert report["overall"]["controls"]["clean"] == 0.0
    assert report["coach"] == "fixed" and report["overall"]["faults"]["unscored"] == 0
    assert report["unscored_reasons"] == {} and "unscored" not in report_summary(report, "mathchat-v0")


@pytest.mark.slow
def test_unscored_actions_are_counted_and_never_make_a_hit(recorded):
    """Only the verifier scored: an unscored culprit is a miss, and so is a scored one with nothing to compare."""
    report = score_suite(recorded["mathchat-v0"][1], FixedScores({("verifier", 0): 5.0}))
    faults = report["overall"]["faults"]
    assert faults["agent_hits"] == 0 and faults["step_hits"] == 0
    assert faults["unscored"] == sum(len(e["records"]) - 1 for e in recorded["mathchat-v0"][1] if e["culprit"])
    assert faults["innocence"] == 1.0  # unscored actions are never low
    # and the summary says how many were left unscored, and why (the coach's reason)
    unscored = sum(len(e["records"]) - 1 for e in recorded["mathchat-v0"][1])
    assert report["unscored_reasons"] == {"not_in_table": unscored}
    assert f"{unscored} actions unscored (not_in_table {unscored})" in report_summary(report, "mathchat-v0")


# ------------------------------------------------------------------------------- the receipts coach
#: case → (agent hits, step hits, innocence) over the suite's two tasks; (clean, episodes) for the control.
RECEIPTS = {
    "dsbench-v0": {
        # the culprit agent is found every time; its action is not: the closing message that ends the stage
        # without a sound output scores 1, below the code action that made the fault (2, or 6 for a missing file)
        "missing-x-test": (2, 0, 1.0), "missing-model": (2, 0, 1.0), "analyst-keyerror": (2, 0, None),
        "wrong-columns": (2, 0, None), "train-ids": (2, 0, 1.0), "target-leak": (2, 0, 1.0),
        "id-feature": (2, 0, 1.0), "swallowed-error": (2, 0, 1.0),
        "false-claim": (2, 2, None),  # its only action, scored 0
        "leak-diagnosed": (2, 0, 1.0), "control": (2, 2),
    },
    "mathchat-v0": {
        "executor-crash": (2, 2, 1.0), "verifier-mismatch": (2, 2, None),
        # online a wrong solver is not known to be wrong: it scores 7, above the executor that disagreed (6)
        "solver-wrong": (0, 0, 1.0),
        # online the executor's wrong number only disagrees with the solver (6); the verifier that followed it gets 4
        "executor-wrong": (0, 0, 1.0),
        "executor-false-claim": (2, 2, 1.0), "executor-no-code": (2, 2, 1.0), "solver-no-answer": (2, 2, 1.0),
        "verifier-no-box": (2, 2, None), "control": (2, 2),
    },
}
RECEIPTS_HINDSIGHT = {
    "dsbench-v0": {
        **RECEIPTS["dsbench-v0"],
        # in hindsight the action that omitted the file scores 1, but so does the closing message: a tie, a miss
    },
    "mathchat-v0": {
        **RECEIPTS["mathchat-v0"],
        "solver-wrong": (2, 2, 1.0),  # in hindsight the solver's wrong answer scores 3
        # the executor's printed wrong answer and its report of it both score 3: the agent is found, the step ties
        "executor-wrong": (2, 0, 1.0),
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("env_id", SUITES)
def test_what_the_receipts_coach_gets_online(recorded, env_id):
    report = score_suite(recorded[env_id][1], ReceiptsCoach())
    assert figures_of(report) == RECEIPTS[env_id]
    assert report["overall"]["faults"]["unscored"] == 0 and report["threshold"] == THRESHOLD


@pytest.mark.slow
@pytest.mark.parametrize("env_id", SUITES)
def test_what_the_receipts_coach_gets_in_hindsight(recorded, env_id):
    report = score_suite(recorded[env_id][1], ReceiptsCoach(timing="hindsight"))
    assert figures_of(report) == RECEIPTS_HINDSIGHT[env_id]
    assert report["timing"] == "hindsight"
    if env_id == "dsbench-v0":  # the hindsight rule reached the recorded action: it is marked, and ties
        first = next(e for e in report["episodes"] if e["case"] == "missing-x-test")
        assert first["culprit_score"] == 1.0 and ["data_engineer", 1, 1.0] in first["flagged"]


# ------------------------------------------------------------------------------------------- the CLI
@pytest.mark.slow
def test_the_cli_rescores_the_recorded_suite_and_writes_the_figures(recorded, tmp_path, capsys):
    path, episodes = recorded["mathchat-v0"]
    out = tmp_path / "figures.json"
    assert main(["coach-bench", "--env", "mathchat-v0", "--episodes-file", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "re-scoring the suite recorded in" in printed.err
    assert "| solver-wrong | problem_solver, action 1 | 2 | 0/2 | 0/2 | 100.0 % | - | 0 |" in printed.out
    assert "| **all faults** | - | 16 | 12/16 (75.0 %) | 12/16 (75.0 %) | 100.0 % | - | 0 |" in printed.out
    assert "agent-level accuracy 75.0 %, step-level 75.0 %, innocence 100.0 %, clean controls 100.0 %" in printed.out
    written = json.loads(out.read_text())
    expected = score_suite(episodes, ReceiptsCoach())
    assert written["env_id"] == "mathchat-v0" and written["overall"] == expected["overall"]
    assert written["cases"] == expected["cases"]


@pytest.mark.slow
def test_a_suite_file_of_another_team_is_refused(recorded, capsys):
    path, _ = recorded["mathchat-v0"]
    assert main(["coach-bench", "--env", "dsbench-v0", "--episodes-file", str(path)]) == 2
    assert "recorded on mathchat-v0, not dsbench-v0" in capsys.readouterr().err


def test_an_unknown_env_or_coach_is_refused_before_anything_is_played(tmp_path, capsys):
    path = tmp_path / "never-written.json"
    assert main(["coach-bench", "--env", "nope-v0", "--episodes-file", str(path)]) == 2
    assert "no credit-assignment suite for 'nope-v0'; suites exist for dsbench-v0, mathchat-v0" in capsys.readouterr().err
    assert main(["coach-bench", "--env", "mathchat-v0", "--coach", "nope", "--episodes-file", str(path)]) == 2
    assert "unknown coach 'nope'" in capsys.readouterr().err
    assert main(["coach-bench", "--coach", "receipts", "--coach-kwargs", '{"timng": "hindsight"}',
                 "--episodes-file", str(path)]) == 2
    assert "timng" in capsys.readouterr().err
    assert not path.exists()


def test_a_results_file_that_is_not_a_suite_is_refused(tmp_path):
    path = write_results({"episodes": [{"coach_requests": [], "records": [], "format_version": RECORDS_FORMAT_VERSION}]},
                         tmp_path / "r.json")
    with pytest.raises(ValueError, match="not a recorded coach-bench suite"):
        load_suite(path, "dsbench-v0")
