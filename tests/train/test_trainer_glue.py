"""The trainer's own glue, on the ledger environment: what reaches TensorBoard, and how evaluation samples."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")

import ledger_env  # noqa: E402
from ledger_env import AGENTS, UNSCORED, LedgerEnv, LedgerTeam, amount  # noqa: E402

from mappa_train.config import TrainConfig  # noqa: E402
from mappa_train.learner import GroupStats  # noqa: E402
from mappa_train.rollout import EpisodeSpec, collect  # noqa: E402
from mappa_train.environments import Environments  # noqa: E402
from mappa_train.trainer import evaluate_team, log_step  # noqa: E402


class Writer:
    """Collects what would go to TensorBoard."""

    def __init__(self):
        self.scalars: dict[str, list[tuple[int, float]]] = {}

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))


class Team(LedgerTeam):
    agents = list(AGENTS)

    def group_of(self, agent):
        return agent


def test_logged_rewards_average_the_scored_actions_and_count_the_unscored():
    team = Team()
    specs = [EpisodeSpec("ledger/a", seed=0), EpisodeSpec("ledger/b", seed=1)]
    episodes, times = collect(team, [LedgerEnv(), LedgerEnv()], specs, temperature=1.0)
    samples = [s for e in episodes for s in e.samples]
    writer = Writer()
    log_step(writer, 5, team, episodes, samples, {a: GroupStats() for a in AGENTS}, times, 1.0, {"calls": 12},
             {"coach/bias/flags": 0.0})
    for agent in AGENTS:
        keys = [(e.task_id, agent, i) for e in episodes for i in range(sum(s.agent == agent for s in e.samples))]
        scored = [amount(*k) for k in keys if k not in UNSCORED]
        assert writer.scalars[f"agent/{agent}/reward"] == [(5, pytest.approx(np.mean(scored)))], agent
        assert writer.scalars[f"agent/{agent}/coach_score"] == [(5, pytest.approx(10 * np.mean(scored)))], agent
        assert writer.scalars[f"agent/{agent}/unscored_actions"] == [(5, sum(k in UNSCORED for k in keys))], agent
    assert writer.scalars["coach/unscored_actions"] == [(5, len(UNSCORED))]
    assert writer.scalars["coach/calls"] == [(5, 12.0)]
    assert writer.scalars["train/success_rate"] == [(5, 1.0)]
    assert "agent/scout/policy_loss" not in writer.scalars  # NaN (no update) is not logged as a number
    for episode in episodes:  # one ledger task per task type: the per-type reward is that episode's scored mean
        keys = [(episode.task_id, s.agent, s.action_index) for s in episode.samples]
        expected = np.mean([amount(*k) for k in keys if k not in UNSCORED])
        assert writer.scalars[f"train/reward/{episode.task_type}"] == [(5, pytest.approx(expected))]
    assert writer.scalars["coach/bias/flags"] == [(5, 0.0)]  # the running monitor's scalars, as given


def test_evaluation_samples_at_the_evaluation_temperature_one_episode_per_task():
    ledger_env.register()
    config = TrainConfig.from_dict({
        "env": {"id": ledger_env.ENV_ID, "coach": "receipts"}, "model": {"temperature": 1.0, "eval_temperature": 0.3},
        "eval": {"split": "train", "episodes": None}, "rollout": {"envs_in_flight": 2}, "run": {"progress": False},
    }).validate()
    team, writer = Team(), Writer()
    result = evaluate_team(team, config, Environments(config, None), writer, step=4)
    assert team.temperatures and set(team.temperatures) == {0.3}
    assert result["step"] == 4 and result["summary"]["n_episodes"] == 2  # ledger/a and ledger/b
    assert writer.scalars["eval/train/success_rate"] == [(4, 1.0)]


@pytest.mark.parametrize("eval_in_flight, widest_batch", [(0, 1), (4, 4)])
def test_evaluation_batches_as_many_episodes_as_eval_envs_in_flight_says(eval_in_flight, widest_batch):
    ledger_env.register()
    config = TrainConfig.from_dict({
        "env": {"id": ledger_env.ENV_ID, "coach": "receipts"}, "eval": {"split": "train", "episodes": 4,
                                                                         "envs_in_flight": eval_in_flight},
        "rollout": {"envs_in_flight": 1}, "run": {"progress": False},  # 0: evaluation runs as many as training
    }).validate()
    team = Team()
    result = evaluate_team(team, config, Environments(config, None), Writer(), step=0)
    assert max(team.calls) == widest_batch and result["summary"]["n_episodes"] == 4
    assert sum(team.calls) == sum(sum(plan.values()) for plan in ledger_env.PLANS.values()) * 2  # every action once
