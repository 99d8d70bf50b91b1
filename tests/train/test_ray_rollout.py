"""Rollout backend ray: the environments in Ray actors give the same episodes as local ones, and leave nothing running.

A local Ray cluster (started here, stopped here) with two worker actors holds the environments of
mathchat-v0; a scripted team whose replies depend only on the prompt plays the same episode specs on
them and on local environments, with the default receipts coach, so any difference is the backend's.
"""

from __future__ import annotations


import pytest

pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("ray", reason="the ray backend needs Ray (installed by the README's test line)")

import mappa_env  # noqa: E402
import ray  # noqa: E402

from mappa_train.policy import Generation  # noqa: E402
from mappa_train.ray_rollout import RayEnvPool  # noqa: E402
from mappa_train.rollout import EpisodeSpec, collect  # noqa: E402
from ray_processes import ray_processes  # noqa: E402


class PromptTeam:
    """Replies that depend on the prompt alone: the executor prints a number read off its prompt, the others box it."""

    def encode_prompt(self, messages, reply_prefix="", *, agent=None):
        return [ord(c) for c in messages[-1]["content"] + reply_prefix]

    def generate(self, requests, *, temperature, top_p=1.0, seed=None):
        out = []
        for agent, prompt_ids in requests:
            number = sum(prompt_ids) % 97
            text = f"```python\nprint({number})\n```" if agent == "code_executor" else rf"\boxed{{{number}}}"
            out.append(Generation(agent=agent, prompt_ids=list(prompt_ids), completion_ids=[1, 2], sampling_logprobs=[-1.0, -1.0],
                                  truncated=False, text=text, from_policy=True))
        return out


def played(episodes):
    """What an episode is, backend aside: its outcome and, per action, who acted, what they said, what ran, the reward."""
    return [(e.task_id, e.seed, e.outcome, [(s.agent, s.action_index, s.generation.text, s.reward, s.step.get("stdout"))
                                            for s in e.samples]) for e in episodes]


def test_ray_workers_play_the_same_episodes_as_local_environments_and_leave_no_process():
    assert not ray_processes(), "a Ray cluster is already running here; stop it (ray stop) before this test"
    env_kwargs = {"split": "heldout"}
    tasks = [t.id for t in mappa_env.make("mathchat-v0", **env_kwargs).unwrapped.tasks[:3]]
    specs = [EpisodeSpec(task_id, seed=seed) for seed in (0, 1) for task_id in tasks]

    local, _ = collect(PromptTeam(), [mappa_env.make("mathchat-v0", **env_kwargs) for _ in range(3)], specs, temperature=1.0)
    with RayEnvPool("mathchat-v0", env_kwargs, envs=3, workers=2) as pool:
        assert len(pool.slots) == 3 and len({id(slot.actor) for slot in pool.slots}) == 2  # 2 + 1 environments
        remote, _ = collect(PromptTeam(), pool.slots, specs, temperature=1.0)

    assert played(remote) == played(local)
    assert len(remote) == 6 and all(e.samples for e in remote)
    # the episodes ran code and were scored: the comparison is not between two empty lists
    assert any(s.step.get("stdout") for e in remote for s in e.samples)
    assert all(s.reward is not None for e in remote for s in e.samples)
    assert not ray_processes()


class KillingTeam(PromptTeam):
    """:class:`PromptTeam`, which kills a worker actor of ``pool`` just before its ``at``-th generation call."""

    def __init__(self, pool, *, at: int, restart: bool, worker: int = 0):
        self.pool, self.at, self.restart, self.worker, self.calls = pool, at, restart, worker, 0

    def generate(self, requests, **kwargs):
        self.calls += 1
        if self.calls == self.at:  # episodes on it are waiting for these replies, or stepping: both are lost
            ray.kill(self.pool.actors[self.worker], no_restart=not self.restart)
        return super().generate(requests, **kwargs)


def specs_and_local_episodes(count_per_seed=3):
    tasks = [t.id for t in mappa_env.make("mathchat-v0", split="heldout").unwrapped.tasks[:count_per_seed]]
    specs = [EpisodeSpec(task_id, seed=seed) for seed in (0, 1) for task_id in tasks]
    local, _ = collect(PromptTeam(), [mappa_env.make("mathchat-v0", split="heldout") for _ in range(2)], specs,
                       temperature=1.0)
    return specs, local


def test_a_worker_killed_mid_rollout_costs_no_episode_and_comes_back_for_the_next_one():
    specs, local = specs_and_local_episodes()
    with RayEnvPool("mathchat-v0", {"split": "heldout"}, envs=3, workers=2) as pool:  # worker 0 holds 2 of the 3
        team = KillingTeam(pool, at=2, restart=True)
        remote, times = collect(team, pool.slots, specs, temperature=1.0)
        assert team.calls > 2  # the kill happened mid-rollout, not after it
        # the episodes in flight on the killed worker were played again from their start, on the other one
        assert 1 <= times.episodes_retried <= 2 and times.episodes_lost == 0
        assert played(remote) == played(local)
        # Ray restarted the worker: the next rollout uses all three environments again and loses nothing
        again, times = collect(PromptTeam(), pool.slots, specs, temperature=1.0)
        assert played(again) == played(local) and times.episodes_retried == 0
    assert not ray_processes()


def test_a_rollout_begun_while_a_worker_restarts_waits_for_it_instead_of_losing_episodes():
    """CI once saw the rollout after a kill lose both of the killed worker's episodes: its starts reached the actor
    while Ray was still restarting it, which fails them at once. Here the kill comes right before the rollout."""
    specs, local = specs_and_local_episodes(count_per_seed=2)
    with RayEnvPool("mathchat-v0", {"split": "heldout"}, envs=2, workers=2) as pool:
        ray.kill(pool.actors[0], no_restart=False)  # restarting (a new process, a new environment) for seconds
        remote, times = collect(PromptTeam(), pool.slots, specs, temperature=1.0)
        assert (times.episodes_retried, times.episodes_lost) == (0, 0)
        assert played(remote) == played(local)
    assert not ray_processes()


def test_episodes_of_a_worker_gone_for_good_come_back_counted_as_failed():
    specs, _ = specs_and_local_episodes(count_per_seed=2)
    with RayEnvPool("mathchat-v0", {"split": "heldout"}, envs=1, workers=1) as pool:
        remote, times = collect(KillingTeam(pool, at=2, restart=False), pool.slots, specs, temperature=1.0)
    assert [e.episode for e in remote] == [0, 1, 2, 3]  # every episode asked for comes back, in order
    assert all(e.lost and not e.samples and e.outcome["valid"] is False for e in remote)
    assert "died" in remote[0].outcome["reason"] and "no environment left" in remote[3].outcome["reason"]
    assert remote[0].task_type == "arith"  # known from the turns it had played before its worker died
    assert (times.episodes_retried, times.episodes_lost) == (1, 4)  # the first one was retried, on nothing
    assert not ray_processes()


def test_too_many_workers_for_the_episodes_in_flight_is_refused_before_ray_starts():
    with pytest.raises(ValueError, match="rollout.workers must be >= 1 and <= the episodes in flight"):
        RayEnvPool("mathchat-v0", {}, envs=2, workers=3)
    assert not ray_processes()


def test_a_restarted_worker_refuses_steps_of_episodes_it_never_began():
    """Calls sent while Ray restarted a worker reach its fresh environments: they are lost, not stepped there."""
    from mappa_train.ray_rollout import EnvWorker
    from mappa_train.rollout import WorkerLost

    worker = EnvWorker("mathchat-v0", {"split": "heldout"}, 1, coach=("receipts", {}))
    try:
        task = worker.slots[0].env.unwrapped.tasks[0].id
        turn = worker.start(0, "try-1", EpisodeSpec(task, seed=0))
        assert turn.request is not None and turn.request[0] == "problem_solver"
        with pytest.raises(WorkerLost, match="holds no episode try-0"):
            worker.step(0, "try-0", r"\boxed{1}")  # an earlier try's step, sent before the restart
        assert worker.step(0, "try-1", r"\boxed{1}").request is not None  # the current try goes on
        assert worker.coach_snapshot() is None  # the receipts coach keeps no statistics
    finally:
        worker.close()
