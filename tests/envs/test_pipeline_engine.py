"""Engine behaviours shared by every team, exercised on dsbench-v0: coaches, truncation, prompts, cleanup."""

from __future__ import annotations

import os

import pytest
from episode_helpers import children_of, code, play

import mappa_env
from mappa_env.coach import SyncCoach, Verdict
from mappa_env.policies import make_policy
from mappa_env.tasks import ensure_materialized

DONE = {"modeler": ["done"], "analyst": ["done"]}


class ExplodingCoach(SyncCoach):
    name = "exploding"

    def score(self, request):
        if request.role == "modeler":
            raise ConnectionError("endpoint unreachable")
        return Verdict(6.0, "fine", self.name)


class HindsightCoach(SyncCoach):
    """Scores 10 for actions of valid episodes, 0 otherwise: only possible once the outcome is known."""

    name = "hindsight-test"
    timing = "hindsight"

    def __init__(self):
        self.requests = []

    def score(self, request):
        self.requests.append(request)
        return Verdict(10.0 if request.outcome.valid else 0.0, "judged with the outcome", self.name)


def make(**kwargs):
    return mappa_env.make("dsbench-v0", split="heldout", **kwargs)


@pytest.mark.parametrize("mode", ["process", "mixed"])
def test_a_crashing_coach_leaves_the_action_unscored_and_the_episode_running(mode):
    env = make(coach=ExplodingCoach(), reward_mode=mode)
    try:
        final = play(env, {"data_engineer": [code("x = 1"), "done"], "modeler": [code("y = 2"), "done"], "analyst": ["done"]})
    finally:
        env.close()
    modeler = final["modeler"]
    assert [s["verdict"]["score"] for s in modeler["steps"]] == [None, None]
    assert "ConnectionError: endpoint unreachable" in modeler["steps"][0]["verdict"]["rationale"]
    assert modeler["step_rewards"] == [None, None]  # never replaced by an invented number
    # mixed: half the process reward, half the outcome's (0: no submission)
    assert final["data_engineer"]["step_rewards"] == pytest.approx([0.6, 0.6] if mode == "process" else [0.3, 0.3])


def test_the_evaluation_table_says_how_many_actions_went_unscored_and_why():
    from mappa_env.evaluation import evaluate, results_table

    results = evaluate("scripted", split="heldout", episodes=1, env_kwargs={"coach": ExplodingCoach()}, progress=False)
    coaching = results["summary"]["coach"]
    assert (coaching["actions"], coaching["unscored"], coaching["unscored_by_reason"]) == (6, 2, {"coach_error": 2})
    assert "| exploding | 6 | 4 | 2 | coach_error 2 |" in results_table(results)


def test_hindsight_coach_scores_every_action_after_the_episode_with_the_outcome():
    coach = HindsightCoach()
    env = make(coach=coach)
    policy = make_policy("scripted")
    immediate, handed_out = [], []
    try:
        env.reset(seed=0)
        for agent in env.agent_iter():
            obs, _, term, trunc, info = env.last()
            if term or trunc:
                env.step(None)
                continue
            env.step(policy.act(agent, obs, info))
            immediate.append(env.unwrapped.rewards[agent])
            handed_out.append(env.unwrapped.infos[agent]["step"])
            if not env.unwrapped.terminations[agent]:  # before the end: nothing scored yet
                assert env.unwrapped.infos[agent]["step"]["verdict"]["score"] is None
                assert coach.requests == []
        final = [r.verdict.score for r in env.unwrapped.step_records()]
    finally:
        env.close()
    assert final == [10.0] * 6  # scored in hindsight, in new records ...
    assert [s["verdict"]["score"] for s in handed_out[:-1]] == [None] * 5  # ... the mappings handed out unchanged
    assert all(s["verdict"]["pending"] for s in handed_out[:-1])
    assert len(coach.requests) == 6 and all(r.outcome is not None and r.outcome.valid for r in coach.requests)
    assert all(len(r.trajectory) == 6 for r in coach.requests)  # the whole episode is in view
    assert [len(r.upstream) for r in coach.requests] == [0, 0, 2, 2, 4, 4]
    assert immediate[:-1] == [0.0] * 5


def test_hindsight_rewards_arrive_in_step_rewards():
    env = make(coach=HindsightCoach())
    try:
        final = play(env, {"data_engineer": [code("x = 1"), "done"], **DONE})
    finally:
        env.close()
    for info in final.values():  # the submission is missing: every action scored 0 in hindsight
        assert info["step_rewards"] == [0.0] * len(info["steps"])
        assert all(s["verdict"]["coach"] == "hindsight-test" for s in info["steps"])


def test_max_cycles_truncates_with_an_invalid_outcome_and_keeps_the_records():
    env = make(max_cycles=2)
    try:
        final = play(env, {"data_engineer": [code("print(1)"), code("print(2)"), code("print(3)")], **DONE})
    finally:
        env.close()
    de = final["data_engineer"]
    assert len(de["steps"]) == 2 and len(de["step_rewards"]) == 2
    assert de["outcome"]["valid"] is False and "max_cycles=2" in de["outcome"]["reason"]
    assert final["analyst"]["steps"] == [] and final["analyst"]["step_rewards"] == []


def test_prompts_handed_out_never_change_afterwards():
    env = make()
    try:
        env.reset(seed=0)
        _, _, _, _, info = env.last()
        held = info["messages"]
        snapshot = [dict(m) for m in held]
        env.step(code("print('x')"))
        _, _, _, _, info_after = env.last()
        assert held == snapshot  # the list a trainer kept is untouched
        assert info_after["messages"][: len(held)] == snapshot  # the new prompt extends the old one
        assert len(info_after["messages"]) == len(held) + 2
    finally:
        env.close()


def test_same_seed_gives_the_same_hash_order_inside_the_sandbox():
    snippet = code("print(list({'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'}))")
    outputs = []
    for _ in range(2):
        env = make()
        try:
            final = play(env, {"data_engineer": [snippet, "done"], **DONE}, seed=5)
        finally:
            env.close()
        outputs.append(final["data_engineer"]["steps"][0]["stdout"])
    assert outputs[0] == outputs[1]


def test_deleted_files_count_as_changed():
    env = make()
    try:
        final = play(env, {"data_engineer": [code("import os; os.remove('sample_submission.csv')"), "done"], **DONE})
    finally:
        env.close()
    assert final["data_engineer"]["steps"][0]["files_changed"] == ["sample_submission.csv"]


def test_non_persistent_sandbox_forgets_variables_and_says_so():
    env = make(sandbox_kwargs={"persistent": False})
    try:
        final = play(env, {"data_engineer": [code("x = 41"), code("print(x + 1)"), "done"], **DONE})
    finally:
        env.close()
    steps = final["data_engineer"]["steps"]
    assert steps[0]["status"] == "ok" and steps[1]["status"] == "error" and "NameError" in steps[1]["error"]
    assert "only files persist" in final["data_engineer"]["messages"][1]["content"]


def test_timeout_tells_the_agent_its_state_was_lost():
    env = make(exec_timeout_s=1)
    try:
        final = play(env, {"data_engineer": [code("import time; time.sleep(30)"), "done"], **DONE})
    finally:
        env.close()
    assert final["data_engineer"]["steps"][0]["status"] == "timeout"
    tool_output = final["data_engineer"]["messages"][3]["content"]
    assert "restarted" in tool_output and "variables from earlier actions are lost" in tool_output


def test_a_symlink_to_the_hidden_answers_is_not_a_submission():
    env = make()
    try:
        env.reset(seed=0)
        answers = ensure_materialized(env.unwrapped.task).answers_path
        attack = code(f"import os; os.symlink({str(answers)!r}, 'submission.csv')")
        final = play(env, {"data_engineer": [attack, "done"], **DONE}, seed=0)
    finally:
        env.close()
    outcome = final["analyst"]["outcome"]
    assert outcome["valid"] is False and "symbolic link" in outcome["reason"]
    assert outcome["metrics"] == {}


def test_close_mid_episode_kills_workers_and_removes_the_workspace():
    others = children_of(os.getpid())  # e.g. the LLM server a coach test started for the session
    env = make()
    env.reset(seed=0)
    env.step(code("print('warm')"))  # the data engineer's worker ran, the modeler's is warming up
    workspace = env.unwrapped.workspace
    assert children_of(os.getpid()) - others  # live sandbox processes
    env.close()
    assert not workspace.exists()
    assert children_of(os.getpid()) <= others


def test_bad_sandbox_options_fail_at_construction():
    with pytest.raises(ValueError, match="exec_timeout_s"):
        make(sandbox_kwargs={"timeout_s": 5})
    with pytest.raises(ValueError, match="memory_mb"):
        make(sandbox_kwargs={"memory_mbs": 1024})


def test_unknown_suite_options_are_value_errors():
    with pytest.raises(ValueError, match="root="):
        make(suite="dsbench")
    with pytest.raises(ValueError, match="no options"):
        make(suite_kwargs={"root": "/tmp"})


def test_verdict_details_cannot_overwrite_the_contract_keys():
    verdict = Verdict(7.0, "ok", "c", {"score": "raw", "tokens": 12})
    assert verdict.to_dict() == {"score": 7.0, "rationale": "ok", "coach": "c", "tokens": 12}


def test_a_reward_calibration_shifts_the_rewards_and_the_records_keep_the_coachs_scores():
    from mappa_env.coach.bias import BiasMonitor

    planted = BiasMonitor(min_count=2)
    for _ in range(3):  # what a run saw so far: the coach scores the failed modeler 1.5 higher on regression
        planted.update(6.5, task_type="regression", role="modeler", success=False)
        planted.update(5.0, task_type="classification", role="modeler", success=False)
    env = make(reward_calibration=planted.calibrate)
    try:
        regression = next(t.id for t in env.unwrapped.tasks if t.task_type == "regression")
        # no code: nothing saved, every action judged by the receipts rules
        final = play(env, {"data_engineer": ["done"], **DONE}, task_id=regression)
    finally:
        env.close()
    modeler = final["modeler"]
    assert modeler["steps"][0]["verdict"]["score"] == 5.0  # the coach's own score, as it gave it
    # 5.0 shifted by the pooled mean (5.75) minus its group's (6.5): the planted 1.5 gap halved away
    assert modeler["step_rewards"] == pytest.approx([0.425])
    assert final["data_engineer"]["step_rewards"] == pytest.approx([0.1])  # a group the monitor never saw: as scored


def test_reward_settings_are_checked_with_what_they_mean():
    with pytest.raises(ValueError, match="reward_calibration must be None or"):
        make(reward_calibration=3)
    with pytest.raises(ValueError, match=r"outcome_weight must be within \[0, 1\]"):
        make(outcome_weight=1.5)


def test_hidden_paths_of_the_user_and_of_the_team_are_both_hidden(tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text("hunter2")
    for directory in (tmp_path, secret):
        directory.chmod(0o755)  # readable by the sandbox's user, so that only hiding can keep it out
    listing = {"data_engineer": [code(f"import os; print(os.listdir({str(secret)!r}))"), "done"], **DONE}
    for options, seen in (({"extra_ro_binds": (str(tmp_path),)}, "['key.txt']"),
                          ({"extra_ro_binds": (str(tmp_path),), "hidden_paths": (str(secret),)}, "[]")):
        env = make(sandbox_kwargs=options)
        try:
            final = play(env, listing)
        finally:
            env.close()
        assert final["data_engineer"]["steps"][0]["stdout"].strip() == seen, options


def test_a_coach_of_four_members_is_a_coach_and_its_outcome_maps_are_each_agents_own():
    class Minimal:  # no SyncCoach, no close()
        name, timing = "minimal", "online"

        def score(self, request):
            return Verdict(4.0, "fine", self.name)

        async def ascore(self, request):
            return self.score(request)

    env = make(coach=Minimal())
    try:
        final = play(env, {"data_engineer": ["done"], **DONE})
    finally:
        env.close()
    assert final["modeler"]["steps"][0]["verdict"]["score"] == 4.0
    final["modeler"]["outcome"]["metrics"]["planted"] = 1.0
    assert "planted" not in final["analyst"]["outcome"]["metrics"]
    with pytest.raises(ValueError, match="lacks timing, ascore"):
        make(coach=type("Half", (), {"name": "half", "score": lambda self, r: None})())
