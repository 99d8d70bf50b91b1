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
  merged every step, saved in checkpoints and restored by ``--resume``, logged under ``coach/bias/...``
  and summarised in ``report.md``. With ``coach_watch.calibrate`` its calibration is applied to the
  rewards online (environments get it as their ``reward_calibration``); the records keep the raw scores,
  and the monitor only ever sees raw scores.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from mappa_env.coach.bias import BiasMonitor
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
    """One bias monitor over the whole run, fed every step with the coach's raw scores.

    Written only between steps (:meth:`observe`, in the trainer's thread, after every episode of the step
    has finished) and only read while episodes run (:meth:`calibrate`, from environment threads): that
    order is what makes sharing it between threads safe without a lock.
    """

    def __init__(self, *, min_count: int, threshold: float):
        self.monitor = BiasMonitor(min_count=min_count, threshold=threshold)

    def observe(self, episodes: Sequence[EpisodeResult]) -> None:
        """Add one step's actions, grouped by task type, role and the episode's outcome."""
        for episode in episodes:
            success = bool(episode.outcome.get("valid"))
            for sample in episode.samples:
                score = (sample.step.get("verdict") or {}).get("score")
                self.monitor.update(score, task_type=episode.task_type, role=sample.agent, success=success)

    def calibrate(self, score: float, *, task_type: str, role: str, success: bool | None) -> float:
        """The monitor's calibration of ``score`` (an environment's ``reward_calibration``)."""
        return self.monitor.calibrate(score, task_type=task_type, role=role, success=success)

    def scalars(self) -> dict[str, float]:
        """``coach/bias/...`` tags (:meth:`BiasMonitor.scalars`)."""
        return self.monitor.scalars()

    def summary(self) -> list[str]:
        """Markdown lines for ``report.md``: the flags, then the mean score per group."""
        flags = self.monitor.drift()
        lines = [f"Bias flags: {len(flags)}" + (":" if flags else " (no comparable groups differ by "
                 f"{self.monitor.threshold:g} points or more, significantly)."), ""]
        lines += [f"- {flag.message}" for flag in flags] + ([""] if flags else [])
        groups = self.monitor.groups()
        if groups:
            lines += ["| task type | role | outcome | scored | unscored | mean score |", "|---|---|---|---:|---:|---:|"]
            lines += [f"| {t} | {r} | {o} | {g.count} | {g.unscored} | {g.mean:.2f} |" if g.count else
                      f"| {t} | {r} | {o} | 0 | {g.unscored} | n/a |" for (t, r, o), g in groups.items()]
        return lines

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.monitor = BiasMonitor.from_dict(state)
