"""``--rollout.backend ray`` in the trainer: the same run as ``local``, and a dying worker costs no episode unseen.

Both runs are the shipped tiny-math config (tiny random model, mathchat-v0, receipts coach) on a local Ray
cluster the trainer starts and stops itself.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("ray", reason="the ray backend needs Ray (installed by the README's test line)")

import ray  # noqa: E402

from mappa_train import ray_rollout  # noqa: E402
from mappa_train.config import ConfigError, TrainConfig, load_config  # noqa: E402
from mappa_train.policy import TeamModel  # noqa: E402
from mappa_train.report import read_scalars  # noqa: E402
from mappa_train.trainer import train  # noqa: E402
from ray_processes import ray_processes  # noqa: E402


def tiny_math(out, **sections):
    config = load_config("tiny-math", {"run": {"output_dir": str(out), "progress": False, "sample_every": 0}})
    data = config.to_dict()
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return TrainConfig.from_dict(data).validate()


def test_a_ray_run_trains_on_the_same_episodes_as_a_local_one(tmp_path):
    # one environment in flight: the generation calls, so the sampled actions, depend on nothing but the seeds
    one_at_a_time = {"rollout": {"envs_in_flight": 1, "workers": 1}, "eval": {"envs_in_flight": 1}, "run": {"steps": 1}}
    local = train(tiny_math(tmp_path / "local", **one_at_a_time))
    remote = train(tiny_math(tmp_path / "ray", **{**one_at_a_time, "rollout": {**one_at_a_time["rollout"], "backend": "ray"}}))

    evaluations = [json.loads((out / "evaluations.json").read_text()) for out in (local, remote)]
    assert evaluations[0] == evaluations[1] and set(evaluations[0]) == {"before", "after"}
    scalars = [read_scalars(out) for out in (local, remote)]
    for tag in ("train/reward/arith", "agent/code_executor/reward", "agent/code_executor/policy_loss"):
        assert scalars[1][tag] == scalars[0][tag], tag  # the same episodes, rewards and update
    assert scalars[1]["rollout/episodes_lost"] == [(1, 0.0)]
    assert not ray_processes()


def test_a_worker_killed_during_training_has_its_episodes_retried_and_counted(tmp_path, monkeypatch):
    pools = []

    class RecordedPool(ray_rollout.RayEnvPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    generate, calls = TeamModel.generate, []

    def generate_then_kill(self, requests, **kwargs):
        calls.append(len(requests))
        if len(calls) == 2:  # the training pool's first worker dies for good in the middle of step 1
            ray.kill(pools[0].actors[0], no_restart=True)
        return generate(self, requests, **kwargs)

    monkeypatch.setattr(ray_rollout, "RayEnvPool", RecordedPool)
    monkeypatch.setattr(TeamModel, "generate", generate_then_kill)
    out = train(tiny_math(tmp_path, rollout={"backend": "ray", "workers": 2}, eval={"before": False}))

    scalars = read_scalars(out)
    retried = [value for _, value in scalars["rollout/episodes_retried"]]
    # step 1 lost the episode in flight on the dead worker, step 2 its first start there: both played again
    assert retried == [1.0, 1.0] and [v for _, v in scalars["rollout/episodes_lost"]] == [0.0, 0.0]
    assert [v for _, v in scalars["rollout/episodes"]] == [2.0, 2.0]  # every step trained on both its episodes
    report = (out / "report.md").read_text()
    assert "Episodes whose worker died: 2 played again in training, 0 lost on every try" in report
    assert json.loads((out / "evaluations.json").read_text())["after"]["summary"]["n_episodes"] == 2
    assert (out / "final").is_dir() and not ray_processes()


def test_the_ray_backend_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict({"rollout": {"backend": "ray", "workers": 3, "envs_in_flight": 2},
                               "coach_watch": {"calibrate": True}}).validate()
    assert "rollout.workers must be >= 1 and <= rollout.envs_in_flight (2), got 3" in str(error.value)
    assert "coach_watch.calibrate needs rollout.backend local" in str(error.value)
    with pytest.raises(ConfigError, match="rollout.backend 'rya': use local or ray"):
        TrainConfig.from_dict({"rollout": {"backend": "rya"}}).validate()
