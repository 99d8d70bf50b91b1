"""dsbench-v0 end to end: PettingZoo API, determinism, credit assignment, failures as data, reward modes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pettingzoo.test import api_test, render_test, seed_test

import mappa_env
from mappa_env.envs.pipeline import render_messages
from mappa_env.evaluation import run_episode
from mappa_env.policies import make_policy
from mappa_env.tasks import load_tasks

from episode_helpers import children_of, code, play

HELDOUT = [t.id for t in load_tasks("builtin", split="heldout")]
CLASSIFICATION = next(t.id for t in load_tasks("builtin", split="heldout") if t.task_type == "classification")
REGRESSION = next(t.id for t in load_tasks("builtin", split="heldout") if t.task_type == "regression")


@pytest.fixture
def env():
    environment = mappa_env.make("dsbench-v0", split="heldout", exec_timeout_s=20)
    yield environment
    environment.close()


def test_pettingzoo_api_test(env):
    api_test(env, num_cycles=50)


def test_pettingzoo_seed_test():
    # random text actions hold no code: each episode is three quick "done" actions
    seed_test(lambda: mappa_env.make("dsbench-v0", split="heldout"), num_cycles=20)


def test_pettingzoo_render_test(capsys):
    # PettingZoo builds the env with render_mode="human" first: a text env prints what "ansi" returns
    render_test(lambda render_mode=None: mappa_env.make("dsbench-v0", split="heldout", render_mode=render_mode))
    assert "=== dsbench-v0 · task builtin/" in capsys.readouterr().out


def test_observation_text_and_messages_carry_the_same_content(env):
    env.reset(seed=3)
    obs, _, _, _, info = env.last()
    assert obs["text"] == render_messages(info["messages"])
    assert [m["role"] for m in info["messages"]] == ["system", "user"]
    system, user = (m["content"] for m in info["messages"])
    assert "Data Engineer" in system and "X_test.pkl" in system and "test_ids.pkl" in system
    assert env.unwrapped.task.description in user
    assert "train.csv" in user and "sample_submission.csv" in user  # workspace inventory
    assert env.observation_space(env.agent_selection).contains(obs)


def test_same_seed_and_actions_give_the_same_episode(env):
    policy = make_policy("scripted")
    first = run_episode(env, policy, seed=11)
    second = run_episode(env, policy, seed=11)
    assert first["task_id"] == second["task_id"]
    assert first["outcome"] == second["outcome"]
    for agent in env.unwrapped.possible_agents:
        a, b = first["agents"][agent], second["agents"][agent]
        assert a["step_rewards"] == b["step_rewards"]
        assert [s["stdout"] for s in a["steps"]] == [s["stdout"] for s in b["steps"]]
    # and the observations: replay step by step and compare the prompt texts
    texts = []
    for _ in range(2):
        env.reset(seed=11)
        seen = []
        for agent in env.agent_iter():
            obs, _, term, trunc, info = env.last()
            seen.append(obs["text"])
            env.step(None if term or trunc else policy.act(agent, obs, info))
        texts.append(seen)
    assert texts[0] == texts[1]


def test_credit_assignment_blames_the_data_engineer_for_missing_x_test(env):
    result = run_episode(env, make_policy("buggy-missing-x-test"), seed=0, task_id=CLASSIFICATION)
    scores = {a: result["agents"][a]["scores"] for a in env.unwrapped.possible_agents}
    analyst_steps = result["agents"]["analyst"]["steps"]
    assert analyst_steps[0]["status"] == "error" and "X_test.pkl" in analyst_steps[0]["error"]
    assert not result["outcome"]["valid"]
    lowest = {a: min(s) for a, s in scores.items()}
    assert lowest["data_engineer"] < lowest["modeler"] and lowest["data_engineer"] < lowest["analyst"]
    assert min(scores["modeler"]) >= 8
    assert min(scores["analyst"]) >= 5, scores["analyst"]
    assert "data_engineer" in analyst_steps[0]["verdict"]["rationale"]


def test_own_bug_is_blamed_on_the_agent_that_made_it(env):
    result = run_episode(env, make_policy("buggy-analyst-keyerror"), seed=0, task_id=CLASSIFICATION)
    analyst = result["agents"]["analyst"]
    assert analyst["steps"][0]["status"] == "error" and "KeyError" in analyst["steps"][0]["error"]
    assert analyst["scores"][0] <= 2
    assert min(result["agents"]["data_engineer"]["scores"]) >= 8


@pytest.mark.slow
@pytest.mark.parametrize("task_id", HELDOUT)
def test_scripted_team_solves_every_heldout_task(env, task_id):
    result = run_episode(env, make_policy("scripted"), seed=0, task_id=task_id)
    assert result["outcome"]["valid"], result["outcome"]["reason"]
    assert result["outcome"]["metrics"]["rpg"] > 0, result["outcome"]["metrics"]  # beats the constant baseline


def test_step_record_has_the_contract_keys(env):
    final = play(env, {"data_engineer": [code("print('hello')"), "done"], "modeler": ["done"], "analyst": ["done"]})
    step = final["data_engineer"]["steps"][0]
    for key in ("action_index", "code", "stdout", "stderr", "status", "duration_s", "files_changed", "verdict"):
        assert key in step
    assert step["status"] == "ok" and step["stdout"].strip() == "hello" and step["code"] == "print('hello')"
    assert set(step["verdict"]) >= {"score", "rationale", "coach"} and step["verdict"]["coach"] == "receipts"
    assert final["data_engineer"]["steps"][1]["status"] == "no_code"
    outcome = final["analyst"]["outcome"]
    assert set(outcome) >= {"valid", "reason", "metrics", "task_id", "task_type"}
    assert outcome["valid"] is False and "submission.csv" in outcome["reason"]


def test_files_changed_and_workspace_inventory(env):
    final = play(env, {"data_engineer": [code("open('notes.txt', 'w').write('x' * 10)"), "done"],
                       "modeler": ["done"], "analyst": ["done"]})
    step = final["data_engineer"]["steps"][0]
    assert step["files_changed"] == ["notes.txt"]
    observation = final["data_engineer"]["messages"][-3]["content"]  # tool output of the first action
    assert "notes.txt (10 B)" in observation


def test_crash_timeout_and_garbage_are_observations_not_exceptions():
    env = mappa_env.make("dsbench-v0", split="heldout", exec_timeout_s=2, max_actions_per_agent=4)
    try:
        final = play(env, {
            "data_engineer": [
                code("1 / 0"),
                code("while True:\n    pass"),
                code("print('still alive')"),
                "\x00\udcff garbage ```python\nthis is not (python\n```",
            ],
            "modeler": [code("import sys; sys.stdout.buffer.write(b'\\xff\\xfe bad utf8'); print()"), "done"],
            "analyst": ["```python\nwhile True:\n    print('y' * 1000)\n```"],
        })
    finally:
        env.close()
    de = final["data_engineer"]["steps"]
    assert [s["status"] for s in de] == ["error", "timeout", "ok", "error"]
    assert "ZeroDivisionError" in de[0]["error"]
    assert de[1]["state_lost"] is True
    assert de[2]["stdout"].strip() == "still alive"
    assert "SyntaxError" in de[3]["error"]
    assert "bad utf8" in final["modeler"]["steps"][0]["stdout"]
    analyst = final["analyst"]["steps"][0]
    assert analyst["status"] in ("timeout", "error")
    assert len(analyst["stdout"]) <= 2500 and "truncated" in analyst["stdout"]
    assert all(s["verdict"]["score"] is not None for a in final.values() for s in a["steps"])


def documented_outcome_reward(outcome) -> float:
    """The outcome reward as the module docstring states it (0-10), computed here, not by the env's code."""
    metrics = outcome["metrics"]
    if outcome["task_type"] == "regression":
        return max(0.0, 10.0 * (1.0 - metrics["rmse_pct_range"] / 100.0))
    return 10.0 * metrics["primary"]


@pytest.mark.parametrize("task_id", [CLASSIFICATION, REGRESSION])
def test_the_outcome_reward_follows_the_documented_scale(task_id):
    """Better is more: 10 x the primary metric for classification, 10 x (1 - RMSE / range) for regression."""
    env = mappa_env.make("dsbench-v0", split="heldout", reward_mode="outcome")
    try:
        result = run_episode(env, make_policy("scripted"), seed=0, task_id=task_id)
    finally:
        env.close()
    outcome = result["outcome"]
    assert outcome["valid"], outcome["reason"]
    key = "rmse_pct_range" if outcome["task_type"] == "regression" else "primary"
    assert 0.0 < outcome["metrics"][key] < 100.0  # a real, imperfect result: the scale's direction shows
    for agent in env.unwrapped.possible_agents:
        rewards = result["agents"][agent]["step_rewards"]
        assert rewards and rewards == pytest.approx([0.1 * documented_outcome_reward(outcome)] * len(rewards))


@pytest.mark.parametrize("mode", ["process", "outcome", "mixed"])
def test_reward_modes_deliver_one_reward_per_action(mode):
    env = mappa_env.make("dsbench-v0", split="heldout", reward_mode=mode, outcome_weight=0.25)
    try:
        env.reset(seed=0, options={"task_id": REGRESSION})
        policy = make_policy("scripted")
        immediate = {a: [] for a in env.unwrapped.possible_agents}
        accumulated = {a: 0.0 for a in immediate}
        final = {}
        for agent in env.agent_iter():
            obs, reward, term, trunc, info = env.last()
            accumulated[agent] += reward
            if term or trunc:
                final[agent] = info
                env.step(None)
                continue
            env.step(policy.act(agent, obs, info))
            immediate[agent].append(env.unwrapped.rewards[agent])
    finally:
        env.close()
    outcome = final["analyst"]["outcome"]
    assert outcome["valid"]
    outcome_reward = documented_outcome_reward(outcome) * 0.1
    for agent, info in final.items():
        scores = [s["verdict"]["score"] for s in info["steps"]]
        process = [s * 0.1 for s in scores]
        expected = {
            "process": process,
            "outcome": [outcome_reward] * len(scores),
            "mixed": [0.75 * p + 0.25 * outcome_reward for p in process],
        }[mode]
        assert info["step_rewards"] == pytest.approx(expected)
        assert len(info["step_rewards"]) == len(immediate[agent])
        # before the end only the process part is paid (nothing in outcome mode); the episode-ending step
        # carries the remainder
        before_end = immediate[agent][:-1] if agent == "analyst" else immediate[agent]
        paid_early = {"process": process, "outcome": [0.0] * len(process), "mixed": [0.75 * p for p in process]}[mode]
        assert before_end == pytest.approx(paid_early[: len(before_end)])
        # last()'s accumulated reward adds up to the episode's total for the agent
        assert accumulated[agent] == pytest.approx(sum(expected))


def test_render_ansi_and_close_free_everything():
    others = children_of(os.getpid())  # e.g. the LLM server a coach test started for the session
    env = mappa_env.make("dsbench-v0", split="heldout", render_mode="ansi")
    play(env, {"data_engineer": [code("print('hi')"), "done"], "modeler": ["done"], "analyst": ["done"]})
    transcript = env.render()
    assert "data_engineer · action 1 · ok" in transcript and "outcome: invalid" in transcript
    workspace = env.unwrapped.workspace
    assert workspace is not None and workspace.exists()
    env.close()
    assert not workspace.exists()
    assert children_of(os.getpid()) <= others


def test_reset_by_task_id_and_unknown_task_id(env):
    env.reset(seed=0, options={"task_id": HELDOUT[0]})
    assert env.unwrapped.task.id == HELDOUT[0]
    with pytest.raises(ValueError, match=r"no task 'builtin/no-such-task' in dsbench-v0's split"):
        env.reset(seed=0, options={"task_id": "builtin/no-such-task"})


def test_hidden_labels_are_not_in_the_workspace(env):
    env.reset(seed=0, options={"task_id": HELDOUT[0]})
    files = sorted(p.name for p in Path(env.unwrapped.workspace).iterdir())
    assert files == ["sample_submission.csv", "test.csv", "train.csv"]
    task = env.unwrapped.task
    header = (Path(env.unwrapped.workspace) / "test.csv").read_text().splitlines()[0].split(",")
    assert task.target not in header
