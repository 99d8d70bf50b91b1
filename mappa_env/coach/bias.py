"""Bias monitor: does the coach score one task type higher than another *at equal quality*?

Why it exists: a coach's bias is a reward, and training amplifies rewards. MAPPA's coach scored regression
actions 0.5–1.8 points above comparable classification actions, and the trained agents drifted toward
regression. Our own receipts coach gave the analyst's graded action 8.61 on regression against 7.78 on
classification although classification had the higher quality (RPG 0.63 against 0.45). This module
estimates such a tilt soundly and raises one alarm that stays valid when it is re-checked every step.

Rows. The monitor reads one row per coached action (:class:`ActionRow`; :func:`action_rows` makes them
from an episode's step records): ``score`` (None: unscored, counted, never imputed), ``task_type``,
``role``, ``task_id`` (the cluster), ``episode``, ``graded`` and ``quality``. An action is *graded* when
its record carries a graded quality: the team's result was graded right after it (``StepRecord.result``
is not None), or it is the action that ended the episode (graded by the episode's outcome). ``quality``
is then the result's RPG (``metrics["rpg"]``, relative performance gap, in [-inf, 1]) and ``success`` the
result's validity; an invalid result has no RPG and is its own quality level. Ungraded actions (most of
them: the coach had no quality information, the receipts coach gives them all an 8) are monitored apart,
so that they cannot dilute a tilt on the graded ones.

The primary statistic (:func:`bias_test`). On graded, scored actions, least squares of

    score ~ task type + f(quality) + role

where ``f`` is a step-and-slope function of RPG: one level and one slope per RPG band ([-1, 0), [0, .25),
[.25, .5), [.5, .75), [.75, 1]; RPG below -1 counts as -1), one level for an invalid result and one for a
valid result without an RPG. The coefficient of ``regression`` (against ``classification``) is the bias
estimate, in score points, at equal quality and role. Comparing raw means instead confounds task difficulty
with coach bias: a coach that follows quality exactly looks biased against the harder task type.
Its standard error is cluster-robust by task (the sandwich estimator with the CR1 small-sample factor
``G/(G-1) · (N-1)/(N-K)``; G tasks, N actions, K the design's rank) and the test uses Student's t with
``G - 1`` degrees of freedom: every action of a task shares that task's quirks (and the episode's), so
treating them as independent makes the standard error far too small.

The alert (:meth:`BiasMonitor.look`), pre-registered: the primary statistic pooled over roles is the
*only* alarm. It is tested once per look (the trainer looks once per step, from the first step at which it
is estimable) with the alpha-spending schedule ``alpha_k = alpha · 6 / (π² k²)`` at look ``k``: since
``Σ_k 6 / (π² k²) = 1``, the probability of any false alarm over all looks of a run, however many and
however dependent, is at most ``alpha`` (a union bound). Each look's confidence interval at level
``1 - alpha_k`` is therefore a confidence sequence: all of them cover the true bias at once with
probability ``>= 1 - alpha``. The alert fires when that interval excludes 0 and ``|estimate| >= threshold``
(a gap too small to matter is not worth an alarm), and stays fired (a sequential test stops at its first
rejection). Chosen over a mixture-martingale confidence sequence because it needs nothing but the
regression above and holds for any number of looks; its price is a critical value that grows slowly with
``k`` (about 3.7 standard errors at look 50 for alpha = 0.01, against 2.6 for a single test).

Everything else is descriptive, not an alarm: the per-role estimates on graded actions; for ungraded
actions, the gap between task types within ``(role, outcome)``, with task-clustered standard errors
(:func:`ungraded_comparisons`; ``outcome`` is the episode's graded validity: ``"success"``, ``"failure"``,
``"unknown"`` when not graded); and the raw mean per ``(task_type, role, outcome)`` group over all actions.

TensorBoard tags (:meth:`BiasMonitor.scalars`):

* ``coach/bias/flags``: 1 once the pre-registered alert has fired, else 0 (the only alarm); the same value
  as ``coach/bias/alert``.
* ``coach/bias/pooled/{estimate,se,ci_low,ci_high,t,alpha,look,actions,tasks}``: the primary statistic
  at the latest look (``alpha``: the level spent at that look; ``actions``: graded scored actions used).
* ``coach/bias/graded/<role>/estimate``: the same regression on one role's graded actions (descriptive).
* ``coach/bias/graded/count``, ``coach/bias/graded/unscored``, ``coach/bias/ungraded/count``,
  ``coach/bias/ungraded/unscored``: actions in the monitor's window by tag.
* ``coach/bias/ungraded/<role>/<outcome>/{gap,se}``: regression minus classification mean on ungraded
  actions, task-clustered standard error (descriptive).
* ``coach/bias/<task_type>/<role>/<outcome>/{mean,count,unscored}``: every action of the run (graded or
  not) per group; ``coach/bias/gap/<role>/<outcome>``: the raw regression-minus-classification mean of
  those groups, ``<role>`` ``*`` for the role-stratified gap (descriptive, and confounded by quality).
* ``coach/bias/audit/...``: the audit set's re-scoring (:mod:`mappa_train.coach_watch`), not from here.

State. The regression needs the rows, so the monitor keeps the newest ``max_rows`` (20,000 by default)
in a window; the group statistics are running Welford sums over the whole run. Monitors are plain data:
:meth:`BiasMonitor.to_dict` / :meth:`BiasMonitor.from_dict` for checkpoints (JSON-serialisable; the
look count and the alert survive a resume) and :meth:`BiasMonitor.merge` to combine rollout workers'.
Needs numpy only (never torch).

Calibration (opt-in; the "stateful coaching" open question). :meth:`BiasMonitor.calibrate` shifts a score
by the difference between the pooled mean of the comparable ``(role, outcome)`` groups and its own group's
mean. It removes the raw mean difference between task types (genuine ones included). Feed
:meth:`BiasMonitor.update` the raw scores, never calibrated ones, or the monitor chases its own correction.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mappa_env.records import outcome_succeeded

__all__ = [
    "OUTCOMES", "QUALITY_BANDS", "ActionRow", "BiasEstimate", "BiasFlag", "BiasMonitor", "Comparison", "GroupStats",
    "action_rows", "bias_test", "episode_rows", "monitor_from_records", "outcome_label", "spent_alpha",
    "ungraded_comparisons",
]

OUTCOMES = ("success", "failure", "unknown")
POOLED_ROLE = "*"
#: Left edges of the RPG bands of f(quality) after the lowest ([-1, 0)); RPG below -1 counts as -1.
QUALITY_BANDS = (0.0, 0.25, 0.5, 0.75)
_RPG_FLOOR = -1.0
_FORMAT_VERSION = 2
_GAP_PAIR = ("regression", "classification")  # the pair the gap scalars report (higher-minus-lower order)
_OUTCOME_PHRASE = {"success": "successful", "failure": "failed", "unknown": "ungraded"}

GroupKey = tuple[str, str, str]  # (task_type, role, outcome)


def outcome_label(success: bool | None) -> str:
    """``"success"`` / ``"failure"`` for a graded episode, ``"unknown"`` when it was not graded."""
    if success is None:
        return "unknown"
    return "success" if success else "failure"


def spent_alpha(alpha: float, look: int) -> float:
    """The level of look ``look`` (1, 2, ...): ``alpha · 6 / (π² look²)``; the levels of all looks sum to ``alpha``."""
    if look < 1:
        raise ValueError(f"look must be >= 1, got {look}")
    return alpha * 6.0 / (math.pi ** 2 * look * look)


# ---------------------------------------------------------------------- rows


@dataclass(frozen=True)
class ActionRow:
    """One coached action as the monitor reads it.

    Attributes:
        score: the coach's score, or None when it could not score (counted, never imputed).
        task_type, role: where and who.
        task_id: the task, the cluster of the standard errors ("" when unknown: each row its own cluster).
        episode: the episode (for reading; the clusters are tasks, which hold their episodes).
        graded: the action's record carries a graded quality (its result, or the episode's outcome).
        quality: the RPG of that grade (None: not graded, an invalid result, or a result without an RPG).
        success: for a graded action the grade's validity; else the episode's outcome (None: unknown).
    """

    score: float | None
    task_type: str
    role: str
    task_id: str = ""
    episode: str = ""
    graded: bool = False
    quality: float | None = None
    success: bool | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any] | ActionRow) -> ActionRow:
        """A validated row from a mapping with at least ``score``, ``task_type`` and ``role``."""
        if isinstance(row, ActionRow):
            return row
        score = row.get("score")
        if score is not None:
            score = float(score)
            if not math.isfinite(score):
                raise ValueError(f"score must be a finite number or None (not scored), got {row.get('score')!r}")
        quality = row.get("quality")
        if quality is not None:
            quality = float(quality)
            quality = None if math.isnan(quality) else quality
        success = row.get("success")
        return cls(score, _check_name("task_type", row.get("task_type")), _check_name("role", row.get("role")),
                   str(row.get("task_id") or ""), str(row.get("episode", "")), bool(row.get("graded", False)),
                   quality, None if success is None else bool(success))


def _rpg(result: Mapping[str, Any] | None) -> float | None:
    metrics = (result or {}).get("metrics") or {}
    value = metrics.get("rpg")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def action_rows(steps: Sequence[Mapping[str, Any]], outcome: Mapping[str, Any] | None, *, task_id: str,
                task_type: str, episode: Any = "") -> list[ActionRow]:
    """Rows of one episode's actions, tagged graded or not.

    ``steps`` are the episode's step records as mappings (:meth:`~mappa_env.records.StepRecord.to_info`),
    in the order they were taken: the last one ended the episode and is graded by ``outcome`` (the
    episode's :meth:`~mappa_env.records.Outcome.to_info`; None: not graded) unless it carries its own
    ``result``. Any other step is graded when its ``result`` is not None.
    """
    rows = []
    episode_success = None if outcome is None else outcome_succeeded(outcome)
    for i, step in enumerate(steps):
        score = (step.get("verdict") or {}).get("score")
        result = step.get("result")
        if result is None and i == len(steps) - 1 and outcome is not None:
            result = outcome
        if result is not None:
            rows.append(ActionRow(score, task_type, step["agent"], task_id, str(episode), True, _rpg(result),
                                  outcome_succeeded(result)))
        else:
            rows.append(ActionRow(score, task_type, step["agent"], task_id, str(episode), False, None, episode_success))
    return rows


def episode_rows(episode: Mapping[str, Any], *, number: Any = "") -> list[ActionRow]:
    """Rows of a recorded episode (``python -m mappa_env evaluate``'s format, :func:`mappa_env.evaluation.run_episode`).

    Uses the episode's ``records`` (pipeline order) when it has them, else its agents' ``steps`` in the
    order the agents are listed.
    """
    steps = episode.get("records")
    if steps is None:
        steps = [s for agent in episode["agents"].values() for s in agent["steps"]]
    return action_rows(steps, episode.get("outcome"), task_id=episode["task_id"], task_type=episode["task_type"],
                       episode=number)


# ---------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class BiasEstimate:
    """The task-type coefficient on graded actions: ``pair[0]`` minus ``pair[1]``, in score points.

    Attributes:
        estimate, se: the coefficient and its task-clustered (CR1) standard error; NaN when not estimable.
        ci: the ``1 - alpha`` confidence interval (t with ``df`` degrees of freedom).
        t, p: the t statistic and its two-sided p-value.
        df: degrees of freedom, ``tasks - 1``.
        alpha: the level tested at (``spent_alpha(alpha, look)`` at a look of an alpha-spending schedule).
        look: which look (None: a single, stand-alone test at the full alpha).
        flagged: ``ci`` excludes 0 and ``|estimate| >= threshold``.
        n_actions: graded, scored actions in the regression; ``n_unscored``: graded ones left out (no score).
        n_tasks: tasks (clusters) among them; ``tasks_by_type`` per task type.
        reason: why it is not estimable ("" when it is).
    """

    estimate: float
    se: float
    ci: tuple[float, float]
    t: float
    p: float
    df: int
    alpha: float
    look: int | None
    flagged: bool
    n_actions: int
    n_tasks: int
    n_unscored: int = 0
    tasks_by_type: Mapping[str, int] | None = None
    pair: tuple[str, str] = _GAP_PAIR
    threshold: float = 0.0
    reason: str = ""

    @property
    def estimable(self) -> bool:
        return not self.reason

    @property
    def message(self) -> str:
        """One sentence for a report."""
        high, low = self.pair
        if not self.estimable:
            return f"{high} minus {low} at equal quality and role: not estimable ({self.reason})"
        lo, hi = self.ci
        at = f" at look {self.look}" if self.look is not None else ""
        verdict = "flagged" if self.flagged else "not flagged"
        return (f"{high} minus {low} at equal quality and role: {self.estimate:+.2f} points "
                f"(task-clustered se {self.se:.2f}; {100 * (1 - self.alpha):.4g}% CI [{lo:+.2f}, {hi:+.2f}]{at}; "
                f"{self.n_actions} graded actions, {self.n_tasks} tasks): {verdict}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"], data["pair"] = list(self.ci), list(self.pair)
        data["tasks_by_type"] = dict(self.tasks_by_type or {})
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BiasEstimate:
        return cls(**{**data, "ci": tuple(data["ci"]), "pair": tuple(data["pair"])})


def _not_estimable(reason: str, *, alpha: float, look: int | None, pair: tuple[str, str], threshold: float,
                   n_actions: int, n_tasks: int, n_unscored: int, tasks_by_type: Mapping[str, int]) -> BiasEstimate:
    nan = math.nan
    return BiasEstimate(nan, nan, (nan, nan), nan, nan, 0, alpha, look, False, n_actions, n_tasks, n_unscored,
                        dict(tasks_by_type), pair, threshold, reason)


def _quality_columns(quality: np.ndarray, success: np.ndarray, bands: Sequence[float]) -> np.ndarray:
    """The design of f(quality): a level and a slope per RPG band, a level for invalid and for valid-without-RPG.

    ``quality`` holds NaN where there is no RPG; ``success`` the grade's validity.
    """
    edges = np.asarray([_RPG_FLOOR, *bands])
    missing = np.isnan(quality)
    q = np.clip(np.where(missing, 0.0, quality), _RPG_FLOOR, 1.0)
    band = np.searchsorted(edges, q, side="right") - 1
    cols = np.zeros((len(q), 2 * len(edges) + 2))
    rows = np.flatnonzero(~missing)
    cols[rows, 2 * band[rows]] = 1.0
    cols[rows, 2 * band[rows] + 1] = q[rows] - edges[band[rows]]
    cols[missing & success, 2 * len(edges) + 1] = 1.0
    cols[missing & ~success, 2 * len(edges)] = 1.0
    return cols


def cluster_ols(y: np.ndarray, x: np.ndarray, clusters: Sequence[Any], target: int) -> tuple[float, float, float, int]:
    """Least squares ``y ~ x``; coefficient ``target`` with its cluster-robust standard error and degrees of freedom.

    Returns ``(estimate, se, df, n_clusters)``. The variance is CR2 (Bell and McCaffrey 2002): the sandwich
    ``B Σ_g X_g' A_g u_g u_g' A_g X_g B`` with ``B = (X'X)^+`` and ``A_g = (I - H_gg)^(-1/2)``, which undoes the
    shrinkage of each cluster's residuals by its own leverage; ``df`` is Bell and McCaffrey's Satterthwaite
    approximation, ``(Σλ)² / Σλ²`` over the eigenvalues of the matrix that says how the variance estimate is
    made of the errors. With many tasks this is CR1 with ``G - 1`` degrees of freedom; with few tasks and a
    quality term that varies between tasks, CR1 is far too small (measured: 17 % false alarms at a nominal
    5 % with 12 tasks) and CR2 is not. A rank-deficient design is fitted by the pseudo-inverse.
    """
    _, index = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    g = int(index.max()) + 1 if len(index) else 0
    bread = np.linalg.pinv(x.T @ x)
    beta = bread @ (x.T @ y)
    u = y - x @ beta
    b_ell = bread[:, target]
    if g == len(y):  # every action its own cluster: CR2 is HC2, and df that of independent errors
        lev = np.einsum("ij,jk,ik->i", x, bread, x)
        v = (x @ b_ell) / np.sqrt(np.clip(1.0 - lev, 1e-10, None))
        return float(beta[target]), float(math.sqrt(np.sum((v * u) ** 2))), float(len(y) - np.linalg.matrix_rank(x)), g
    order = np.argsort(index, kind="stable")
    bounds = np.flatnonzero(np.diff(index[order])) + 1
    var, vv, cs = 0.0, np.zeros(g), np.zeros((x.shape[1], g))
    for j, rows in enumerate(np.split(order, bounds)):
        xg = x[rows]
        q, r = np.linalg.qr(xg)
        mu, vecs = np.linalg.eigh(r @ bread @ r.T)  # the nonzero eigenvalues of H_gg = X_g B X_g'
        basis = q @ vecs
        gap = 1.0 - mu
        factor = np.where(gap > 1e-10, 1.0 / np.sqrt(np.clip(gap, 1e-10, None)), 0.0) - 1.0
        v = xg @ b_ell
        v = v + basis @ (factor * (basis.T @ v))  # A_g X_g B e_target
        var += float(v @ u[rows]) ** 2
        vv[j], cs[:, j] = v @ v, xg.T @ v
    gram = np.diag(vv) - cs.T @ bread @ cs
    lam = np.linalg.eigvalsh((gram + gram.T) / 2)
    df = float(lam.sum() ** 2 / (lam ** 2).sum()) if (lam ** 2).sum() > 0 else 0.0
    return float(beta[target]), math.sqrt(var), df, g


def bias_test(rows: Iterable[Mapping[str, Any] | ActionRow], *, pair: tuple[str, str] = _GAP_PAIR,
              alpha: float = 0.01, look: int | None = None, threshold: float = 0.0, min_tasks: int = 2,
              min_count: int = 2, bands: Sequence[float] = QUALITY_BANDS, roles: bool = True) -> BiasEstimate:
    """The coach's tilt toward ``pair[0]`` over ``pair[1]`` on graded actions, at equal quality and role.

    ``rows``: mappings (or :class:`ActionRow`) with ``score``, ``task_type``, ``role``, ``task_id`` (the
    cluster), ``quality`` (the RPG; None: invalid or none) and ``graded``, plus ``success`` (the grade's
    validity; it tells an invalid result from a valid one without an RPG). Ungraded rows are ignored;
    graded rows without a score are counted in ``n_unscored``. Rows of other task types stay in the
    regression with their own level. ``look``: test at ``spent_alpha(alpha, look)`` (a look of the
    pre-registered schedule) instead of ``alpha``. Not estimable (NaN, not flagged, ``reason`` says why)
    until both task types have ``min_tasks`` tasks and ``min_count`` scored graded actions.
    ``roles=False`` leaves the role term out (the rows of one role).

    The model, the standard errors and the schedule are in the module docstring.
    """
    level = alpha if look is None else spent_alpha(alpha, look)
    graded = [r for r in (ActionRow.of(r) for r in rows) if r.graded]
    scored = [r for r in graded if r.score is not None]
    high, low = pair
    tasks_by_type = {t: len({r.task_id or f"row {i}" for i, r in enumerate(scored) if r.task_type == t}) for t in pair}
    counts = {t: sum(r.task_type == t for r in scored) for t in pair}
    info = dict(alpha=level, look=look, pair=pair, threshold=threshold, n_actions=len(scored),
                n_tasks=len({r.task_id or f"row {i}" for i, r in enumerate(scored)}),
                n_unscored=len(graded) - len(scored), tasks_by_type=tasks_by_type)
    short = [t for t in pair if tasks_by_type[t] < min_tasks or counts[t] < min_count]
    if short:
        return _not_estimable(f"needs {min_tasks} tasks and {min_count} scored graded actions of each task type; "
                              + ", ".join(f"{t}: {tasks_by_type[t]} tasks, {counts[t]} actions" for t in pair), **info)
    y = np.asarray([r.score for r in scored], dtype=float)
    quality = np.asarray([math.nan if r.quality is None else r.quality for r in scored], dtype=float)
    success = np.asarray([bool(r.success) for r in scored])
    types = np.asarray([r.task_type for r in scored])
    others = sorted(set(types.tolist()) - {low, high})
    columns = [_quality_columns(quality, success, bands), (types == high)[:, None].astype(float)]
    columns += [(types == t)[:, None].astype(float) for t in others]
    if roles:
        role_of = np.asarray([r.role for r in scored])
        columns += [(role_of == name)[:, None].astype(float) for name in sorted(set(role_of.tolist()))[1:]]
    x = np.hstack(columns)
    keep = np.any(x != 0, axis=0)
    target = int(keep[:columns[0].shape[1]].sum())  # the task-type column follows f's kept columns
    x = x[:, keep]
    if np.linalg.matrix_rank(np.delete(x, target, axis=1)) == np.linalg.matrix_rank(x):
        return _not_estimable("task type is confounded with quality or role (no overlap)", **info)
    if len(y) <= np.linalg.matrix_rank(x):
        return _not_estimable(f"{len(y)} actions for {np.linalg.matrix_rank(x)} parameters", **info)
    clusters = [r.task_id or f"row {i}" for i, r in enumerate(scored)]
    estimate, se, df, g = cluster_ols(y, x, clusters, target)
    df = max(df, 1.0)
    if se > 0:
        t = estimate / se
    else:  # every residual is 0: the scores are an exact function of the design
        t = 0.0 if abs(estimate) < 1e-12 else math.copysign(math.inf, estimate)
    p = _t_two_sided_p(t, df)
    half = _t_critical(level, df) * se if se > 0 else 0.0
    ci = (estimate - half, estimate + half)
    flagged = (ci[0] > 0 or ci[1] < 0) and abs(estimate) >= threshold and p <= level
    return BiasEstimate(estimate, se, ci, t, p, df, level, look, bool(flagged), len(y), g, info["n_unscored"],
                        tasks_by_type, pair, threshold)


@dataclass(frozen=True)
class Comparison:
    """Descriptive: ``pair[0]`` minus ``pair[1]`` mean score of ungraded actions of one role and outcome.

    ``se`` is task-clustered (CR1); ``notable`` means ``|gap| >= threshold`` and ``|gap| > z · se`` (not an
    alarm: only :meth:`BiasMonitor.look` raises one).
    """

    role: str
    outcome: str
    gap: float
    se: float
    count_high: int
    count_low: int
    n_tasks: int
    notable: bool


def ungraded_comparisons(rows: Iterable[Mapping[str, Any] | ActionRow], *, pair: tuple[str, str] = _GAP_PAIR,
                         min_count: int = 2, threshold: float = 0.5, z: float = 2.58) -> list[Comparison]:
    """Per ``(role, outcome)``, the gap between task types on ungraded, scored actions (task-clustered se)."""
    high, low = pair
    by: dict[tuple[str, str], list[ActionRow]] = {}
    for r in (ActionRow.of(r) for r in rows):
        if not r.graded and r.score is not None and r.task_type in pair:
            by.setdefault((r.role, outcome_label(r.success)), []).append(r)
    out = []
    for (role, outcome), group in sorted(by.items()):
        n_high, n_low = sum(r.task_type == high for r in group), sum(r.task_type == low for r in group)
        if n_high < min_count or n_low < min_count:
            continue
        y = np.asarray([r.score for r in group])
        x = np.asarray([[1.0, float(r.task_type == high)] for r in group])
        clusters = [r.task_id or f"row {i}" for i, r in enumerate(group)]
        gap, se, _, g = cluster_ols(y, x, clusters, 1)
        se = se if g > 1 else math.inf
        out.append(Comparison(role, outcome, gap, se, n_high, n_low, g, abs(gap) >= threshold and abs(gap) > z * se))
    return out


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def _t_critical(level: float, df: int) -> float:
    """The t with ``P(|T| >= t) = level`` (bisection on the p-value)."""
    lo, hi = 0.0, 1.0
    while _t_two_sided_p(hi, df) > level:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_two_sided_p(mid, df) > level else (lo, mid)
        if hi - lo < 1e-10 * hi:
            break
    return hi


# ---------------------------------------------------------------------- the monitor


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
    """The pre-registered alert, as a sentence: the coach scores ``higher`` above ``lower`` at equal quality.

    Attributes:
        role: ``"*"`` (pooled over roles).
        outcome: ``"graded"`` (the graded actions).
        higher, lower: the task type scored higher and the one scored lower.
        difference: the estimate, made positive (``higher`` minus ``lower``).
        stderr: its task-clustered standard error.
        count_higher, count_lower: graded actions of each task type; ``estimate`` the full test.
    """

    role: str
    outcome: str
    higher: str
    lower: str
    difference: float
    stderr: float
    count_higher: int
    count_lower: int
    estimate: BiasEstimate | None = None

    @property
    def message(self) -> str:
        """E.g. "regression actions of all roles with graded quality score 1.52 points above classification
        at equal quality and role (99.4% CI [0.90, 2.14] at look 3; n=40/38 actions, 12 tasks)"."""
        who = "all roles" if self.role == POOLED_ROLE else f"the {self.role}"
        extra = ""
        if self.estimate is not None:
            lo, hi = sorted(abs(v) for v in self.estimate.ci)
            at = f" at look {self.estimate.look}" if self.estimate.look is not None else ""
            extra = f"{100 * (1 - self.estimate.alpha):.4g}% CI [{lo:.2f}, {hi:.2f}]{at}; "
            extra += f"n={self.count_higher}/{self.count_lower} actions, {self.estimate.n_tasks} tasks"
        else:
            extra = f"n={self.count_higher}/{self.count_lower}"
        return (f"{self.higher} actions of {who} with graded quality score {self.difference:.2f} points above "
                f"{self.lower} at equal quality and role ({extra})")

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



class BiasMonitor:
    """Coach scores over a run: the pre-registered bias alert, and descriptive statistics around it.

    Args:
        min_count: scored graded actions each task type needs before the alert is tested (and the scored
            actions each side of a descriptive comparison, or a group before :meth:`calibrate` shifts it); >= 2.
        threshold: smallest bias, in points on the 0–10 scale, worth an alarm (and a notable comparison).
        z: standard errors a descriptive comparison must exceed to be called notable (2.58: two-sided 1 %).
        alpha: the alert's false-alarm probability over all looks of the run together.
        min_tasks: tasks each task type needs before the alert is tested.
        max_rows: the newest actions kept for the regression (older ones leave the window; the group
            statistics keep counting).
        pair: the task types compared, higher-minus-lower order of the reported gaps.
    """

    def __init__(self, min_count: int = 20, threshold: float = 0.5, z: float = 2.58, *, alpha: float = 0.01,
                 min_tasks: int = 5, max_rows: int = 20_000, pair: tuple[str, str] = _GAP_PAIR) -> None:
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 2:
            raise ValueError(f"min_count must be an integer >= 2 (a variance needs two scores), got {min_count!r}")
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be a finite number of points >= 0 (e.g. 0.5), got {threshold!r}")
        if not (isinstance(z, (int, float)) and math.isfinite(z) and z > 0):
            raise ValueError(f"z must be a positive number of standard errors (e.g. 2.58), got {z!r}")
        if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
            raise ValueError(f"alpha must be a probability in (0, 1) (e.g. 0.01), got {alpha!r}")
        if isinstance(min_tasks, bool) or not isinstance(min_tasks, int) or min_tasks < 2:
            raise ValueError(f"min_tasks must be an integer >= 2 (clustered errors need two tasks), got {min_tasks!r}")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 2:
            raise ValueError(f"max_rows must be an integer >= 2 (e.g. 20000), got {max_rows!r}")
        self.min_count, self.threshold, self.z = min_count, float(threshold), float(z)
        self.alpha, self.min_tasks, self.max_rows, self.pair = float(alpha), min_tasks, max_rows, tuple(pair)
        self._groups: dict[GroupKey, _Welford] = {}
        self._rows: collections.deque[ActionRow] = collections.deque(maxlen=max_rows)
        self.looks = 0  # estimable looks so far: the k of the next look is looks + 1
        self._last: BiasEstimate | None = None
        self._alert: BiasEstimate | None = None
        self.alert_step: int | None = None

    def __repr__(self) -> str:
        return (f"BiasMonitor(min_count={self.min_count}, threshold={self.threshold}, alpha={self.alpha}, "
                f"rows={len(self._rows)}, looks={self.looks}, alert={self._alert is not None})")

    # ---------------------------------------------------------------- collect

    def update(self, score: float | None, *, task_type: str, role: str, success: bool | None, task_id: str = "",
               episode: Any = "", graded: bool = False, quality: float | None = None) -> None:
        """Record one coach score (``None``: counted as unscored, never averaged); the fields of :class:`ActionRow`."""
        self.add(ActionRow.of({"score": score, "task_type": task_type, "role": role, "success": success,
                               "task_id": task_id, "episode": episode, "graded": graded, "quality": quality}))

    def add(self, row: Mapping[str, Any] | ActionRow) -> None:
        """Record one row (a mapping with :class:`ActionRow`'s fields, or one)."""
        row = ActionRow.of(row)
        self._rows.append(row)
        key = (row.task_type, row.role, outcome_label(row.success))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Welford()
        if row.score is None:
            group.unscored += 1
        else:
            group.add(row.score)

    def merge(self, other: BiasMonitor) -> BiasMonitor:
        """Add ``other``'s rows and statistics to this monitor in place (as if it had seen them too).

        Returns ``self``. ``other`` is left unchanged; this monitor keeps its own settings, looks and alert
        (rollout workers collect, one monitor looks).
        """
        if not isinstance(other, BiasMonitor):
            raise TypeError(f"can only merge another BiasMonitor, got {type(other).__name__}")
        for key, theirs in other._groups.items():
            mine = self._groups.get(key)
            if mine is None:
                mine = self._groups[key] = _Welford()
            mine.merge(theirs)
        self._rows.extend(other._rows)
        return self

    # ---------------------------------------------------------------- the alert

    def look(self, step: int | None = None) -> BiasEstimate:
        """Test the primary statistic at the next look of the schedule (once estimable) and return it.

        A look that is not estimable yet spends nothing. The first flagged look fires the alert, which
        then stays fired (``alert``, ``alert_step``).
        """
        estimate = self.test(look=self.looks + 1)
        if estimate.estimable:
            self.looks += 1
            if estimate.flagged and self._alert is None:
                self._alert, self.alert_step = estimate, step
        self._last = estimate
        return estimate

    def test(self, *, look: int | None = None, role: str | None = None) -> BiasEstimate:
        """:func:`bias_test` on the window's rows with this monitor's settings (``role``: that role's rows only)."""
        rows = self._rows if role is None else [r for r in self._rows if r.role == role]
        return bias_test(rows, pair=self.pair, alpha=self.alpha, look=look, threshold=self.threshold,
                         min_tasks=self.min_tasks, min_count=self.min_count, roles=role is None)

    @property
    def last(self) -> BiasEstimate | None:
        """The latest look's result (None before the first look)."""
        return self._last

    @property
    def alert(self) -> BiasEstimate | None:
        """The look that fired the alert, or None."""
        return self._alert

    def drift(self) -> list[BiasFlag]:
        """The fired alert as a :class:`BiasFlag` (a list of one), or ``[]``: the monitor's only alarm."""
        est = self._alert
        if est is None:
            return []
        high, low = self.pair if est.estimate > 0 else self.pair[::-1]
        counts = collections.Counter(r.task_type for r in self._rows if r.graded and r.score is not None)
        return [BiasFlag(POOLED_ROLE, "graded", high, low, abs(est.estimate), est.se, counts[high], counts[low], est)]

    # ---------------------------------------------------------------- read

    def rows(self) -> list[ActionRow]:
        """The window's rows, oldest first."""
        return list(self._rows)

    def groups(self) -> dict[GroupKey, GroupStats]:
        """``(task_type, role, outcome) → GroupStats`` over every action seen, sorted by key."""
        return {key: self._groups[key].stats() for key in sorted(self._groups)}

    def comparisons(self) -> list[Comparison]:
        """Descriptive task-type gaps on ungraded actions (:func:`ungraded_comparisons`)."""
        return ungraded_comparisons(self._rows, pair=self.pair, min_count=self.min_count, threshold=self.threshold,
                                    z=self.z)

    def scalars(self) -> dict[str, float]:
        """Flat values for TensorBoard; the tags are listed in the module docstring."""
        out: dict[str, float] = {}
        for (task_type, role, outcome), st in self.groups().items():
            prefix = f"coach/bias/{task_type}/{role}/{outcome}"
            if st.count:
                out[f"{prefix}/mean"] = st.mean
            out[f"{prefix}/count"] = float(st.count)
            out[f"{prefix}/unscored"] = float(st.unscored)
        high, low = self.pair
        for role, outcome in sorted({(r, o) for _, r, o in self._groups}):
            a, b = self._groups.get((high, role, outcome)), self._groups.get((low, role, outcome))
            if a is not None and b is not None and a.count and b.count:
                out[f"coach/bias/gap/{role}/{outcome}"] = a.mean - b.mean
        for outcome in OUTCOMES:
            gap = self._stratified_gap(high, low, outcome)
            if gap is not None:
                out[f"coach/bias/gap/{POOLED_ROLE}/{outcome}"] = gap
        for graded in (True, False):
            mine = [r for r in self._rows if r.graded == graded]
            name = "graded" if graded else "ungraded"
            out[f"coach/bias/{name}/count"] = float(sum(r.score is not None for r in mine))
            out[f"coach/bias/{name}/unscored"] = float(sum(r.score is None for r in mine))
        est = self._last
        if est is not None and est.estimable:
            out.update({"coach/bias/pooled/estimate": est.estimate, "coach/bias/pooled/se": est.se,
                        "coach/bias/pooled/ci_low": est.ci[0], "coach/bias/pooled/ci_high": est.ci[1],
                        "coach/bias/pooled/t": est.t, "coach/bias/pooled/alpha": est.alpha,
                        "coach/bias/pooled/look": float(est.look or 0), "coach/bias/pooled/actions": float(est.n_actions),
                        "coach/bias/pooled/tasks": float(est.n_tasks)})
        for role in sorted({r.role for r in self._rows if r.graded}):
            role_est = self.test(role=role)
            if role_est.estimable:
                out[f"coach/bias/graded/{role}/estimate"] = role_est.estimate
        for c in self.comparisons():
            out[f"coach/bias/ungraded/{c.role}/{c.outcome}/gap"] = c.gap
            out[f"coach/bias/ungraded/{c.role}/{c.outcome}/se"] = c.se
        fired = float(self._alert is not None)
        out["coach/bias/alert"] = fired
        out["coach/bias/flags"] = fired
        return out

    def _stratified_gap(self, a: str, b: str, outcome: str) -> float | None:
        """Role-stratified raw gap ``a − b`` for one outcome (weights ``n_a n_b / (n_a + n_b)``), or None
        when fewer than two roles have two scores of each task type."""
        strata = []
        for role in sorted({r for _, r, o in self._groups if o == outcome}):
            ga, gb = self._groups.get((a, role, outcome)), self._groups.get((b, role, outcome))
            if ga is not None and gb is not None and ga.count >= 2 and gb.count >= 2:
                strata.append((ga, gb))
        if len(strata) < 2:
            return None
        h = [ga.count * gb.count / (ga.count + gb.count) for ga, gb in strata]
        return sum(w / sum(h) * (ga.mean - gb.mean) for w, (ga, gb) in zip(h, strata))

    # ---------------------------------------------------------------- calibrate (opt-in)

    def calibrate(self, score: float | None, *, task_type: str, role: str, success: bool | None) -> float | None:
        """``score`` shifted so that its group's mean matches the pooled mean of the comparable groups.

        The comparable groups are those with the same role and outcome, over every task type with at least
        ``min_count`` scores; their pooled (count-weighted) mean is the target. Once this group has
        ``min_count`` scores the result is ``score + (pooled mean − group mean)``, clipped to [0, 10];
        before that, and for ``None``, the score is returned unchanged. This removes raw mean differences
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

    def settings(self) -> dict[str, Any]:
        return {"min_count": self.min_count, "threshold": self.threshold, "z": self.z, "alpha": self.alpha,
                "min_tasks": self.min_tasks, "max_rows": self.max_rows, "pair": list(self.pair)}

    def to_dict(self) -> dict[str, Any]:
        """Settings, rows, Welford sums, looks and alert, JSON-serialisable; :meth:`from_dict` restores them."""
        return {
            "version": _FORMAT_VERSION,
            **self.settings(),
            "groups": [
                {"task_type": t, "role": r, "outcome": o, "count": g.count, "mean": g.mean, "m2": g.m2,
                 "unscored": g.unscored}
                for (t, r, o), g in sorted(self._groups.items())
            ],
            "rows": [[r.score, r.task_type, r.role, r.task_id, r.episode, r.graded, r.quality, r.success]
                     for r in self._rows],
            "looks": self.looks,
            "last": None if self._last is None else self._last.to_dict(),
            "alert": None if self._alert is None else self._alert.to_dict(),
            "alert_step": self.alert_step,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BiasMonitor:
        """The monitor :meth:`to_dict` described (version 1 states, group sums only, load without rows)."""
        version = data.get("version")
        if version not in (1, _FORMAT_VERSION):
            raise ValueError(f"unsupported BiasMonitor state version {version!r}; this release reads 1 and {_FORMAT_VERSION}")
        extra = {k: (tuple(data[k]) if k == "pair" else data[k])
                 for k in ("alpha", "min_tasks", "max_rows", "pair") if k in data}
        monitor = cls(min_count=data["min_count"], threshold=data["threshold"], z=data["z"], **extra)
        for g in data["groups"]:
            if g["outcome"] not in OUTCOMES:
                raise ValueError(f"BiasMonitor state: outcome must be one of {OUTCOMES}, got {g['outcome']!r}")
            key = (_check_name("task_type", g["task_type"]), _check_name("role", g["role"]), g["outcome"])
            monitor._groups[key] = _Welford(int(g["count"]), float(g["mean"]), float(g["m2"]), int(g["unscored"]))
        monitor._rows.extend(ActionRow(*row) for row in data.get("rows", ()))
        monitor.looks = int(data.get("looks", 0))
        monitor._last = None if data.get("last") is None else BiasEstimate.from_dict(data["last"])
        monitor._alert = None if data.get("alert") is None else BiasEstimate.from_dict(data["alert"])
        monitor.alert_step = data.get("alert_step")
        return monitor


def monitor_from_records(records: Iterable[Mapping[str, Any]], *, look: bool = True, **settings: Any) -> BiasMonitor:
    """A monitor fed with records (rows) holding ``score``, ``task_type``, ``role`` and ``success``, and
    looked at once (``look=False``: not at all).

    For the alert the rows also need ``graded``, ``quality`` (the RPG) and ``task_id``; rows without
    ``graded`` count as ungraded. ``settings`` go to :class:`BiasMonitor`.
    """
    monitor = BiasMonitor(**settings)
    for i, rec in enumerate(records):
        missing = [k for k in ("score", "task_type", "role", "success") if k not in rec]
        if missing:
            raise ValueError(f"record {i} lacks {missing}; each record needs score, task_type, role and success")
        monitor.add(rec)
    if look:
        monitor.look()
    return monitor


def _check_name(what: str, value: Any) -> str:
    """Task types and roles become parts of TensorBoard tags, and ``*`` stands for all roles."""
    if not isinstance(value, str) or not value or "/" in value or value == POOLED_ROLE:
        raise ValueError(f"{what} must be a non-empty string without '/' and other than '*', got {value!r}")
    return value
