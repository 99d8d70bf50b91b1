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
                  eval={"before": False, "after": False},
                  coach_watch={"bias_min_count": 2, "bias_min_tasks": 2, "calibrate": True})
    out = train(config)
    scalars = _scalars(out)
    assert scalars["coach/bias/flags"][-1][1] == 1  # the monitor sees the coach's raw scores: the alert fired
    assert scalars["coach/bias/pooled/estimate"][-1][1] == pytest.approx(1.5, abs=0.01)  # on the graded actions
    gaps = {step: value for step, value in scalars["coach/bias/gap/modeler/failure"]}
    assert gaps[3] == pytest.approx(1.5, abs=0.01)
    # step 1: nothing calibrated yet, the rewards carry the planted 0.15 (1.5 points x reward scale 0.1);
    # from step 2 on, the monitor has seen both task types and the rewards no longer favour regression
    reward = {t: dict(scalars[f"train/reward/{t}"]) for t in ("regression", "classification")}
    assert reward["regression"][1] - reward["classification"][1] > 0.1
    assert reward["regression"][3] - reward["classification"][3] == pytest.approx(0.0, abs=0.02)
    report = (out / "report.md").read_text()
    assert "Bias alert: **fired**" in report and "Pooled estimate at the latest look: regression minus" in report
    assert "The coach scored" in report


def test_the_bias_watch_runs_over_the_whole_run_and_survives_a_checkpoint():
    from mappa_train.coach_watch import BiasWatch
    from mappa_train.rollout import EpisodeResult

    def step_of(score_by_type, step):
        return [EpisodeResult(i, f"t{step}-{i}", task_type, 0, {"valid": False, "metrics": {}},
                              [sample(5.0 / 10), sample(score / 10)])  # an ungraded action, then the graded last one
                for i, (task_type, score) in enumerate(score_by_type)]

    watch = BiasWatch(min_count=2, threshold=0.5, min_tasks=2)
    first = watch.observe(step_of([("regression", 6.5), ("classification", 5.0)], 1), step=1)
    assert not first.estimable and watch.monitor.looks == 0  # one task of each type: no look spent
    watch.observe(step_of([("regression", 6.5), ("classification", 5.0)], 2), step=2)
    scalars = watch.scalars()
    assert scalars["coach/bias/regression/modeler/failure/count"] == 4.0  # both steps, not the last one alone
    assert scalars["coach/bias/graded/count"] == 4.0 and scalars["coach/bias/ungraded/count"] == 4.0
    assert scalars["coach/bias/pooled/estimate"] == pytest.approx(1.5) and scalars["coach/bias/flags"] == 1.0
    assert scalars["coach/bias/pooled/look"] == 1.0 and watch.monitor.alert_step == 2
    # calibration still works on the raw group means (all four actions of each task type): 6.5 + 5.375 - 5.75
    assert watch.calibrate(6.5, task_type="regression", role="modeler", success=False) == pytest.approx(6.125)
    restored = BiasWatch(min_count=20, threshold=3.0)
    restored.load_state_dict(watch.state_dict())
    assert restored.scalars() == scalars and restored.summary() == watch.summary()
    assert watch.summary()[0].startswith("Bias alert: **fired** at step 2")
    assert "regression actions of all roles with graded quality score 1.50 points above classification" in watch.summary()[0]


def _recorded_episode(task_id, task_type, *, team, analyst_score, rpg):
    """A recorded episode (evaluation format 2) of two actions: the modeler's, then the analyst's graded one."""
    from mappa_env.records import CoachRequest, Outcome, RoleInfo, StepRecord, Verdict, requests_to_json

    outcome = Outcome(True, "ok", {"rpg": rpg}, task_id, task_type)
    records = [StepRecord("modeler", 0, "fit", verdict=Verdict(8.0, "", "receipts")),
               StepRecord("analyst", 0, "done", result=outcome, verdict=Verdict(analyst_score, "", "receipts"))]
    team_info = (RoleInfo("modeler"), RoleInfo("analyst"))
    requests = [CoachRequest("dsbench-v0", task_id, task_type, r, "", team_info, "task", "obs",
                             outcome=outcome if i == 1 else None) for i, r in enumerate(records)]
    return {"task_id": task_id, "task_type": task_type, "outcome": outcome.to_info(), "format_version": 2,
            "records": [r.to_dict() for r in records], "coach_requests": requests_to_json(requests, records), "team": team}


class StepCoach(SyncCoach):
    """Scores what was recorded for the modeler; the analyst by quality, plus ``tilt`` on regression."""

    name = "step-coach"

    def __init__(self, tilt):
        self.tilt = tilt

    def score(self, request):
        if request.role == "modeler":
            return Verdict(8.0, "", self.name)
        base = 2.0 + 6.0 * request.step.result.metrics["rpg"]
        return Verdict(min(10.0, base + (self.tilt if request.task_type == "regression" else 0.0)), "", self.name)


def test_the_audit_set_gap_on_matched_actions_is_the_coach_bias(tmp_path):
    from mappa_train.coach_watch import AuditSet, BiasWatch

    episodes = [_recorded_episode(f"{t}-{i}", t, team=team, analyst_score=5.0, rpg=0.2 + 0.1 * i)
                for team in ("scripted", "scripted-wrong-columns") for t in ("classification", "regression") for i in range(3)]
    audit = AuditSet.load(AuditSet(episodes).save(tmp_path / "audit.json"))
    fair = audit.rescore(StepCoach(0.0)).scalars()
    assert fair["coach/bias/audit/gap"] == pytest.approx(0.0) and fair["coach/bias/audit/analyst/gap"] == pytest.approx(0.0)
    assert fair["coach/bias/audit/actions"] == 24.0 and fair["coach/bias/audit/matched"] == 4.0  # 2 teams x 2 roles
    tilted = audit.rescore(StepCoach(1.5)).scalars()
    assert tilted["coach/bias/audit/analyst/gap"] == pytest.approx(1.5) and tilted["coach/bias/audit/modeler/gap"] == 0.0
    assert tilted["coach/bias/audit/gap"] == pytest.approx(0.75)  # the mean over matched (team, role, action)
    assert tilted["coach/bias/audit/estimate"] == pytest.approx(1.5)  # graded actions, at equal quality
    watch = BiasWatch(min_count=2, threshold=0.5, audit_every=2)
    watch.audit_set = audit
    assert not watch.audit_due(1) and watch.audit_due(4)
    assert watch.audit(StepCoach(1.5), 4) == tilted
    assert any(line.startswith("Audit set (re-scored 1 time, last at step 4; 24 actions): regression minus "
                               "classification on matched actions +0.75 points") for line in watch.summary())
