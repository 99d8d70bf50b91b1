"""Bias monitor: does the coach score one task type higher than another for comparable actions?

Why it exists: a coach's bias is a reward, and training amplifies rewards. MAPPA's coach scored regression
actions 0.5–1.8 points above comparable classification actions, and the trained agents drifted toward
regression. :class:`BiasMonitor` keeps running statistics of coach scores and flags such gaps while a run
is in progress, so they are seen in TensorBoard rather than in the final results.

What it compares. Scores are grouped by ``(task_type, role, outcome)``, where ``outcome`` is the episode's
graded validity: ``"success"``, ``"failure"``, or ``"unknown"`` when the episode was not graded (yet).
Two groups are *comparable* when they differ only in task type: same role, same outcome. A failed
modeler's action on a regression task is compared with a failed modeler's action on a classification task,
never with a successful one, so a task type that simply succeeds more often is not mistaken for a biased
coach.

* Level 1, per role: for each ``(role, outcome)`` and each pair of task types with both counts
  ``>= min_count``, a :class:`BiasFlag` is raised when the gap is large (``|diff| >= threshold``) and
  significant (``|diff| > z * se``, ``se`` the Welch standard error ``sqrt(s_a²/n_a + s_b²/n_b)``).
* Level 2, across roles (``role="*"``): a bias spread thinly over many roles, each with too few actions
  to be flagged on its own, is caught by a stratified comparison per outcome. The pooled gap is a weighted
  mean of the per-role gaps, ``Σ w_r (mean_a,r − mean_b,r)`` with ``w_r ∝ n_a,r n_b,r / (n_a,r + n_b,r)``
  over the roles with at least two scores in both task types (and at least two such roles); its standard
  error is ``sqrt(Σ w_r² (s²_a,r/n_a,r + s²_b,r/n_b,r))``; ``min_count`` applies to the totals. Comparing
  role by role means a task type whose episodes hold more actions of a high-scoring role is not flagged
  (plain pooling would flag it: Simpson's paradox).

The test is a normal approximation to Welch's t-test, which is accurate at the sample sizes ``min_count``
asks for. With the defaults (``z=2.58``, two-sided 1 %; ``threshold=0.5`` points on the 0–10 scale) a
monitor that sees no bias flags rarely; each flag is a hint to read the coach's rationales for that group,
not proof of bias.

Scores of ``None`` (the coach could not score) are counted per group as ``unscored`` and never enter a
mean: the contract is that a missing score is never replaced by a number.

TensorBoard tags (:meth:`BiasMonitor.scalars`), with ``<outcome>`` one of ``success``, ``failure``,
``unknown``:

* ``coach/bias/<task_type>/<role>/<outcome>/mean``: mean score of the group (only once it has a score).
* ``coach/bias/<task_type>/<role>/<outcome>/count``: number of scored actions of the group.
* ``coach/bias/<task_type>/<role>/<outcome>/unscored``: number of actions the coach could not score.
* ``coach/bias/gap/<role>/<outcome>``: regression mean minus classification mean, where both groups have
  a score; ``<role>`` is ``*`` for the stratified gap across roles (emitted when two roles qualify).
* ``coach/bias/flags``: number of flags :meth:`BiasMonitor.drift` raises now.

Calibration (opt-in; the "stateful coaching" open question). :meth:`BiasMonitor.calibrate` shifts a score
by the difference between the pooled mean of the comparable groups and its own group's mean. It removes
the mean difference between task types for comparable outcomes; it also removes any genuine difference
between them, and it does nothing to differences in spread. Feed :meth:`BiasMonitor.update` the raw
scores, never calibrated ones, or the monitor chases its own correction.

Monitors are plain data: :meth:`BiasMonitor.to_dict` / :meth:`BiasMonitor.from_dict` for checkpoints
(JSON-serialisable), and :meth:`BiasMonitor.merge` (the parallel Welford merge of Chan et al.) to combine the
monitors of many rollout workers. Pure Python: no numpy, scipy or torch needed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["OUTCOMES", "BiasFlag", "BiasMonitor", "GroupStats", "monitor_from_records", "outcome_label"]

OUTCOMES = ("success", "failure", "unknown")
POOLED_ROLE = "*"
_FORMAT_VERSION = 1
_GAP_PAIR = ("regression", "classification")  # the pair the gap scalars report (higher-minus-lower order)
_OUTCOME_PHRASE = {"success": "successful", "failure": "failed", "unknown": "ungraded"}

GroupKey = tuple[str, str, str]  # (task_type, role, outcome)


def outcome_label(success: bool | None) -> str:
    """``"success"`` / ``"failure"`` for a graded episode, ``"unknown"`` when it was not graded."""
    if success is None:
        return "unknown"
    return "success" if success else "failure"


@dataclass(frozen=True)
class GroupStats:
    """Statistics of one ``(task_type, role, outcome)`` group.

    Attributes:
        count: number of scored actions.
        mean: their mean score (NaN while ``count == 0``).
        std: their sample standard deviation (``ddof=1``; 0.0 while ``count < 2``).
        unscored: number of actions the coach returned ``None`` for; they are in no other field.
    """

    count: int
    mean: float
    std: float
    unscored: int


@dataclass(frozen=True)
class BiasFlag:
    """A significant score gap between two task types for comparable actions.

    Attributes:
        role: the acting role, or ``"*"`` for the stratified comparison across roles.
        outcome: ``"success"``, ``"failure"`` or ``"unknown"``.
        higher, lower: the task type scored higher and the one scored lower.
        difference: mean of ``higher`` minus mean of ``lower`` (always > 0).
        stderr: Welch standard error of ``difference``.
        count_higher, count_lower: scored actions behind each mean (totals over roles for ``"*"``).
    """

    role: str
    outcome: str
    higher: str
    lower: str
    difference: float
    stderr: float
    count_higher: int
    count_lower: int

    @property
    def message(self) -> str:
        """E.g. "regression actions of the modeler with successful outcomes score 1.52 points above
        classification (n=40/38)"."""
        who = "all roles" if self.role == POOLED_ROLE else f"the {self.role}"
        return (
            f"{self.higher} actions of {who} with {_OUTCOME_PHRASE.get(self.outcome, self.outcome)} outcomes "
            f"score {self.difference:.2f} points above {self.lower} (n={self.count_higher}/{self.count_lower})"
        )

    def __str__(self) -> str:
        return self.message


class _Welford:
    """Running count, mean and sum of squared deviations (``m2``) of one group, plus its unscored count."""

    __slots__ = ("count", "mean", "m2", "unscored")

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0, unscored: int = 0) -> None:
        self.count, self.mean, self.m2, self.unscored = count, mean, m2, unscored

    def add(self, x: float) -> None:
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)

    def merge(self, other: _Welford) -> None:
        """Chan et al.'s parallel update: the result equals one pass over both samples."""
        self.unscored += other.unscored
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean, other.m2
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / n
        self.m2 += other.m2 + delta * delta * self.count * other.count / n
        self.count = n

    @property
    def var(self) -> float:
        return self.m2 / (self.count - 1) if self.count >= 2 else 0.0

    def stats(self) -> GroupStats:
        mean = self.mean if self.count else math.nan
        return GroupStats(count=self.count, mean=mean, std=math.sqrt(max(self.var, 0.0)), unscored=self.unscored)


@dataclass(frozen=True)
class _Gap:
    diff: float  # mean_a - mean_b
    se: float
    count_a: int
    count_b: int


class BiasMonitor:
    """Running coach-score statistics per ``(task_type, role, outcome)`` and task-type bias flags.

    Args:
        min_count: scored actions each side of a comparison needs before it can be flagged (and before
            :meth:`calibrate` shifts a group); at least 2.
        threshold: smallest gap, in points on the 0–10 scale, worth a flag.
        z: how many standard errors the gap must exceed (2.58: two-sided 1 %).
    """

    def __init__(self, min_count: int = 20, threshold: float = 0.5, z: float = 2.58) -> None:
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 2:
            raise ValueError(f"min_count must be an integer >= 2 (a variance needs two scores), got {min_count!r}")
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be a finite number of points >= 0 (e.g. 0.5), got {threshold!r}")
        if not (isinstance(z, (int, float)) and math.isfinite(z) and z > 0):
            raise ValueError(f"z must be a positive number of standard errors (e.g. 2.58), got {z!r}")
        self.min_count = min_count
        self.threshold = float(threshold)
        self.z = float(z)
        self._groups: dict[GroupKey, _Welford] = {}

    def __repr__(self) -> str:
        return (
            f"BiasMonitor(min_count={self.min_count}, threshold={self.threshold}, z={self.z}, "
            f"groups={len(self._groups)})"
        )

    # ---------------------------------------------------------------- collect

    def update(self, score: float | None, *, task_type: str, role: str, success: bool | None) -> None:
        """Record one coach score (``None``: counted as unscored, never averaged)."""
        key = (_check_name("task_type", task_type), _check_name("role", role), outcome_label(success))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Welford()
        if score is None:
            group.unscored += 1
            return
        value = float(score)
        if not math.isfinite(value):
            raise ValueError(f"score must be a finite number or None (not scored), got {score!r}")
        group.add(value)

    def merge(self, other: BiasMonitor) -> BiasMonitor:
        """Add ``other``'s statistics to this monitor in place (as if it had seen ``other``'s scores too).

        Returns ``self``, so ``functools.reduce(BiasMonitor.merge, monitors[1:], monitors[0])`` combines a
        list. ``other`` is left unchanged; this monitor keeps its own ``min_count``, ``threshold`` and ``z``.
        """
        if not isinstance(other, BiasMonitor):
            raise TypeError(f"can only merge another BiasMonitor, got {type(other).__name__}")
        for key, theirs in other._groups.items():
            mine = self._groups.get(key)
            if mine is None:
                mine = self._groups[key] = _Welford()
            mine.merge(theirs)
        return self

    # ---------------------------------------------------------------- read

    def groups(self) -> dict[GroupKey, GroupStats]:
        """``(task_type, role, outcome) → GroupStats`` for every group seen, sorted by key."""
        return {key: self._groups[key].stats() for key in sorted(self._groups)}

    def drift(self) -> list[BiasFlag]:
        """Flags for every comparable pair of task types with a large and significant gap.

        Per-role flags come first, then the stratified ``role="*"`` flags; within each, sorted by role,
        outcome and task types.
        """
        flags = [self._flag(role, outcome, gap_pair) for role, outcome, gap_pair in self._role_gaps()]
        flags += [self._flag(POOLED_ROLE, outcome, gap_pair) for outcome, gap_pair in self._pooled_gaps()]
        return sorted(
            (f for f in flags if f is not None),
            key=lambda f: (f.role == POOLED_ROLE, f.role, f.outcome, f.higher, f.lower),
        )

    def scalars(self) -> dict[str, float]:
        """Flat values for TensorBoard; the tags are listed in the module docstring."""
        out: dict[str, float] = {}
        for (task_type, role, outcome), st in self.groups().items():
            prefix = f"coach/bias/{task_type}/{role}/{outcome}"
            if st.count:
                out[f"{prefix}/mean"] = st.mean
            out[f"{prefix}/count"] = float(st.count)
            out[f"{prefix}/unscored"] = float(st.unscored)
        high, low = _GAP_PAIR
        for role, outcome in sorted({(r, o) for _, r, o in self._groups}):
            a, b = self._groups.get((high, role, outcome)), self._groups.get((low, role, outcome))
            if a is not None and b is not None and a.count and b.count:
                out[f"coach/bias/gap/{role}/{outcome}"] = a.mean - b.mean
        for outcome in OUTCOMES:
            gap = self._stratified_gap(high, low, outcome)
            if gap is not None:
                out[f"coach/bias/gap/{POOLED_ROLE}/{outcome}"] = gap.diff
        out["coach/bias/flags"] = float(len(self.drift()))
        return out

    # ---------------------------------------------------------------- calibrate (opt-in)

    def calibrate(self, score: float | None, *, task_type: str, role: str, success: bool | None) -> float | None:
        """``score`` shifted so that its group's mean matches the pooled mean of the comparable groups.

        The comparable groups are those with the same role and outcome, over every task type with at least
        ``min_count`` scores; their pooled (count-weighted) mean is the target. Once this group has
        ``min_count`` scores the result is ``score + (pooled mean − group mean)``, clipped to [0, 10];
        before that, and for ``None``, the score is returned unchanged. This removes mean differences
        between task types for comparable outcomes (genuine ones included). It is opt-in: nothing else in
        the monitor applies it, and :meth:`update` must be given the raw score.
        """
        if score is None:
            return None
        value = float(score)
        outcome = outcome_label(success)
        own = self._groups.get((task_type, role, outcome))
        if own is None or own.count < self.min_count:
            return value
        peers = [g for (t, r, o), g in self._groups.items() if r == role and o == outcome and g.count >= self.min_count]
        total = sum(g.count for g in peers)
        pooled = sum(g.mean * g.count for g in peers) / total
        return min(10.0, max(0.0, value + pooled - own.mean))

    # ---------------------------------------------------------------- checkpoint

    def to_dict(self) -> dict[str, Any]:
        """Settings and raw Welford state, JSON-serialisable; :meth:`from_dict` restores it exactly."""
        return {
            "version": _FORMAT_VERSION,
            "min_count": self.min_count,
            "threshold": self.threshold,
            "z": self.z,
            "groups": [
                {"task_type": t, "role": r, "outcome": o, "count": g.count, "mean": g.mean, "m2": g.m2,
                 "unscored": g.unscored}
                for (t, r, o), g in sorted(self._groups.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BiasMonitor:
        """The monitor :meth:`to_dict` described."""
        version = data.get("version")
        if version != _FORMAT_VERSION:
            raise ValueError(f"unsupported BiasMonitor state version {version!r}; this release reads {_FORMAT_VERSION}")
        monitor = cls(min_count=data["min_count"], threshold=data["threshold"], z=data["z"])
        for g in data["groups"]:
            if g["outcome"] not in OUTCOMES:
                raise ValueError(f"BiasMonitor state: outcome must be one of {OUTCOMES}, got {g['outcome']!r}")
            key = (_check_name("task_type", g["task_type"]), _check_name("role", g["role"]), g["outcome"])
            monitor._groups[key] = _Welford(int(g["count"]), float(g["mean"]), float(g["m2"]), int(g["unscored"]))
        return monitor

    # ---------------------------------------------------------------- internals

    def _role_gaps(self) -> Iterable[tuple[str, str, tuple[str, str, _Gap]]]:
        """``(role, outcome, (task_a, task_b, gap))`` for every pair of task types within a role and outcome."""
        by_situation: dict[tuple[str, str], list[str]] = {}
        for t, r, o in sorted(self._groups):
            by_situation.setdefault((r, o), []).append(t)
        for (role, outcome), task_types in by_situation.items():
            for a, b in itertools.combinations(task_types, 2):
                ga, gb = self._groups[(a, role, outcome)], self._groups[(b, role, outcome)]
                if ga.count < 2 or gb.count < 2:
                    continue
                se = math.sqrt(ga.var / ga.count + gb.var / gb.count)
                yield role, outcome, (a, b, _Gap(ga.mean - gb.mean, se, ga.count, gb.count))

    def _pooled_gaps(self) -> Iterable[tuple[str, tuple[str, str, _Gap]]]:
        task_types = sorted({t for t, _, _ in self._groups})
        for outcome in OUTCOMES:
            for a, b in itertools.combinations(task_types, 2):
                gap = self._stratified_gap(a, b, outcome)
                if gap is not None:
                    yield outcome, (a, b, gap)

    def _stratified_gap(self, a: str, b: str, outcome: str) -> _Gap | None:
        """Role-stratified gap ``a − b`` for one outcome, or None when fewer than two roles qualify."""
        strata = []
        for role in sorted({r for _, r, o in self._groups if o == outcome}):
            ga, gb = self._groups.get((a, role, outcome)), self._groups.get((b, role, outcome))
            if ga is not None and gb is not None and ga.count >= 2 and gb.count >= 2:
                strata.append((ga, gb))
        if len(strata) < 2:
            return None  # with one role the pooled comparison repeats the per-role one
        h = [ga.count * gb.count / (ga.count + gb.count) for ga, gb in strata]
        total = sum(h)
        diff = sum(w / total * (ga.mean - gb.mean) for w, (ga, gb) in zip(h, strata))
        var = sum((w / total) ** 2 * (ga.var / ga.count + gb.var / gb.count) for w, (ga, gb) in zip(h, strata))
        return _Gap(diff, math.sqrt(var), sum(ga.count for ga, _ in strata), sum(gb.count for _, gb in strata))

    def _flag(self, role: str, outcome: str, gap_pair: tuple[str, str, _Gap]) -> BiasFlag | None:
        a, b, gap = gap_pair
        if gap.count_a < self.min_count or gap.count_b < self.min_count:
            return None
        if abs(gap.diff) < self.threshold or abs(gap.diff) <= self.z * gap.se:
            return None
        if gap.diff > 0:
            return BiasFlag(role, outcome, a, b, gap.diff, gap.se, gap.count_a, gap.count_b)
        return BiasFlag(role, outcome, b, a, -gap.diff, gap.se, gap.count_b, gap.count_a)


def monitor_from_records(records: Iterable[Mapping[str, Any]], **settings: Any) -> BiasMonitor:
    """A monitor fed with records holding ``score``, ``task_type``, ``role`` and ``success``.

    ``settings`` go to :class:`BiasMonitor` (``min_count``, ``threshold``, ``z``).
    """
    monitor = BiasMonitor(**settings)
    for i, rec in enumerate(records):
        missing = [k for k in ("score", "task_type", "role", "success") if k not in rec]
        if missing:
            raise ValueError(f"record {i} lacks {missing}; each record needs score, task_type, role and success")
        monitor.update(rec["score"], task_type=rec["task_type"], role=rec["role"], success=rec["success"])
    return monitor


def _check_name(what: str, value: Any) -> str:
    """Task types and roles become parts of TensorBoard tags, and ``*`` stands for all roles."""
    if not isinstance(value, str) or not value or "/" in value or value == POOLED_ROLE:
        raise ValueError(f"{what} must be a non-empty string without '/' and other than '*', got {value!r}")
    return value
