"""Rollout backend ray: the environments in Ray actors give the same episodes as local ones, and leave nothing running.

A local Ray cluster (started here, stopped here) with two worker actors holds the environments of
mathchat-v0; a scripted team whose replies depend only on the prompt plays the same episode specs on
them and on local environments, with the default receipts coach, so any difference is the backend's.
"""

from __future__ import annotations

import subprocess

import pytest

pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("ray", reason="the ray backend needs Ray (installed by the README's test line)")

import mappa_env  # noqa: E402

from mappa_train.policy import Generation  # noqa: E402
from mappa_train.ray_rollout import RayEnvPool  # noqa: E402
from mappa_train.rollout import EpisodeSpec, collect  # noqa: E402


class PromptTeam:
    """Replies that depend on the prompt alone: the executor prints a number read off its prompt, the others box it."""

    def encode_prompt(self, messages, reply_prefix=""):
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


def ray_processes() -> list[str]:
    found = subprocess.run(["pgrep", "-af", "raylet|gcs_server|ray::"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


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


def test_too_many_workers_for_the_episodes_in_flight_is_refused_before_ray_starts():
    with pytest.raises(ValueError, match="rollout.workers must be >= 1 and <= the episodes in flight"):
        RayEnvPool("mathchat-v0", {}, envs=2, workers=3)
    assert not ray_processes()
