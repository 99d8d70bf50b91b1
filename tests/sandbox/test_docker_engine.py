"""The ``docker`` backend against a real engine: whole episodes in containers, deaths from inside and outside.

Needs a reachable engine (``.ci/docker-engine start`` starts one where it can; elsewhere every test here
skips with the reason). The ``docker_image`` fixture builds the image once when the engine lacks it and,
at the end of the session, checks that no sandbox container is left in the engine.
"""

from __future__ import annotations

import threading
import time

import pytest

import mappa_env
from mappa_env.evaluation import evaluate
from mappa_env.sandbox import make_sandbox
from mappa_env.sandbox.docker_backend import LABEL, require_docker, sandbox_containers


@pytest.mark.parametrize("env_id", ["dsbench-v0", "mathchat-v0"])
def test_the_scripted_team_solves_an_episode_in_containers_and_closing_leaves_none(docker_image, env_id):
    before = sandbox_containers()
    results = evaluate("scripted", env_id=env_id, episodes=1, progress=False, env_kwargs={"sandbox": "docker"})
    [episode] = results["episodes"]
    assert episode["outcome"]["valid"], episode["outcome"]
    assert results["summary"]["success_rate"] == 1.0
    ran = [s for agent in episode["agents"].values() for s in agent["steps"] if s["status"] != "no_code"]
    assert ran and all(a["status"] == "ok" for a in ran)  # code ran, in containers, without a failure
    assert sandbox_containers() == before


def test_a_worker_that_exits_is_replaced_and_the_agent_is_told_its_state_is_gone(docker_image, tmp_path):
    sandbox = make_sandbox("docker", tmp_path, timeout_s=30)
    try:
        assert sandbox.run("x = 41").ok
        died = sandbox.run("import os\nos._exit(3)")
        assert died.status in ("error", "killed") and died.state_lost
        again = sandbox.run("print('x' in globals())")
        assert again.ok and again.stdout == "False\n"
    finally:
        sandbox.close()
    assert not [n for n in sandbox_containers() if n.startswith(sandbox.tag)]


def test_a_container_killed_from_outside_mid_action_ends_that_action_and_the_next_one_runs(docker_image, tmp_path):
    sandbox = make_sandbox("docker", tmp_path, timeout_s=60)
    try:
        assert sandbox.run("x = 1").ok
        name = sandbox.container.name
        results = []
        action = threading.Thread(target=lambda: results.append(sandbox.run("import time\nprint('start', flush=True)\n"
                                                                            "time.sleep(30)\nprint('end')")))
        began = time.monotonic()
        action.start()
        time.sleep(2.0)
        require_docker().containers.get(name).kill()  # as an operator's `docker kill` would
        action.join(30)
        assert not action.is_alive() and time.monotonic() - began < 25  # it did not wait for the sleep
        [killed] = results
        assert killed.status == "killed" and killed.state_lost and "end" not in killed.stdout
        after = sandbox.run("print('x' in globals())")
        assert after.ok and after.stdout == "False\n" and sandbox.container.name != name
    finally:
        sandbox.close()
    assert name not in sandbox_containers()


def test_an_env_step_whose_container_was_killed_says_state_was_lost(docker_image):
    env = mappa_env.make("mathchat-v0", sandbox="docker", exec_timeout_s=60)
    try:
        env.reset(seed=0)
        assert env.agent_selection == "problem_solver"
        env.step("The answer is \\boxed{1}.")
        assert env.agent_selection == "code_executor"
        workspace = str(env.unwrapped.workspace)

        def kill_the_executors_container():  # the workspace's containers are one per agent: take the executor's
            require_docker().containers.get(env.unwrapped._sandboxes["code_executor"].container.name).kill()

        threading.Timer(15.0, kill_the_executors_container).start()  # after start-up and the preload imports
        env.step("```python\nimport time\ntime.sleep(50)\nprint(1)\n```")
        record = env.unwrapped.step_records()[-1]
        assert record.agent == "code_executor" and record.status == "killed" and record.state_lost
        assert env.agent_selection == "code_executor"  # its second action: the episode carries on
        assert "variables from earlier actions are lost" in env.observe("code_executor")["text"]
    finally:
        env.close()
    assert not require_docker().containers.list(all=True, filters={"label": f"{LABEL}.workspace={workspace}"})
