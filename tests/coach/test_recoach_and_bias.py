"""Coaching recorded episodes again (`python -m mappa_env coach`), and the bias monitor on them.

The episodes are recorded once with real sandboxes: the scripted team and a faulty team on three
classification and three regression tasks. The same recordings are then coached by the unbiased
receipts coach and by one with a planted bias (+1.5 on regression tasks): only the second is flagged.
"""

from __future__ import annotations

import json

import pytest

import mappa_env
from mappa_env.__main__ import main
from mappa_env.coach import ReceiptsCoach, SyncCoach, Verdict
from mappa_env.coach.bias import episode_rows, monitor_from_records
from mappa_env.coach.offline import load_episodes, recoach
from mappa_env.evaluation import run_episode
from mappa_env.policies import make_policy
from mappa_env.tasks import load_tasks


class PlantedBias(SyncCoach):
    """The receipts coach, plus 1.5 points for every action on a regression task."""

    name = "planted-bias"

    def score(self, request):
        verdict = ReceiptsCoach().score(request)
        bonus = 1.5 if request.task_type == "regression" else 0.0
        return Verdict(min(10.0, verdict.score + bonus), verdict.rationale, self.name)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    heldout = load_tasks("builtin", split="heldout")
    picks = [t.id for t in heldout if t.task_type == "classification"][:3] + [t.id for t in heldout if t.task_type == "regression"][:3]
    episodes = []
    for policy in ("scripted", "buggy-missing-x-test"):
        for task_id in picks:
            env = mappa_env.make("dsbench-v0", split="heldout")
            try:
                episodes.append(run_episode(env, make_policy(policy), seed=0, task_id=task_id, record_requests=True))
            finally:
                env.close()
    path = tmp_path_factory.mktemp("recorded") / "results.json"
    path.write_text(json.dumps({"episodes": episodes}))
    return path


def tagged(rows, episodes):
    """Recoach rows with the bias monitor's graded/quality tags, read from the recorded episodes."""
    tags = {}
    for number, episode in enumerate(episodes):
        for record, row in zip(episode["records"], episode_rows(episode, number=number)):
            tags[(number, record["agent"], record["action_index"] + 1)] = row
    return [{**r, "graded": tags[(r["episode"], r["role"], r["action"])].graded,
             "quality": tags[(r["episode"], r["role"], r["action"])].quality,
             "success": tags[(r["episode"], r["role"], r["action"])].success} for r in rows]


def flags(rows, episodes):
    monitor = monitor_from_records(tagged(rows, episodes), min_count=6, min_tasks=3)
    return [flag.message for flag in monitor.drift()]


@pytest.mark.slow
def test_recoaching_with_the_same_coach_reproduces_the_recorded_scores(recorded):
    rows = recoach(load_episodes(recorded), ReceiptsCoach())
    assert len(rows) == 12 * 6
    assert all(r["score"] == r["recorded_score"] for r in rows)


@pytest.mark.slow
def test_a_hindsight_coach_recoaches_with_each_episodes_outcome_and_trajectory(recorded):
    class Looking(SyncCoach):
        name, timing = "looking", "hindsight"

        def __init__(self):
            self.seen = []

        def score(self, request):
            self.seen.append((request.outcome, len(request.trajectory)))
            return Verdict(5.0, "looked", self.name)

    episodes = load_episodes(recorded)
    looking = Looking()
    recoach(episodes, looking)
    assert len(looking.seen) == sum(len(e["records"]) for e in episodes)
    assert all(outcome is not None and length > 0 for outcome, length in looking.seen)
    # the receipts rules in hindsight blame the data engineer who never saved X_test.pkl (online: 6, it cannot know)
    faulty = [n for n, e in enumerate(episodes) if any(r["agent"] == "analyst" and r["status"] != "ok" for r in e["records"])]
    rows = [r for r in recoach(episodes, ReceiptsCoach(timing="hindsight")) if r["episode"] in faulty]
    engineer = [r for r in rows if r["role"] == "data_engineer" and r["status"] == "ok"]
    assert engineer and min(r["score"] for r in engineer) == 1 and min(r["recorded_score"] for r in engineer) > 1


@pytest.mark.slow
def test_bias_monitor_flags_a_planted_bias_and_not_the_unbiased_coach(recorded):
    episodes = load_episodes(recorded)
    assert flags(recoach(episodes, ReceiptsCoach()), episodes) == []
    planted = flags(recoach(episodes, PlantedBias()), episodes)
    assert planted, "the +1.5 regression bias went unnoticed"
    assert all(message.startswith("regression actions") for message in planted)
    assert any("of all roles" in message for message in planted)


class RaisesFor(SyncCoach):
    """Raises ``error`` on every action of ``role`` and scores every other action ``score``."""

    def __init__(self, name: str, role: str, error: Exception, score: float):
        self.name, self.role, self.error, self.fixed = name, role, error, score

    def score(self, request):
        if request.role == self.role:
            raise self.error
        return Verdict(self.fixed, "fine", self.name)


@pytest.mark.slow
def test_a_coach_that_raises_leaves_its_actions_unscored_and_the_others_are_recoached(recorded):
    rows = recoach(load_episodes(recorded), RaisesFor("flaky", "modeler", ConnectionError("endpoint unreachable"), 6.0))
    modeler = [r for r in rows if r["role"] == "modeler"]
    assert modeler and all(r["score"] is None and r["details"]["unscored_reason"] == "coach_error" for r in modeler)
    assert "ConnectionError: endpoint unreachable" in modeler[0]["rationale"]
    assert all(r["score"] == 6.0 for r in rows if r["role"] != "modeler")


def test_the_progress_bar_counts_every_action_including_the_ones_whose_coach_raised(recorded, capsys):
    def half_broken():
        return RaisesFor("half-broken", "analyst", TimeoutError("slow endpoint"), 5.0)

    episodes = load_episodes(recorded)
    recoach(episodes, half_broken())
    assert "scoring with" not in capsys.readouterr().err  # off unless asked for
    rows = recoach(episodes, half_broken(), progress=True)
    bar = capsys.readouterr().err
    assert any(r["score"] is None for r in rows)
    assert "scoring with half-broken" in bar and f"{len(rows)}/{len(rows)}" in bar


def test_coach_cli_prints_the_per_action_table(recorded, capsys):
    assert main(["coach", "--episodes", str(recorded), "--coach", "receipts"]) == 0
    out = capsys.readouterr().out
    assert "| ep | task | agent | # | status | recorded | score | rationale |" in out
    assert "crashed only because X_test.pkl was never saved" in out
    assert "72 actions, 72 scored, 0 unscored" in out


def test_coach_cli_explains_missing_recordings(tmp_path, capsys):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"episodes": [{"agents": {}, "outcome": {"valid": False}}]}))
    assert main(["coach", "--episodes", str(path), "--coach", "receipts"]) == 2
    assert "no recorded coach requests" in capsys.readouterr().err


@pytest.mark.slow
def test_coach_cli_recoaches_with_a_local_model_in_batches(recorded, tiny_chat_model, capsys):
    options = {"force_score_line": True, "max_new_tokens": 24, "cache_dir": None, "batch_size": 8,
               "max_observation_chars": 200}
    argv = ["coach", "--episodes", str(recorded), "--coach", f"hf:{tiny_chat_model}", "--coach-kwargs", json.dumps(options)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "72 actions, 72 scored, 0 unscored" in out  # the random model's noise, forced into a score line
    assert "calls 72, cache hits 0, retries 0" in out and "cost $0.0000" in out


def test_coach_cli_refuses_unknown_coach_options_with_the_valid_ones(recorded, capsys):
    argv = ["coach", "--episodes", str(recorded), "--coach", "openai:gpt-4.1-mini", "--coach-kwargs", '{"base_ur": "x"}']
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has no argument 'base_ur'" in err and "Did you mean 'base_url'?" in err


def test_evaluate_cli_passes_coach_options_and_reports_bad_ones(tmp_path, capsys):
    argv = ["evaluate", "--episodes", "1", "--no-progress", "--output", str(tmp_path / "r.json"),
            "--coach", "receipts", "--coach-kwargs", '{"timng": "hindsight"}']
    assert main(argv) == 2  # a misspelt option: said so, with the right name, before any episode runs
    assert "Did you mean 'timing'?" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
