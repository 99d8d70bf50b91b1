"""The run watches its coach: a coach that cannot answer stops it early, unscored actions are counted and
reported, and a biased coach is flagged (and calibrated away when asked) while the run trains."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")

import mappa_env.coach  # noqa: E402
from mappa_env.coach import ReceiptsCoach, SyncCoach, Verdict  # noqa: E402
from mappa_train.coach_watch import CoachUnavailableError, UnscoredWatch, probe_coach  # noqa: E402
from mappa_train.config import TrainConfig  # noqa: E402
from mappa_train.rollout import ActionSample  # noqa: E402
from mappa_train.trainer import train  # noqa: E402

AGENTS = ("data_engineer", "modeler", "analyst")


def tiny(out, **sections):
    """The shipped tiny config (dsbench-v0, tiny-random model, receipts coach) with sections overridden."""
    from mappa_train.config import load_config

    config = load_config("tiny", {"run": {"output_dir": str(out), "progress": False, "sample_every": 0}})
    data = config.to_dict()
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return TrainConfig.from_dict(data).validate()


def sample(reward, reason=None):
    verdict = {"score": None if reward is None else reward * 10, "rationale": "", "coach": "c"}
    if reason:
        verdict["unscored_reason"] = reason
    return ActionSample(agent="modeler", episode=0, task_id="t", task_type="regression", action_index=0,
                        generation=None, reward=reward, step={"verdict": verdict})


def test_the_unscored_watch_warns_counts_and_stops_after_steps_with_nothing_to_train_on():
    watch = UnscoredWatch(warn_share=0.25, stop_after=2)
    assert watch.observe(1, [sample(0.5), sample(0.6), sample(0.7), sample(None, "api_error")]) is None  # 1 of 4
    warning = watch.observe(2, [sample(0.5), sample(None, "api_error"), sample(None, "malformed")])
    assert warning == "step 2: the coach left 2 of 3 actions unscored (api_error: 1, malformed: 1); they are not trained on"
    assert "unscored" in watch.observe(3, [sample(None, "api_error")])  # one step with nothing: a warning only
    with pytest.raises(CoachUnavailableError, match=r"2 steps in a row \(up to step 4\) had no scored action"):
        watch.observe(4, [sample(None, "api_error")])
    assert watch.summary() == ("The coach scored 4 of 9 training actions; unscored: 5 (api_error: 4, malformed: 1).")
    again = UnscoredWatch(warn_share=0.25, stop_after=2)
    again.load_state_dict(watch.state_dict())
    assert again.summary() == watch.summary() and again.steps_without_rewards == 2


def test_the_probe_passes_a_coach_that_scores_and_names_the_endpoint_and_fix_of_one_that_cannot():
    probe_coach(ReceiptsCoach(), env_id="dsbench-v0", agents=AGENTS, task_id="t", task_type="regression")
    from mappa_env.coach import OpenAICoach

    dead = OpenAICoach("judge", base_url="http://127.0.0.1:9/v1", cache_dir=None, max_retries=0, timeout_s=5)
    try:
        with pytest.raises(CoachUnavailableError) as info:
            probe_coach(dead, env_id="dsbench-v0", agents=AGENTS, task_id="t", task_type="regression")
    finally:
        dead.close()
    message = str(info.value)
    assert "openai:judge at http://127.0.0.1:9/v1 could not score a probe action" in message
    assert "curl http://127.0.0.1:9/v1/models" in message and "--env.coach receipts" in message


def test_a_run_whose_coach_never_answers_stops_before_the_first_step(tmp_path):
    coach_kwargs = {"base_url": "http://127.0.0.1:9/v1", "cache_dir": None, "max_retries": 0, "timeout_s": 5}
    config = tiny(tmp_path / "run", env={"coach": "openai:judge", "coach_kwargs": coach_kwargs})
    with pytest.raises(CoachUnavailableError, match="could not score a probe action before training"):
        train(config)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing half-done left behind


class ProbeOnly(SyncCoach):
    """Answers the probe, then nothing: an endpoint that went down after the run started."""

    name = "probe-only"

    def score(self, request):
        if request.observation.startswith("(probe "):
            return Verdict(5.0, "probe answered", self.name)
        return Verdict(None, "coach call failed: connection refused", self.name, {"unscored_reason": "api_error"})


def test_a_run_with_nothing_to_train_on_stops_with_the_reason_and_warned_on_the_way(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mappa_env.coach, "make_coach", lambda spec, **kwargs: ProbeOnly())
    config = tiny(tmp_path / "run", run={"steps": 4}, eval={"before": False, "after": False},
                  coach_watch={"stop_after_unscored_steps": 2})
    with pytest.raises(CoachUnavailableError, match=r"2 steps in a row \(up to step 2\) had no scored action.*api_error"):
        train(config)
    assert "step 1: the coach left" in capsys.readouterr().err


class RegressionLover(ReceiptsCoach):
    """The receipts rules, plus 1.5 points for every action on a regression task: a planted bias."""

    name = "regression-lover"

    def score(self, request):
        verdict = super().score(request)
        if request.task_type == "regression" and verdict.score is not None:
            return Verdict(min(10.0, verdict.score + 1.5), verdict.rationale, self.name, verdict.details)
        return verdict


@pytest.mark.slow
def test_a_planted_bias_is_flagged_within_the_run_and_calibration_removes_it_from_the_rewards(tmp_path, monkeypatch):
    from test_cli import _scalars

    monkeypatch.setattr(mappa_env.coach, "make_coach", lambda spec, **kwargs: RegressionLover())
    config = tiny(tmp_path / "run", run={"steps": 3, "checkpoint_every": 0}, rollout={"tasks_per_step": 4},
                  eval={"before": False, "after": False}, coach_watch={"bias_min_count": 2, "calibrate": True})
    out = train(config)
    scalars = _scalars(out)
    assert scalars["coach/bias/flags"][-1][1] >= 1  # the monitor sees the coach's raw scores: the bias is flagged
    gaps = {step: value for step, value in scalars["coach/bias/gap/modeler/failure"]}
    assert gaps[3] == pytest.approx(1.5, abs=0.01)
    # step 1: nothing calibrated yet, the rewards carry the planted 0.15 (1.5 points x reward scale 0.1);
    # from step 2 on, the monitor has seen both task types and the rewards no longer favour regression
    reward = {t: dict(scalars[f"train/reward/{t}"]) for t in ("regression", "classification")}
    assert reward["regression"][1] - reward["classification"][1] > 0.1
    assert reward["regression"][3] - reward["classification"][3] == pytest.approx(0.0, abs=0.02)
    report = (out / "report.md").read_text()
    assert "Bias flags:" in report and "regression" in report and "The coach scored" in report


def test_the_bias_watch_runs_over_the_whole_run_and_survives_a_checkpoint():
    from mappa_train.coach_watch import BiasWatch
    from mappa_train.rollout import EpisodeResult

    def step_of(score_by_type):
        return [EpisodeResult(i, f"t{i}", task_type, 0, {"valid": False}, [sample(score / 10)])
                for i, (task_type, score) in enumerate(score_by_type)]

    watch = BiasWatch(min_count=2, threshold=0.5)
    watch.observe(step_of([("regression", 6.5), ("classification", 5.0)]))
    watch.observe(step_of([("regression", 6.5), ("classification", 5.0)]))
    scalars = watch.scalars()
    assert scalars["coach/bias/regression/modeler/failure/count"] == 2.0  # both steps, not the last one alone
    assert scalars["coach/bias/gap/modeler/failure"] == pytest.approx(1.5) and scalars["coach/bias/flags"] == 1.0
    assert watch.calibrate(6.5, task_type="regression", role="modeler", success=False) == pytest.approx(5.75)
    restored = BiasWatch(min_count=20, threshold=3.0)
    restored.load_state_dict(watch.state_dict())
    assert restored.scalars() == scalars and restored.summary() == watch.summary()
    assert "Bias flags: 1:" in watch.summary()[0]
