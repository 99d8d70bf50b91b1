"""mathchat-v0 end to end: PettingZoo API, seeds, which roles run code, the rule-checked outcome, credit assignment."""

from __future__ import annotations

import pytest
from pettingzoo.test import api_test, seed_test

import mappa_env
from mappa_env.coach import ReceiptsCoach
from mappa_env.evaluation import evaluate, run_episode
from mappa_env.policies import MathScriptedTeam, make_policy

from episode_helpers import code, play


@pytest.fixture
def env():
    environment = mappa_env.make("mathchat-v0", split="heldout")
    yield environment
    environment.close()


def first_task(env, level=1):
    return next(t for t in env.unwrapped.tasks if t.level == level)


def test_pettingzoo_api_test(env):
    api_test(env, num_cycles=20)


def test_pettingzoo_seed_test():
    seed_test(lambda: mappa_env.make("mathchat-v0", split="heldout"), num_cycles=10)


def test_the_agents_act_in_order_with_their_own_budgets(env):
    task = first_task(env)
    final = play(env, {"problem_solver": ["I think \\boxed{3}"],
                       "code_executor": [code("print(1)"), code("print(2)"), "never reached"],
                       "verifier": ["\\boxed{2}"]}, task_id=task.id)
    steps = {a: [s["status"] for s in final[a]["steps"]] for a in env.unwrapped.possible_agents}
    assert steps == {"problem_solver": ["no_code"], "code_executor": ["ok", "ok"], "verifier": ["no_code"]}


def test_the_solver_and_verifier_code_is_never_run(env, tmp_path):
    marker = tmp_path / "ran"
    payload = code(f"open({str(marker)!r}, 'w').write('x')\nprint('ran')")
    final = play(env, {"problem_solver": [payload], "code_executor": ["The solver is right."],
                       "verifier": [payload + "\n\\boxed{1}"]}, task_id=first_task(env).id)
    solver, verifier = final["problem_solver"]["steps"][0], final["verifier"]["steps"][0]
    assert not marker.exists()
    assert solver["code"] == "" and solver["status"] == "no_code" and verifier["code"] == ""


def test_the_verifier_sees_the_executors_last_message_and_output(env):
    task = first_task(env)
    env.reset(options={"task_id": task.id})
    env.step("\\boxed{1}")
    env.step(code("print('forty-two')"))
    env.step("My code printed forty-two.")
    prompt = env.observe("verifier")["text"]
    assert "My code printed forty-two." in prompt and "forty-two" in prompt.split("last tool output", 1)[1]


def test_only_the_verifier_is_offered_a_reply_prefix_and_no_prompt_shows_a_number_to_copy(env):
    task = first_task(env)
    env.reset(options={"task_id": task.id})
    assert env.infos["problem_solver"]["reply_prefix"] == ""
    env.step("\\boxed{1}")
    assert env.infos["code_executor"]["reply_prefix"] == ""
    env.step("I agree.")
    assert env.infos["verifier"]["reply_prefix"] == "The answer is \\boxed{"
    # the format lines carry no worked number (the 135M model copied one into its answer)
    for role in env.unwrapped.roles:
        assert not any(ch.isdigit() for ch in role.turn_prompt + role.reply_prefix), role.name


def test_the_outcome_is_the_verifiers_last_boxed_answer_checked_by_rule(env):
    task = first_task(env)
    right = play(env, {"problem_solver": ["\\boxed{0}"], "code_executor": ["ok"],
                       "verifier": [f"first \\boxed{{0}}, finally \\boxed{{{task.answer}}}"]}, task_id=task.id)
    outcome = right["verifier"]["outcome"]
    assert outcome["valid"] and outcome["correct"] and outcome["metrics"]["correct"] == 1.0
    assert right["verifier"]["steps"][0]["result"]["correct"]  # the action that earned it carries the grade
    none = play(env, {"problem_solver": ["x"], "code_executor": ["ok"], "verifier": ["I am not sure."]}, task_id=task.id)
    assert not none["verifier"]["outcome"]["valid"] and not none["verifier"]["outcome"]["correct"]
    assert none["verifier"]["outcome"]["reason"]


def test_the_scripted_team_solves_every_heldout_arith_problem():
    results = evaluate("scripted", env_id="mathchat-v0", split="heldout", progress=False)
    assert results["summary"]["success_rate"] == 1.0 and results["summary"]["unparsed_rate"] == 0.0
    assert "Accuracy (%)" in results["table"]


@pytest.mark.slow
def test_the_scripted_team_solves_every_heldout_champ_problem():
    results = evaluate("scripted", env_id="mathchat-v0", split="heldout", progress=False, env_kwargs={"suite": "champ"})
    assert results["summary"]["success_rate"] == 1.0, [e["outcome"]["reason"] for e in results["episodes"]
                                                      if not e["outcome"]["correct"]][:3]


def scores(team: str, *, timing: str = "online") -> dict[str, list[float]]:
    env = mappa_env.make("mathchat-v0", split="heldout", coach=ReceiptsCoach(timing=timing))
    try:
        policy = make_policy(team, env_id="mathchat-v0")
        policy.bind(env)
        result = run_episode(env, policy, seed=0, task_id=first_task(env).id)
    finally:
        env.close()
    return {a: result["agents"][a]["scores"] for a in result["agents"]}


def test_the_rule_coach_scores_the_sound_team_high():
    assert scores("scripted") == {"problem_solver": [7.0], "code_executor": [8.0, 8.0], "verifier": [9.0]}
    assert scores("scripted", timing="hindsight")["problem_solver"] == [9.0]


def test_an_executor_whose_code_crashes_is_blamed_and_the_right_verifier_is_not():
    got = scores("math-executor-crash", timing="hindsight")
    assert got["code_executor"][0] <= 2 and got["verifier"] == [9.0] and got["problem_solver"] == [9.0]


def test_a_verifier_that_boxes_something_else_than_the_executor_printed_is_blamed():
    got = scores("math-verifier-mismatch")
    assert got["verifier"] == [1.0] and min(got["code_executor"]) >= 8


def test_a_wrong_solver_is_blamed_in_hindsight_and_the_executor_that_fixed_it_is_not():
    got = scores("math-solver-wrong", timing="hindsight")
    assert got["problem_solver"] == [3.0] and got["code_executor"][0] == 9.0 and got["verifier"] == [9.0]


def test_the_scripted_team_needs_the_tasks_and_says_so(env):
    env.reset()
    with pytest.raises(ValueError, match="bind"):
        MathScriptedTeam().act("problem_solver", env.observe("problem_solver"), {})
