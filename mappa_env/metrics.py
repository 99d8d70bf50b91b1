"""Metrics: per-task scores, the constant baseline, DSBench's relative performance gap, fair aggregates.

The per-task scores are sklearn's (``sklearn.metrics``), imported inside the functions that compute them so
that importing this module stays light (numpy only: no sklearn, no torch); the label normalisation, the
undefined values, the baseline, the RPG and the fair aggregates are ours. The functions are pure and
unit-tested on hand-computed values (``tests/test_metrics.py``).

Conventions
-----------
Labels
    Classification labels are compared as *normalised strings* (:func:`normalize_label`): surrounding
    whitespace is stripped and numeric-looking labels are written canonically, so ``1``, ``"1"``,
    ``1.0``, ``"1.0"`` and ``" 1 "`` all become ``"1"`` and ``"0.50"`` becomes ``"0.5"``. This makes a
    submission written by pandas with a float column agree with integer answers, without ever guessing a
    task's type from its label values (the task type is declared on the :class:`~mappa_env.tasks.task.Task`).
Binary scores
    A binary task (one with a ``positive_label``) may be answered with probabilities of the positive
    label instead of labels. Predictions count as scores when every one of them is a finite number in
    [0, 1] *and* at least one of them is not a known class label (so a 0/1 task answered with 0/1 labels is
    read as labels). Scores are thresholded at ``> 0.5`` for accuracy and F1, and give ``roc_auc``.
Undefined values
    A metric that is undefined (no rows, ROC-AUC with one class, RMSE % of an unknown range, an empty
    group in an aggregate) is ``float('nan')``, never a made-up number.
Fair aggregates
    Following the published DSBench results, a failed run (no valid graded submission) stays in the
    denominator with the worst value: accuracy 0, F1 0, RMSE 100 % of the target range, RPG 0.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


import numpy as np

from mappa_env.scorecard import SUCCESS_RATE, Scorecard, SummaryMetric

#: Metric names a task may declare as its primary metric → True when higher is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "f1": True,
    "macro_f1": True,
    "roc_auc": True,
    "rmse": False,
    "mae": False,
}

#: The value of a perfect submission for each primary metric (the RPG's ``perfect``).
PERFECT_SCORE: dict[str, float] = {
    "accuracy": 1.0,
    "f1": 1.0,
    "macro_f1": 1.0,
    "roc_auc": 1.0,
    "rmse": 0.0,
    "mae": 0.0,
}

#: Fair value of a failed regression run: RMSE equal to the whole target range.
FAILED_RMSE_PCT = 100.0

NAN = float("nan")


# ----------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------


# Plain decimal or scientific notation only: int()/float() would also accept "1_000", "nan" or "inf",
# which are text labels, not numbers written differently.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def normalize_label(value: Any) -> str:
    """Canonical string form of one label: stripped, numeric-looking values written canonically.

    ``1``, ``"1"``, ``1.0``, ``"1.0"``, ``"1e0"`` → ``"1"``; ``"0.50"`` → ``"0.5"``; ``" cat "`` → ``"cat"``.
    Missing values (``None``, float NaN) become ``""``. Booleans keep their names (``"True"``).
    """
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return ""
    text = str(value).strip()
    if not _NUMBER.fullmatch(text):
        return text
    if "." not in text and "e" not in text.lower():
        return str(int(text))  # exact, where float() would lose digits of long integer labels
    number = float(text)
    if number.is_integer():
        return str(int(number))
    return repr(number)


def normalize_labels(values: Iterable[Any]) -> np.ndarray:
    """:func:`normalize_label` applied to every element; returns an object array of ``str``."""
    # Label columns repeat a few values many times: normalise each distinct value once. The key holds the
    # type because 1, 1.0 and True are equal dict keys but True must stay "True".
    cache: dict[tuple[type, Any], str] = {}
    out = []
    for value in values:
        try:
            key = (type(value), value)
            label = cache.get(key)
        except TypeError:  # unhashable: normalise without the cache
            key, label = None, None
        if label is None:
            label = normalize_label(value)
            if key is not None:
                cache[key] = label
        out.append(label)
    return np.array(out, dtype=object)


def _as_float_array(values: Iterable[Any], what: str) -> np.ndarray:
    try:
        array = np.asarray(list(values), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numbers: {exc}") from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be finite numbers (found NaN or inf)")
    return array


def _check_same_length(y_true: Sequence, y_pred: Sequence) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} values but y_pred has {len(y_pred)}")


# ----------------------------------------------------------------------------------------------------
# Classification metrics
# ----------------------------------------------------------------------------------------------------
#
# The scores themselves are sklearn's; what is ours is the contract around them. Where sklearn's default
# differs, it is mapped here, before sklearn is called:
#
# - no rows: sklearn raises ValueError ("Found empty input array"); we return NaN (undefined, not a bug);
# - labels: sklearn compares raw values (1 != "1.0"); we pass it normalised strings (normalize_label);
# - F1 of a class never true nor predicted: sklearn's zero_division="warn" gives 0 with an
#   UndefinedMetricWarning; we pass zero_division=0, which gives the same 0 without the warning;
# - binary F1: sklearn's average="binary" raises when there are more than two labels (a binary task
#   answered with an unseen label, the F1 of one class of a multiclass truth) or two without pos_label;
#   we score the binary problem "is the positive label / is not", which has the same tp, fp and fn for
#   that class, with pos_label=True;
# - ROC-AUC with one class in y_true: older sklearn raises ValueError, recent sklearn (1.9) warns
#   UndefinedMetricWarning and returns NaN; we return NaN without calling it, on every version;
# - non-finite scores or targets: sklearn raises its own ValueError; we raise ours first, naming the input.
#
# sklearn is imported inside the functions, not at the top: importing this module (and mappa_env) stays
# light; only grading pays for sklearn.


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Share of predictions equal to the truth (normalised labels). NaN when there are no rows."""
    from sklearn.metrics import accuracy_score

    _check_same_length(y_true, y_pred)
    if len(y_true) == 0:
        return NAN
    return float(accuracy_score(normalize_labels(y_true), normalize_labels(y_pred)))


def f1_binary(y_true: Sequence, y_pred: Sequence, positive_label: Any) -> float:
    """F1 of ``positive_label`` (sklearn ``average='binary'``, ``zero_division=0``). NaN with no rows.

    Any other labels, however many, count as "not positive": a binary task answered with an unseen label,
    or the F1 of one class of a multiclass truth, is defined (see the mapping above).
    """
    from sklearn.metrics import f1_score

    _check_same_length(y_true, y_pred)
    if len(y_true) == 0:
        return NAN
    positive = normalize_label(positive_label)
    is_true, is_predicted = normalize_labels(y_true) == positive, normalize_labels(y_pred) == positive
    return float(f1_score(is_true, is_predicted, pos_label=True, average="binary", zero_division=0))


def f1_macro(y_true: Sequence, y_pred: Sequence) -> float:
    """Unweighted mean of per-class F1, as sklearn's ``f1_score(average='macro', zero_division=0)``.

    The classes are the union of the labels in ``y_true`` and ``y_pred`` (sklearn's default), so a
    predicted label that never occurs in the truth adds a class with F1 0. NaN when there are no rows.
    """
    from sklearn.metrics import f1_score

    _check_same_length(y_true, y_pred)
    if len(y_true) == 0:
        return NAN
    return float(f1_score(normalize_labels(y_true), normalize_labels(y_pred), average="macro", zero_division=0))


def roc_auc(y_true: Sequence, scores: Sequence, positive_label: Any) -> float:
    """Area under the ROC curve of ``scores`` for ``positive_label`` (ties count one half).

    Every label other than ``positive_label`` is a negative, so the problem is always binary for sklearn,
    whatever the labels. NaN when ``y_true`` holds only one class (the AUC is undefined; see above).
    """
    from sklearn.metrics import roc_auc_score

    _check_same_length(y_true, scores)
    is_positive = normalize_labels(y_true) == normalize_label(positive_label)
    if is_positive.all() or not is_positive.any():  # also no rows
        return NAN
    return float(roc_auc_score(is_positive, _as_float_array(scores, "ROC-AUC scores")))


# ----------------------------------------------------------------------------------------------------
# Regression metrics
# ----------------------------------------------------------------------------------------------------


def rmse(y_true: Sequence, y_pred: Sequence) -> float:
    """Root mean squared error. NaN when there are no rows; ValueError on non-finite values."""
    # sqrt of sklearn's MSE rather than root_mean_squared_error, which needs sklearn >= 1.4 (we allow 1.3).
    from sklearn.metrics import mean_squared_error

    _check_same_length(y_true, y_pred)
    if len(y_true) == 0:
        return NAN
    truth, predicted = _as_float_array(y_true, "y_true"), _as_float_array(y_pred, "y_pred")
    return float(np.sqrt(mean_squared_error(truth, predicted)))


def mae(y_true: Sequence, y_pred: Sequence) -> float:
    """Mean absolute error. NaN when there are no rows; ValueError on non-finite values."""
    from sklearn.metrics import mean_absolute_error

    _check_same_length(y_true, y_pred)
    if len(y_true) == 0:
        return NAN
    truth, predicted = _as_float_array(y_true, "y_true"), _as_float_array(y_pred, "y_pred")
    return float(mean_absolute_error(truth, predicted))


def rmse_pct_of_range(rmse_value: float, target_range: float | None) -> float:
    """RMSE as a percentage of the target's range (``100 * rmse / range``).

    NaN when the range is unknown, zero, negative or not finite: there is no scale to express it on.
    """
    if target_range is None or not math.isfinite(target_range) or target_range <= 0:
        return NAN
    return 100.0 * float(rmse_value) / float(target_range)


# ----------------------------------------------------------------------------------------------------
# One submission
# ----------------------------------------------------------------------------------------------------


def binary_scores(y_true: Sequence, y_pred: Sequence, positive_label: Any) -> np.ndarray | None:
    """The predictions as positive-class scores, or None when they are labels (see module docstring)."""
    known = set(normalize_labels(y_true)) | {normalize_label(positive_label)}
    normalised = normalize_labels(y_pred)
    if len(normalised) == 0 or all(label in known for label in normalised):
        return None
    try:
        scores = np.asarray(normalised.astype(str), dtype=float)
    except ValueError:
        return None
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        return None
    return scores


def score_predictions(
    task_type: str,
    y_true: Sequence,
    y_pred: Sequence,
    *,
    positive_label: Any = None,
    target_range: float | None = None,
) -> dict[str, float]:
    """Standard metrics of aligned predictions (same order as ``y_true``).

    Classification: ``accuracy`` and ``f1`` (F1 of ``positive_label`` for binary tasks, macro F1 when
    ``positive_label`` is None). For binary tasks answered with positive-class scores (see
    :func:`binary_scores`) also ``roc_auc``, with accuracy and F1 taken at the 0.5 threshold.
    Regression: ``rmse``, ``mae`` and ``rmse_pct_range`` (NaN when ``target_range`` is unknown).
    Raises ValueError for an unknown task type, mismatched lengths or non-finite regression values.
    """
    _check_same_length(y_true, y_pred)
    if task_type == "regression":
        value = rmse(y_true, y_pred)
        return {"rmse": value, "mae": mae(y_true, y_pred), "rmse_pct_range": rmse_pct_of_range(value, target_range)}
    if task_type != "classification":
        raise ValueError(f"task_type must be 'classification' or 'regression', got {task_type!r}")
    if positive_label is None:
        return {"accuracy": accuracy(y_true, y_pred), "f1": f1_macro(y_true, y_pred)}
    scores = binary_scores(y_true, y_pred, positive_label)
    if scores is None:
        return {"accuracy": accuracy(y_true, y_pred), "f1": f1_binary(y_true, y_pred, positive_label)}
    return {
        "accuracy": metric_value("accuracy", y_true, y_pred, positive_label=positive_label),
        "f1": metric_value("f1", y_true, y_pred, positive_label=positive_label),
        "roc_auc": roc_auc(y_true, scores, positive_label),
    }


def metric_value(
    metric: str,
    y_true: Sequence,
    y_pred: Sequence,
    *,
    positive_label: Any = None,
    target_range: float | None = None,
) -> float:
    """The value of one named primary metric (a key of :data:`HIGHER_IS_BETTER`).

    ``f1`` is binary F1 when ``positive_label`` is given, else macro F1; ``macro_f1`` is always macro F1.
    ``roc_auc`` uses scores when the predictions are scores, else the hard labels as 0/1 scores (what
    Kaggle computes when a ROC-AUC task is answered with labels).
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(HIGHER_IS_BETTER)}")
    if metric == "rmse":
        return rmse(y_true, y_pred)
    if metric == "mae":
        return mae(y_true, y_pred)
    scores = binary_scores(y_true, y_pred, positive_label) if positive_label is not None else None
    if metric == "roc_auc":
        if positive_label is None:
            raise ValueError("roc_auc needs the task's positive_label")
        if scores is None:
            scores = (normalize_labels(y_pred) == normalize_label(positive_label)).astype(float)
        return roc_auc(y_true, scores, positive_label)
    if scores is not None:  # probabilities: score the 0.5-threshold as positive / not-positive labels
        y_true = normalize_labels(y_true) == normalize_label(positive_label)
        y_pred, positive_label = scores > 0.5, True
    if metric == "accuracy":
        return accuracy(y_true, y_pred)
    if metric == "f1" and positive_label is not None:
        return f1_binary(y_true, y_pred, positive_label)
    return f1_macro(y_true, y_pred)


def most_frequent_label(y_train: Iterable[Any]) -> str:
    """The most frequent normalised label; ties go to the smallest label so the choice is deterministic."""
    counts = Counter(normalize_labels(y_train))
    counts.pop("", None)  # missing training labels are not a class
    if not counts:
        raise ValueError("y_train holds no labels")
    best = max(counts.values())
    return min(label for label, n in counts.items() if n == best)


def constant_baseline_score(
    task_type: str,
    metric: str,
    y_train: Sequence,
    y_true: Sequence,
    *,
    positive_label: Any = None,
    target_range: float | None = None,
) -> float:
    """Score (in ``metric``) of predicting one constant for every test row.

    The constant is the most frequent training label (:func:`most_frequent_label`) for classification and
    the mean of the finite training targets for regression. A constant has ROC-AUC 0.5.
    """
    if task_type == "classification":
        constant: Any = most_frequent_label(y_train)
    elif task_type == "regression":
        train = np.asarray(list(y_train), dtype=float)
        train = train[np.isfinite(train)]
        if train.size == 0:
            raise ValueError("y_train holds no finite targets")
        constant = float(train.mean())
    else:
        raise ValueError(f"task_type must be 'classification' or 'regression', got {task_type!r}")
    predictions = [constant] * len(y_true)
    return metric_value(metric, y_true, predictions, positive_label=positive_label, target_range=target_range)


# ----------------------------------------------------------------------------------------------------
# Relative performance gap (DSBench)
# ----------------------------------------------------------------------------------------------------


def relative_performance_gap(
    score: float | None, baseline: float, perfect: float, higher_is_better: bool
) -> float:
    """DSBench's RPG = ``max(0, (score - baseline) / (perfect - baseline))``.

    The same formula serves lower-is-better metrics (RMSE, MAE with ``perfect = 0``): numerator and
    denominator are both negative when the score improves on the baseline. ``score=None`` is a failed run
    and gives 0. NaN when the score is NaN or when ``perfect == baseline`` (the baseline is already
    perfect, so the gap is undefined). Raises ValueError when ``baseline`` is better than ``perfect``.
    """
    if score is None:
        return 0.0
    if math.isnan(score) or math.isnan(baseline):
        return NAN
    if (perfect < baseline) if higher_is_better else (perfect > baseline):
        raise ValueError(
            f"baseline {baseline} is better than perfect {perfect} (higher_is_better={higher_is_better})"
        )
    if perfect == baseline:
        return NAN
    return max(0.0, (score - baseline) / (perfect - baseline))


# ----------------------------------------------------------------------------------------------------
# Aggregates over episodes
# ----------------------------------------------------------------------------------------------------


def _metric(outcome: Mapping, name: str) -> float:
    value = (outcome.get("metrics") or {}).get(name)
    return NAN if value is None else float(value)


def _mean(values: list[float]) -> float:
    # An empty group has no mean: NaN, not 0. A NaN inside the group propagates on purpose.
    return float(np.mean(values)) if values else NAN


def aggregate_outcomes(outcomes: Sequence[Mapping]) -> dict[str, Any]:
    """Fair and plain aggregates over episode outcomes (``valid``, ``task_type``, ``metrics``).

    Returned keys:

    - ``n_episodes``, ``n_valid``, ``success_rate`` (share of valid outcomes, 0–1);
    - ``n_classification``, ``n_classification_valid``, ``n_regression``, ``n_regression_valid`` and
      ``n_by_task_type`` (every task type seen → number of episodes);
    - fair means, a failed run counting as the worst value: ``accuracy_fair`` and ``f1_fair`` over
      classification episodes (failed = 0), ``rmse_fair`` over regression episodes in % of the target range
      (failed = 100; valid runs are capped at 100 so that failing is never better than a bad submission),
      ``rpg`` over all episodes (failed = 0);
    - plain means over valid episodes only: ``accuracy_valid``, ``f1_valid``, ``rmse_valid`` (uncapped %),
      ``rpg_valid``.

    A mean over an empty group is NaN. A valid outcome that lacks a metric contributes NaN to that mean
    (it is not replaced by a number), except RPG: valid episodes whose RPG is undefined (baseline already
    perfect) are left out of both RPG means; ``n_rpg`` counts the episodes the fair RPG averages.
    """
    classification = [o for o in outcomes if o.get("task_type") == "classification"]
    regression = [o for o in outcomes if o.get("task_type") == "regression"]
    valid = [o for o in outcomes if o.get("valid")]

    def fair(group: list[Mapping], name: str, failed: float, cap: float = math.inf) -> float:
        # np.minimum keeps a NaN metric NaN (never turned into the cap).
        return _mean([float(np.minimum(_metric(o, name), cap)) if o.get("valid") else failed for o in group])

    def plain(group: list[Mapping], name: str) -> float:
        return _mean([_metric(o, name) for o in group if o.get("valid")])

    rpg_fair = [_metric(o, "rpg") if o.get("valid") else 0.0 for o in outcomes]
    rpg_fair = [v for v in rpg_fair if not math.isnan(v)]
    rpg_valid = [v for v in (_metric(o, "rpg") for o in valid) if not math.isnan(v)]
    return {
        "n_episodes": len(outcomes),
        "n_valid": len(valid),
        "success_rate": len(valid) / len(outcomes) if outcomes else NAN,
        "n_classification": len(classification),
        "n_classification_valid": sum(1 for o in classification if o.get("valid")),
        "n_regression": len(regression),
        "n_regression_valid": sum(1 for o in regression if o.get("valid")),
        "n_by_task_type": dict(Counter(str(o.get("task_type")) for o in outcomes)),
        "accuracy_fair": fair(classification, "accuracy", failed=0.0),
        "f1_fair": fair(classification, "f1", failed=0.0),
        "rmse_fair": fair(regression, "rmse_pct_range", failed=FAILED_RMSE_PCT, cap=FAILED_RMSE_PCT),
        "rpg": _mean(rpg_fair),
        "n_rpg": len(rpg_fair),
        "accuracy_valid": plain(classification, "accuracy"),
        "f1_valid": plain(classification, "f1"),
        "rmse_valid": plain(regression, "rmse_pct_range"),
        "rpg_valid": _mean(rpg_valid),
    }


#: The published MAPPA results' columns for tabular teams (the ``dsbench-v0`` scorecard's summary).
TABULAR_SUMMARY_METRICS = (
    SUCCESS_RATE,
    SummaryMetric("accuracy_fair", "Accuracy (Fair)"),
    SummaryMetric("f1_fair", "F1 (Fair)"),
    SummaryMetric("rmse_fair", "RMSE (Fair) (%)", higher_is_better=False, digits=1),
    SummaryMetric("rpg", "RPG"),
)
#: Every metric a tabular outcome may carry (see docs/environment.md).
TABULAR_OUTCOME_METRICS = ("accuracy", "f1", "macro_f1", "roc_auc", "rmse", "mae", "rmse_pct_range", "primary",
                           "baseline", "rpg")


#: How a tabular team (``dsbench-v0``) is scored.
TABULAR_SCORECARD = Scorecard(
    task_types=("classification", "regression"), outcome_metrics=TABULAR_OUTCOME_METRICS,
    summary_metrics=TABULAR_SUMMARY_METRICS, summarise=aggregate_outcomes,
)


def format_results_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """A markdown table of :func:`aggregate_outcomes` results, one row per (name, aggregate); NaN → ``n/a``.

    Columns as in the published MAPPA results: Policy/Run, Episodes, Success Rate (%), Accuracy (Fair),
    F1 (Fair), RMSE (Fair) (%), RPG (:data:`TABULAR_SUMMARY_METRICS`).
    """
    return TABULAR_SCORECARD.table(rows)
