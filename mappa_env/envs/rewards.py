"""Reward modes as pure functions: a coach's score and an episode's outcome in, the trainer's reward out.

Three modes (``reward_mode``, common to every team):

* ``"process"``: each action's reward is its coach score (0–10) times ``reward_scale``; an action the
  coach could not score has no reward (``None``), never a made-up one.
* ``"outcome"``: every action of the episode gets the episode's outcome score (0–10, the team's
  :meth:`outcome_score`) times ``reward_scale``: one bit-like signal per episode, the classic RL baseline.
* ``"mixed"``: ``(1 - outcome_weight) * process + outcome_weight * outcome``; unscored actions stay
  ``None`` (half a reward is not the reward of that action).

What is known right after an action (:func:`immediate_reward`) is delivered in ``env.rewards[agent]``; the
final value (:func:`final_reward`) arrives at termination in ``infos[agent]["step_rewards"]``. With a
``reward_calibration`` (:class:`ScoreCalibration`), the final value is computed from the calibrated score;
the step record keeps the coach's own.
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

RewardMode = Literal["process", "outcome", "mixed"]
REWARD_MODES: tuple[str, ...] = get_args(RewardMode)

__all__ = ["REWARD_MODES", "RewardMode", "ScoreCalibration", "check_settings", "final_reward", "immediate_reward", "scaled"]


class ScoreCalibration(Protocol):
    """Maps a coach's raw score to the score a reward is computed from, once the episode's outcome is known
    (an environment's ``reward_calibration``; :meth:`mappa_env.coach.bias.BiasMonitor.calibrate` is one)."""

    def __call__(self, score: float, *, task_type: str, role: str, success: bool | None) -> float: ...


def check_settings(mode: str, *, reward_scale: float, outcome_weight: float, calibration: object = None) -> None:
    """Raise ``ValueError`` for a reward setting outside its range, saying what it means."""
    if mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {mode!r}")
    if isinstance(reward_scale, bool) or not isinstance(reward_scale, (int, float)) or not reward_scale > 0:
        raise ValueError(f"reward_scale must be a positive number (reward = coach score * reward_scale), got {reward_scale!r}")
    if isinstance(outcome_weight, bool) or not isinstance(outcome_weight, (int, float)) or not 0.0 <= outcome_weight <= 1.0:
        raise ValueError(f"outcome_weight must be within [0, 1] (share of the outcome reward in 'mixed' mode), "
                         f"got {outcome_weight!r}")
    if calibration is not None and not callable(calibration):
        raise ValueError(f"reward_calibration must be None or (score, *, task_type, role, success) -> score, "
                         f"got {calibration!r}")


def scaled(score: float | None, reward_scale: float) -> float | None:
    """A 0–10 score on the reward scale; ``None`` (not scored) stays ``None``."""
    return None if score is None else score * reward_scale


def immediate_reward(mode: RewardMode, score: float | None, *, reward_scale: float, outcome_weight: float) -> float:
    """The part of an action's reward known as soon as it is scored (0 when nothing is known yet).

    ``process``: the scaled score; ``mixed``: its process share; ``outcome``: 0 until the episode is graded.
    """
    process = scaled(score, reward_scale)
    if process is None or mode == "outcome":
        return 0.0
    return process * (1.0 - outcome_weight) if mode == "mixed" else process


def final_reward(mode: RewardMode, score: float | None, outcome_score: float | None, *, reward_scale: float,
                 outcome_weight: float) -> float | None:
    """An action's reward once the episode is over (``None``: this action has no reward to train on)."""
    process = scaled(score, reward_scale)
    outcome = scaled(outcome_score, reward_scale)
    if mode == "process":
        return process
    if mode == "outcome":
        return outcome
    if process is None or outcome is None:
        return None
    return (1.0 - outcome_weight) * process + outcome_weight * outcome
