"""Watching the coach while a run trains: is it answering, what did it leave unscored, is it biased?

The coach's scores are the rewards, so a run is only as good as its coach, and a coach's faults are
silent: an endpoint that never answers leaves every action unscored (nothing to train on), and a bias
is learned and amplified. The trainer therefore

* probes the coach before the first step (:func:`probe_coach`): one action it must score, or the run
  stops with the reason and the fix;
* counts unscored actions every step (:class:`UnscoredWatch`): a warning on screen when more than
  ``coach_watch.warn_unscored_share`` of a step went unscored, an error after
  ``coach_watch.stop_after_unscored_steps`` steps in a row with nothing to train on, and the totals in
  ``report.md``;
* keeps one running :class:`~mappa_env.coach.bias.BiasMonitor` over the whole run (:class:`BiasWatch`),
  fed every step with the training actions tagged graded or not (:func:`~mappa_env.coach.bias.action_rows`),
  looked at once per step (the pre-registered alert, valid over all looks; docs/bias.md), saved in
  checkpoints and restored by ``--resume``, logged under ``coach/bias/...`` and summarised in
  ``report.md``. With ``coach_watch.calibrate`` its calibration is applied to the rewards online
  (environments get it as their ``reward_calibration``); the records keep the raw scores, and the monitor
  only ever sees raw scores;
* with ``coach_watch.audit_every`` re-scores a fixed audit set (:class:`AuditSet`: the scripted team and
  faulty teams on both task types, recorded once) with the run's coach every N steps and logs its gap
  between task types on matched actions under ``coach/bias/audit/...``: the same code on both task types,
  so its gap is the coach's bias by construction.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mappa_env.coach.bias import BiasEstimate, BiasMonitor, action_rows, bias_test
from mappa_env.error import Error
from mappa_env.records import CoachRequest, RoleInfo, StepRecord, unscored_reason

from mappa_train.rollout import ActionSample, EpisodeResult


class CoachUnavailableError(Error, RuntimeError):
    """The coach cannot score actions: training would have nothing to learn from."""


def probe_coach(coach: Any, *, env_id: str, agents: Sequence[str], task_id: str, task_type: str) -> None:
    """Have ``coach`` score one small action before training; raise :class:`CoachUnavailableError` if it cannot.

    The probe is unique (a fresh id in its prompt), so a response cache cannot answer it for a coach
    whose endpoint is down now.
    """
    step = StepRecord(agent=agents[0], action_index=0, action="```python\nprint('probe')\n```", code="print('probe')",
                      num_code_blocks=1, status="ok", stdout="probe\n", ends_stage=False)
    request = CoachRequest(
        env_id=env_id, task_id=task_id, task_type=task_type, step=step, role_instructions="(a probe of the coach)",
        team=tuple(RoleInfo(agent) for agent in agents), task_description="(a probe of the coach)",
        observation=f"(probe {uuid.uuid4().hex}: is the coach answering?)",
    )
    try:
        verdict = coach.score(request)
    except Exception as exc:  # noqa: BLE001 - any failure means the same to the user: no coach
        raise CoachUnavailableError(_unavailable(coach, f"{type(exc).__name__}: {exc}")) from exc
    if verdict.score is None:
        raise CoachUnavailableError(_unavailable(coach, verdict.rationale))


def _unavailable(coach: Any, why: str) -> str:
    name = getattr(coach, "name", type(coach).__name__)
    endpoint = getattr(coach, "base_url", None)
    where = f" at {endpoint}" if endpoint else ""
    fix = (f"check that the server{where} is running and serves the model (e.g. `curl {endpoint}/models`), "
           if endpoint else "check the coach's settings (env.coach, env.coach_kwargs), ")
    return (f"the coach {name}{where} could not score a probe action before training ({why}); every action would go "
            f"unscored and the run would train on nothing. Fix: {fix}or train with --env.coach receipts.")


class UnscoredWatch:
    """Counts the actions the coach left unscored, step by step and over the run."""

    def __init__(self, *, warn_share: float, stop_after: int):
        self.warn_share, self.stop_after = warn_share, stop_after
        self.actions = 0
        self.unscored = 0
        self.by_reason: Counter[str] = Counter()
        self.steps_without_rewards = 0

    def observe(self, step: int, samples: Sequence[ActionSample]) -> str | None:
        """Count one step's actions; the warning to show, if any.

        Raises:
            CoachUnavailableError: ``stop_after`` steps in a row had no scored action.
        """
        unscored = [s for s in samples if s.reward is None]
        self.actions += len(samples)
        self.unscored += len(unscored)
        self.by_reason.update(unscored_reason(s.step.get("verdict")) for s in unscored)
        self.steps_without_rewards = self.steps_without_rewards + 1 if samples and len(unscored) == len(samples) else 0
        if self.stop_after and self.steps_without_rewards >= self.stop_after:
            raise CoachUnavailableError(
                f"{self.steps_without_rewards} steps in a row (up to step {step}) had no scored action to train on "
                f"(unscored: {_reasons(Counter(unscored_reason(s.step.get('verdict')) for s in unscored))}); check the coach, or raise "
                "coach_watch.stop_after_unscored_steps (0: never stop)"
            )
        if samples and len(unscored) / len(samples) > self.warn_share:
            return (f"step {step}: the coach left {len(unscored)} of {len(samples)} actions unscored "
                    f"({_reasons(Counter(unscored_reason(s.step.get('verdict')) for s in unscored))}); they are not trained on")
        return None

    def summary(self) -> str:
        """One sentence for ``report.md``."""
        if not self.actions:
            return "No training action was coached."
        line = f"The coach scored {self.actions - self.unscored} of {self.actions} training actions"
        return line + (f"; unscored: {self.unscored} ({_reasons(self.by_reason)})." if self.unscored else "; none unscored.")

    def state_dict(self) -> dict[str, Any]:
        return {"actions": self.actions, "unscored": self.unscored, "by_reason": dict(self.by_reason),
                "steps_without_rewards": self.steps_without_rewards}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.actions, self.unscored = int(state["actions"]), int(state["unscored"])
        self.by_reason = Counter(state["by_reason"])
        self.steps_without_rewards = int(state["steps_without_rewards"])


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))


class BiasWatch:
    """One bias monitor over the whole run, fed every step with the coach's raw scores, and the audit set.

    Written only between steps (:meth:`observe`, :meth:`audit`, in the trainer's thread, after every episode
    of the step has finished) and only read while episodes run (:meth:`calibrate`, from environment
    threads): that order is what makes sharing it between threads safe without a lock.
    """

    def __init__(self, *, min_count: int, threshold: float, alpha: float = 0.01, min_tasks: int = 5,
                 max_rows: int = 20_000, audit_every: int = 0):
        self.monitor = BiasMonitor(min_count=min_count, threshold=threshold, alpha=alpha, min_tasks=min_tasks,
                                   max_rows=max_rows)
        self.audit_every = audit_every
        self.audit_set: AuditSet | None = None
        self.audits: list[dict[str, Any]] = []  # {"step", "scalars"} of every audit so far

    @classmethod
    def from_config(cls, watch: Any) -> BiasWatch:
        """The watch ``coach_watch`` (a :class:`~mappa_train.config.CoachWatchConfig`) describes (audit set not loaded)."""
        return cls(min_count=watch.bias_min_count, threshold=watch.bias_threshold, alpha=watch.bias_alpha,
                   min_tasks=watch.bias_min_tasks, max_rows=watch.bias_max_rows, audit_every=watch.audit_every)

    def observe(self, episodes: Sequence[EpisodeResult], step: int | None = None) -> BiasEstimate:
        """Add one step's actions (graded or not, by task, role and outcome), then look once at the alert."""
        for episode in episodes:
            steps = [{**sample.step, "agent": sample.agent} for sample in episode.samples]
            for row in action_rows(steps, episode.outcome, task_id=episode.task_id, task_type=episode.task_type,
                                   episode=f"{step}:{episode.episode}"):
                self.monitor.add(row)
        return self.monitor.look(step)

    def calibrate(self, score: float, *, task_type: str, role: str, success: bool | None) -> float:
        """The monitor's calibration of ``score`` (an environment's ``reward_calibration``)."""
        return self.monitor.calibrate(score, task_type=task_type, role=role, success=success)

    def scalars(self) -> dict[str, float]:
        """``coach/bias/...`` tags (:meth:`BiasMonitor.scalars`)."""
        return self.monitor.scalars()

    def audit_due(self, step: int) -> bool:
        return self.audit_set is not None and self.audit_every > 0 and step % self.audit_every == 0

    def audit(self, coach: Any, step: int) -> dict[str, float]:
        """Re-score the audit set with ``coach``; its ``coach/bias/audit/...`` scalars (also kept for the report)."""
        assert self.audit_set is not None
        scalars = self.audit_set.rescore(coach).scalars()
        self.audits.append({"step": step, "scalars": scalars})
        return scalars

    def summary(self) -> list[str]:
        """Markdown lines for ``report.md``: the alert, the pooled estimate, the audit, then the descriptive groups."""
        m = self.monitor
        plan = (f"pre-registered: regression minus classification on graded actions at equal quality and role, "
                f"task-clustered errors, alpha {m.alpha:g} spent over {m.looks} look{'' if m.looks == 1 else 's'}")
        if m.alert is not None:
            where = f"step {m.alert_step}" if m.alert_step is not None else f"look {m.alert.look}"
            lines = [f"Bias alert: **fired** at {where} ({plan}): {m.drift()[0].message}.", ""]
        else:
            lines = [f"Bias alert: not fired ({plan}).", ""]
        last = m.last
        lines += [f"Pooled estimate at the latest look: {last.message}." if last is not None else
                  "Pooled estimate: no look yet.", ""]
        if self.audits:
            latest = self.audits[-1]["scalars"]
            gap = latest.get("coach/bias/audit/gap")
            est = latest.get("coach/bias/audit/estimate")
            lines += [f"Audit set (re-scored {len(self.audits)} time{'' if len(self.audits) == 1 else 's'}, last at step "
                      f"{self.audits[-1]['step']}; {latest.get('coach/bias/audit/actions', 0):.0f} actions): regression "
                      f"minus classification on matched actions "
                      + ("n/a" if gap is None else f"{gap:+.2f} points")
                      + ("" if est is None else f", at equal quality and role {est:+.2f} "
                         f"(se {latest['coach/bias/audit/se']:.2f})") + ".", ""]
        notable = [c for c in m.comparisons() if c.notable]
        lines += ["Descriptive, not alarms: ungraded actions differ by task type for "
                  + (", ".join(f"the {c.role} ({c.outcome}: {c.gap:+.2f}, se {c.se:.2f})" for c in notable) or "no role")
                  + "; mean score per group over all actions:", ""]
        groups = m.groups()
        if groups:
            lines += ["| task type | role | outcome | scored | unscored | mean score |", "|---|---|---|---:|---:|---:|"]
            lines += [f"| {t} | {r} | {o} | {g.count} | {g.unscored} | {g.mean:.2f} |" if g.count else
                      f"| {t} | {r} | {o} | 0 | {g.unscored} | n/a |" for (t, r, o), g in groups.items()]
        return lines

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor.to_dict(), "audits": self.audits}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "version" in state:  # a checkpoint of the monitor alone (before the audit set)
            state = {"monitor": state, "audits": []}
        self.monitor = BiasMonitor.from_dict(state["monitor"])
        self.audits = list(state["audits"])


class AuditSet:
    """Recorded coach requests on both task types, re-scored by a run's coach: a bias test by construction.

    The episodes are those of the scripted ``dsbench-v0`` team and of faulty teams (``ScriptedTeam(fault=...)``)
    on the same tasks of each task type, recorded once with the receipts coach (:meth:`build`), or loaded
    from an evaluation results file with recorded requests (:meth:`load`, ``python -m mappa_env evaluate``).
    Each episode's ``team`` (or the file's ``policy``) names its team. Matched actions are those of the same
    team, role and action number; the gap on them is the mean over matched actions of the regression
    mean minus the classification mean: the same code judged on the two task types.
    """

    def __init__(self, episodes: Sequence[Mapping[str, Any]]):
        if not episodes:
            raise ValueError("an audit set needs at least one recorded episode")
        self.episodes = [dict(e) for e in episodes]

    @classmethod
    def load(cls, path: str | Path) -> AuditSet:
        """The recorded episodes of ``path`` (a results file of ``python -m mappa_env evaluate``, or .jsonl)."""
        from mappa_env.coach.offline import load_episodes

        episodes = load_episodes(path)
        policy = None
        if Path(path).suffix != ".jsonl":
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            policy = data.get("policy") if isinstance(data, dict) else None
        return cls([{**e, "team": e.get("team", policy or "team")} for e in episodes])

    @classmethod
    def build(cls, env_id: str, *, split: str, tasks_per_type: int, faults: Sequence[str], sandbox: str = "local",
              seed: int = 0) -> AuditSet:
        """Play the scripted team and one faulty team per ``faults`` entry on the first ``tasks_per_type``
        tasks of each task type of ``split``, recording every coach request (receipts coach)."""
        import mappa_env
        from mappa_env.coach import ReceiptsCoach
        from mappa_env.evaluation import run_episode
        from mappa_env.policies.scripted import ScriptedTeam

        env = mappa_env.make(env_id, split=split, coach=ReceiptsCoach(), sandbox=sandbox)
        try:
            by_type: dict[str, list[str]] = {}
            for task in env.unwrapped.tasks:
                by_type.setdefault(task.task_type, []).append(task.id)
            episodes = []
            for fault in (None, *faults):
                team = ScriptedTeam("scripted" if fault is None else f"scripted-{fault}", fault=fault)
                for task_type in sorted(by_type):
                    for task_id in by_type[task_type][:tasks_per_type]:
                        episode = run_episode(env, team, seed=seed, task_id=task_id, record_requests=True)
                        episodes.append({**episode, "team": team.name})
        finally:
            env.close()
        return cls(episodes)

    def save(self, path: str | Path) -> Path:
        """Write the audit set as a results file :meth:`load` (and ``python -m mappa_env coach``) reads."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"episodes": self.episodes}, default=str), encoding="utf-8")
        return path

    def rescore(self, coach: Any) -> AuditResult:
        """Every recorded action scored by ``coach`` (:func:`mappa_env.coach.offline.recoach`), tagged graded or not."""
        from mappa_env.coach.offline import recoach

        tags = {}
        for number, episode in enumerate(self.episodes):
            rows = action_rows(episode["records"], episode.get("outcome"), task_id=episode["task_id"],
                               task_type=episode["task_type"], episode=number)
            for record, row in zip(episode["records"], rows):
                tags[(number, record["agent"], record["action_index"] + 1)] = row
        rows = []
        for r in recoach(self.episodes, coach):
            tag = tags[(r["episode"], r["role"], r["action"])]
            rows.append({"score": r["score"], "task_type": r["task_type"], "role": r["role"], "task_id": r["task_id"],
                         "episode": r["episode"], "graded": tag.graded, "quality": tag.quality, "success": tag.success,
                         "team": self.episodes[r["episode"]]["team"], "action": r["action"]})
        return AuditResult(rows)


class AuditResult:
    """The audit set's rows as one coach scored them, and their gap between task types."""

    PAIR = ("regression", "classification")

    def __init__(self, rows: Sequence[Mapping[str, Any]]):
        self.rows = list(rows)

    def matched_gaps(self) -> dict[tuple[str, str, int], float]:
        """``(team, role, action) → regression mean − classification mean`` where both task types have a score."""
        scores: dict[tuple[str, str, int], dict[str, list[float]]] = {}
        for r in self.rows:
            if r["score"] is not None and r["task_type"] in self.PAIR:
                scores.setdefault((r["team"], r["role"], r["action"]), {}).setdefault(r["task_type"], []).append(r["score"])
        high, low = self.PAIR
        return {key: sum(by[high]) / len(by[high]) - sum(by[low]) / len(by[low])
                for key, by in sorted(scores.items()) if high in by and low in by}

    def estimate(self) -> BiasEstimate:
        """:func:`~mappa_env.coach.bias.bias_test` on the audit's graded actions (a single test at alpha 0.05)."""
        return bias_test(self.rows, alpha=0.05)

    def scalars(self) -> dict[str, float]:
        """``coach/bias/audit/{gap,matched,actions,unscored}``, ``coach/bias/audit/<role>/gap`` and, once
        estimable, ``coach/bias/audit/{estimate,se}``."""
        gaps = self.matched_gaps()
        out = {"coach/bias/audit/actions": float(sum(r["score"] is not None for r in self.rows)),
               "coach/bias/audit/unscored": float(sum(r["score"] is None for r in self.rows)),
               "coach/bias/audit/matched": float(len(gaps))}
        if gaps:
            out["coach/bias/audit/gap"] = sum(gaps.values()) / len(gaps)
        for role in sorted({role for _, role, _ in gaps}):
            mine = [g for (_, r, _), g in gaps.items() if r == role]
            out[f"coach/bias/audit/{role}/gap"] = sum(mine) / len(mine)
        est = self.estimate()
        if est.estimable:
            out["coach/bias/audit/estimate"], out["coach/bias/audit/se"] = est.estimate, est.se
        return out


def load_audit_set(watch: Any, *, env_id: str, split: str, sandbox: str, seed: int = 0) -> AuditSet:
    """The audit set ``coach_watch`` asks for: ``audit_file`` when given, else built now on ``split``."""
    if watch.audit_file:
        return AuditSet.load(watch.audit_file)
    return AuditSet.build(env_id, split=split, tasks_per_type=watch.audit_tasks, faults=watch.audit_faults,
                          sandbox=sandbox, seed=seed)
