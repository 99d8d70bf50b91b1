"""Metrics on hand-computed values (the expected numbers are worked out in the comments)."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from mappa_env.metrics import (
    accuracy,
    aggregate_outcomes,
    constant_baseline_score,
    f1_binary,
    f1_macro,
    format_results_table,
    mae,
    metric_value,
    normalize_label,
    relative_performance_gap,
    rmse,
    rmse_pct_of_range,
    roc_auc,
    score_predictions,
)

# A 5-row multiclass example used throughout:
#   truth [a, b, a, c, a], prediction [a, b, c, c, b] -> rows 0, 1, 3 right.
TRUE_ABC = ["a", "b", "a", "c", "a"]
PRED_ABC = ["a", "b", "c", "c", "b"]


def test_importing_metrics_stays_light():
    code = "import sys, mappa_env.metrics; print('sklearn' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---- labels -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (1, "1"), ("1", "1"), (1.0, "1"), ("1.0", "1"), (" 1 ", "1"), ("1e0", "1"), (np.int64(1), "1"),
        ("0.50", "0.5"), ("-0.0", "0"), (" cat ", "cat"), (None, ""), (float("nan"), ""),
        (True, "True"), ("1_000", "1_000"), ("nan", "nan"), ("12345678901234567890123", "12345678901234567890123"),
    ],
)
def test_normalize_label(raw, expected):
    assert normalize_label(raw) == expected


# ---- classification ---------------------------------------------------------------------------------


def test_accuracy_hand_computed():
    assert accuracy(TRUE_ABC, PRED_ABC) == pytest.approx(3 / 5)


def test_accuracy_numeric_labels_agree_across_spellings():
    assert accuracy([1, "1", 1.0, "0", 0], ["1.0", "1", "1", "0.0", "0"]) == 1.0


def test_accuracy_empty_is_nan_and_length_mismatch_raises():
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="3 values"):
        accuracy([1, 2, 3], [1, 2])


def test_f1_binary_hand_computed():
    # truth [1,1,0,0,1], pred [1,0,1,0,1]: tp = 2 (rows 0, 4), fp = 1 (row 2), fn = 1 (row 1)
    # F1 = 2*2 / (2*2 + 1 + 1) = 2/3
    assert f1_binary([1, 1, 0, 0, 1], [1, 0, 1, 0, 1], positive_label="1") == pytest.approx(2 / 3)
    assert f1_binary([1, 1, 0, 0, 1], ["1.0", "0.0", "1.0", "0.0", "1.0"], positive_label=1) == pytest.approx(2 / 3)


def test_f1_binary_zero_division_gives_zero():
    assert f1_binary([0, 0, 0], [0, 0, 0], positive_label="1") == 0.0


def test_f1_macro_hand_computed():
    # a: tp 1, fp 0, fn 2 -> 2/4 = 1/2;  b: tp 1, fp 1, fn 0 -> 2/3;  c: tp 1, fp 1, fn 0 -> 2/3
    # macro = (1/2 + 2/3 + 2/3) / 3 = 11/18
    assert f1_macro(TRUE_ABC, PRED_ABC) == pytest.approx(11 / 18)


def test_f1_macro_counts_predicted_unknown_label_as_a_class():
    # truth [a, a, b], pred [a, z, b]: a -> 2/3, b -> 1, z (only predicted) -> 0; macro = 5/9
    assert f1_macro(["a", "a", "b"], ["a", "z", "b"]) == pytest.approx(5 / 9)


def _f1_by_counting(truth, pred, label) -> float:
    """F1 = 2tp / (2tp + fp + fn) from the definition, independent of sklearn; 0 when never true nor predicted."""
    tp = sum(t == label and p == label for t, p in zip(truth, pred))
    fp = sum(t != label and p == label for t, p in zip(truth, pred))
    fn = sum(t == label and p != label for t, p in zip(truth, pred))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def test_f1_matches_the_definition_on_random_labels():
    rng = np.random.default_rng(0)
    truth = rng.choice(["x", "y", "z"], size=200)
    pred = rng.choice(["x", "y", "z", "w"], size=200)
    expected = np.mean([_f1_by_counting(truth, pred, c) for c in ("w", "x", "y", "z")])
    assert f1_macro(truth, pred) == pytest.approx(expected)
    assert f1_binary(truth, pred, positive_label="y") == pytest.approx(_f1_by_counting(truth, pred, "y"))


def test_f1_binary_of_one_class_among_several():
    # sklearn's average="binary" refuses more than two labels; F1 of one class is still defined.
    # TRUE_ABC vs PRED_ABC, class a: tp 1, fp 0, fn 2 -> 2/4
    assert f1_binary(TRUE_ABC, PRED_ABC, positive_label="a") == pytest.approx(1 / 2)
    # a binary task answered once with an unseen label "2": tp 2 (rows 0, 4), fp 1 (row 2), fn 1 (row 1)
    assert f1_binary([1, 1, 0, 0, 1], [1, "2", 1, 0, 1], positive_label=1) == pytest.approx(2 / 3)


def test_f1_of_an_absent_positive_label_is_zero():
    # two labels, neither of them the positive one: sklearn's average="binary" would raise
    assert f1_binary(["a", "b", "a"], ["a", "b", "b"], positive_label="c") == 0.0


def test_values_the_contract_defines_raise_no_sklearn_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an UndefinedMetricWarning would fail here
        assert f1_binary([0, 0, 0], [0, 0, 0], positive_label="1") == 0.0
        assert f1_binary(["a", "b"], ["a", "a"], positive_label="c") == 0.0
        assert f1_macro(["a", "a", "b"], ["a", "z", "b"]) == pytest.approx(5 / 9)
        assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9], positive_label="1"))
        assert math.isnan(roc_auc([0, 0], [0.2, 0.5], positive_label="1"))
        assert constant_baseline_score("classification", "f1", ["a"], TRUE_ABC, positive_label="b") == 0.0


def test_no_rows_is_nan_for_every_metric():
    for metric in (accuracy, f1_macro, rmse, mae):
        assert math.isnan(metric([], [])), metric.__name__
    assert math.isnan(f1_binary([], [], positive_label="1"))
    assert math.isnan(roc_auc([], [], positive_label="1"))


def test_roc_auc_hand_computed_with_tie():
    # positives score 0.9, 0.4, 0.6; negatives 0.4, 0.2. Pairs won: 0.9 beats both (2),
    # 0.4 ties 0.4 (0.5) and beats 0.2 (1), 0.6 beats both (2) -> 5.5 of 6 = 11/12
    assert roc_auc([1, 0, 1, 0, 1], [0.9, 0.4, 0.4, 0.2, 0.6], positive_label="1") == pytest.approx(11 / 12)


def test_roc_auc_matches_the_pair_definition_on_random_scores():
    # AUC = P(a positive outscores a negative) + P(tie) / 2, over every (positive, negative) pair
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, size=300)
    scores = np.round(rng.random(300), 1)  # rounding makes many ties
    pos, neg = scores[truth == 1][:, None], scores[truth == 0][None, :]
    expected = np.mean((pos > neg) + 0.5 * (pos == neg))
    assert roc_auc(truth, scores, positive_label=1) == pytest.approx(expected)


def test_roc_auc_is_one_class_against_the_rest():
    # truth [a, b, c, a], scores of a [0.9, 0.8, 0.1, 0.7]: positives 0.9, 0.7 vs negatives 0.8, 0.1;
    # 0.9 beats both, 0.7 beats 0.1 only -> 3 of 4 pairs
    assert roc_auc(["a", "b", "c", "a"], [0.9, 0.8, 0.1, 0.7], positive_label="a") == pytest.approx(3 / 4)


def test_roc_auc_refuses_non_finite_scores():
    with pytest.raises(ValueError, match="ROC-AUC scores must be finite"):
        roc_auc([1, 0], [0.5, float("nan")], positive_label="1")


def test_roc_auc_single_class_is_nan():
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9], positive_label="1"))


# ---- regression -------------------------------------------------------------------------------------


def test_rmse_and_mae_hand_computed():
    # errors [1, 0, 0, 0, -2]: squared mean (1 + 4) / 5 = 1 -> RMSE 1; absolute mean 3/5
    assert rmse([1, 2, 3, 4, 5], [2, 2, 3, 4, 3]) == pytest.approx(1.0)
    assert mae([1, 2, 3, 4, 5], [2, 2, 3, 4, 3]) == pytest.approx(0.6)
    # errors [0, 0, 0, 0, 5]: squared mean 25/5 = 5 -> RMSE sqrt(5)
    assert rmse([1, 2, 3, 4, 5], [1, 2, 3, 4, 10]) == pytest.approx(math.sqrt(5))


def test_regression_metrics_refuse_non_finite_values():
    with pytest.raises(ValueError, match="finite"):
        rmse([1.0, 2.0], [1.0, float("nan")])


def test_rmse_pct_of_range():
    assert rmse_pct_of_range(2.0, 8.0) == pytest.approx(25.0)
    for bad_range in (None, 0.0, -1.0, float("inf")):
        assert math.isnan(rmse_pct_of_range(2.0, bad_range))


# ---- score_predictions ------------------------------------------------------------------------------


def test_score_predictions_multiclass():
    scores = score_predictions("classification", TRUE_ABC, PRED_ABC)
    assert scores == pytest.approx({"accuracy": 3 / 5, "f1": 11 / 18})


def test_score_predictions_binary_labels_have_no_roc_auc():
    scores = score_predictions("classification", [1, 1, 0, 0, 1], [1, 0, 1, 0, 1], positive_label="1")
    assert scores == pytest.approx({"accuracy": 3 / 5, "f1": 2 / 3})


def test_score_predictions_binary_probabilities():
    # scores > 0.5 predict "yes": [yes, no, no, no, yes] vs truth [yes, no, yes, no, yes]
    # accuracy 4/5; tp 2, fp 0, fn 1 -> F1 4/5; ROC-AUC 11/12 (see the tie example above)
    truth = ["yes", "no", "yes", "no", "yes"]
    scores = score_predictions("classification", truth, [0.9, 0.4, 0.4, 0.2, 0.6], positive_label="yes")
    assert scores == pytest.approx({"accuracy": 0.8, "f1": 0.8, "roc_auc": 11 / 12})


def test_metric_value_thresholds_probabilities_for_label_metrics():
    # > 0.5 -> [yes, no, no, no, yes] vs [yes, no, yes, no, yes]: yes: tp 2, fp 0, fn 1 -> 4/5;
    # not-yes: tp 2, fp 1, fn 0 -> 4/5; macro 4/5
    truth, probs = ["yes", "no", "yes", "no", "yes"], [0.9, 0.4, 0.4, 0.2, 0.6]
    assert metric_value("macro_f1", truth, probs, positive_label="yes") == pytest.approx(0.8)
    assert metric_value("accuracy", truth, probs, positive_label="yes") == pytest.approx(0.8)
    assert metric_value("roc_auc", truth, probs, positive_label="yes") == pytest.approx(11 / 12)


def test_a_probability_of_exactly_one_half_is_not_a_positive_prediction():
    # > 0.5 -> [no, no, yes, no]: all right; counting 0.5 as positive would make two of them wrong
    truth, probs = ["no", "no", "yes", "no"], [0.5, 0.5, 0.9, 0.1]
    assert score_predictions("classification", truth, probs, positive_label="yes")["accuracy"] == 1.0
    assert metric_value("accuracy", truth, probs, positive_label="yes") == 1.0
    assert metric_value("f1", truth, probs, positive_label="yes") == 1.0


def test_score_predictions_probabilities_on_a_01_task():
    # 0.9 is not a label of a 0/1 task, so these are scores; > 0.5 -> [1, 0, 1, 0, 0] vs [1, 0, 1, 0, 1]
    scores = score_predictions("classification", [1, 0, 1, 0, 1], [0.9, 0.1, 1, 0, 0.3], positive_label="1")
    assert scores["accuracy"] == pytest.approx(4 / 5)
    assert scores["roc_auc"] == pytest.approx(1.0)  # every positive (0.9, 1, 0.3) outranks 0.1 and 0


def test_score_predictions_regression():
    scores = score_predictions("regression", [1, 2, 3, 4, 5], [2, 2, 3, 4, 3], target_range=4.0)
    assert scores == pytest.approx({"rmse": 1.0, "mae": 0.6, "rmse_pct_range": 25.0})
    no_range = score_predictions("regression", [1, 2], [1, 2])
    assert math.isnan(no_range["rmse_pct_range"])


def test_score_predictions_unknown_task_type():
    with pytest.raises(ValueError, match="task_type"):
        score_predictions("ranking", [1], [1])


def test_metric_value_macro_f1_on_binary_task_and_auc_from_labels():
    # truth [1,1,0,0,1], pred [1,0,1,0,1]: class 1 F1 2/3; class 0: tp 1, fp 1, fn 1 -> 1/2; macro 7/12
    truth, pred = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1]
    assert metric_value("macro_f1", truth, pred, positive_label="1") == pytest.approx(7 / 12)
    # hard labels as 0/1 scores: TPR 2/3, FPR 1/2 -> AUC = (1 + 2/3 - 1/2) / 2 = 7/12
    assert metric_value("roc_auc", truth, pred, positive_label="1") == pytest.approx(7 / 12)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_value("rmsle", truth, pred)


# ---- constant baseline ------------------------------------------------------------------------------


def test_constant_baseline_classification():
    # majority of [a, a, b, c] is a; predicting a for TRUE_ABC is right on 3 of 5 rows
    assert constant_baseline_score("classification", "accuracy", ["a", "a", "b", "c"], TRUE_ABC) == pytest.approx(0.6)
    # macro F1 of all-a: a: tp 3, fp 2 -> 6/8; b, c: 0 -> 0.75 / 3 = 0.25
    assert constant_baseline_score("classification", "macro_f1", ["a", "a", "b"], TRUE_ABC) == pytest.approx(0.25)
    # F1 of positive b when always predicting a: 0
    assert constant_baseline_score("classification", "f1", ["a"], TRUE_ABC, positive_label="b") == 0.0
    assert constant_baseline_score("classification", "roc_auc", [1, 1, 0], [1, 0], positive_label="1") == 0.5


def test_constant_baseline_ties_break_to_smallest_label():
    # [b, a] tie; "a" is chosen -> right on rows 0, 2, 4 of TRUE_ABC
    assert constant_baseline_score("classification", "accuracy", ["b", "a"], TRUE_ABC) == pytest.approx(0.6)


def test_constant_baseline_regression():
    # train mean 2; errors vs [1..5]: [1, 0, -1, -2, -3] -> MSE 15/5 = 3, MAE 7/5
    assert constant_baseline_score("regression", "rmse", [1, 2, 3], [1, 2, 3, 4, 5]) == pytest.approx(math.sqrt(3))
    assert constant_baseline_score("regression", "mae", [1, 2, 3, float("nan")], [1, 2, 3, 4, 5]) == pytest.approx(1.4)


# ---- RPG --------------------------------------------------------------------------------------------


def test_rpg_higher_is_better():
    assert relative_performance_gap(0.8, 0.6, 1.0, True) == pytest.approx(0.5)  # 0.2 / 0.4
    assert relative_performance_gap(1.0, 0.6, 1.0, True) == pytest.approx(1.0)
    assert relative_performance_gap(0.5, 0.6, 1.0, True) == 0.0  # worse than the baseline -> clamped


def test_rpg_lower_is_better():
    assert relative_performance_gap(1.0, 4.0, 0.0, False) == pytest.approx(0.75)  # (1-4)/(0-4)
    assert relative_performance_gap(0.0, 4.0, 0.0, False) == pytest.approx(1.0)
    assert relative_performance_gap(5.0, 4.0, 0.0, False) == 0.0  # (5-4)/(0-4) = -0.25 -> 0


def test_rpg_edge_cases():
    assert relative_performance_gap(None, 0.6, 1.0, True) == 0.0  # failed run
    assert math.isnan(relative_performance_gap(1.0, 1.0, 1.0, True))  # baseline already perfect
    assert math.isnan(relative_performance_gap(float("nan"), 0.6, 1.0, True))
    with pytest.raises(ValueError, match="better than perfect"):
        relative_performance_gap(0.5, 0.0, 1.0, False)  # lower is better, yet 'perfect' 1.0 is above baseline 0
    with pytest.raises(ValueError, match="better than perfect"):
        relative_performance_gap(0.5, 0.9, 0.8, True)


# ---- aggregates -------------------------------------------------------------------------------------


def _outcome(task_type, valid, **metrics):
    return {"valid": valid, "task_type": task_type, "metrics": metrics if valid else {}}


def test_aggregate_fair_counts_failed_runs_as_worst():
    outcomes = [
        _outcome("classification", True, accuracy=0.8, f1=0.6, rpg=0.5),
        _outcome("classification", False),
        _outcome("regression", True, rmse_pct_range=20.0, rpg=0.25),
        _outcome("regression", False),
        _outcome("regression", True, rmse_pct_range=150.0, rpg=0.0),
    ]
    agg = aggregate_outcomes(outcomes)
    assert agg["n_episodes"] == 5 and agg["n_valid"] == 3
    assert agg["success_rate"] == pytest.approx(0.6)
    assert agg["accuracy_fair"] == pytest.approx(0.4)  # (0.8 + 0) / 2
    assert agg["f1_fair"] == pytest.approx(0.3)  # (0.6 + 0) / 2
    assert agg["rmse_fair"] == pytest.approx(220 / 3)  # (20 + 100 failed + 150 capped at 100) / 3
    assert agg["rpg"] == pytest.approx(0.15)  # (0.5 + 0 + 0.25 + 0 + 0) / 5
    assert agg["accuracy_valid"] == pytest.approx(0.8)
    assert agg["f1_valid"] == pytest.approx(0.6)
    assert agg["rmse_valid"] == pytest.approx(85.0)  # (20 + 150) / 2, uncapped
    assert agg["rpg_valid"] == pytest.approx(0.25)  # 0.75 / 3
    assert (agg["n_classification"], agg["n_classification_valid"]) == (2, 1)
    assert (agg["n_regression"], agg["n_regression_valid"]) == (3, 2)
    assert agg["n_by_task_type"] == {"classification": 2, "regression": 3}


def test_aggregate_only_failed_runs_score_exactly_the_worst_values():
    agg = aggregate_outcomes([_outcome("classification", False), _outcome("regression", False)])
    assert agg["success_rate"] == 0.0
    assert agg["accuracy_fair"] == 0.0 and agg["f1_fair"] == 0.0
    assert agg["rmse_fair"] == 100.0
    assert agg["rpg"] == 0.0
    for key in ("accuracy_valid", "f1_valid", "rmse_valid", "rpg_valid"):
        assert math.isnan(agg[key]), key


def test_aggregate_empty_groups_are_nan():
    empty = aggregate_outcomes([])
    assert empty["n_episodes"] == 0
    for key in ("success_rate", "accuracy_fair", "f1_fair", "rmse_fair", "rpg"):
        assert math.isnan(empty[key]), key
    only_classification = aggregate_outcomes([_outcome("classification", True, accuracy=1.0, f1=1.0, rpg=1.0)])
    assert math.isnan(only_classification["rmse_fair"]) and math.isnan(only_classification["rmse_valid"])


def test_aggregate_never_fills_a_missing_metric():
    # a valid regression run without a known range has no RMSE %: the mean is NaN, not 0 or 100
    agg = aggregate_outcomes([_outcome("regression", True, rmse_pct_range=float("nan"), rpg=0.5)])
    assert math.isnan(agg["rmse_fair"])
    agg = aggregate_outcomes([_outcome("classification", True, f1=0.5)])
    assert math.isnan(agg["accuracy_fair"])


def test_aggregate_leaves_out_undefined_rpg():
    agg = aggregate_outcomes([_outcome("classification", True, accuracy=1.0, f1=1.0, rpg=float("nan")),
                              _outcome("classification", False)])
    assert agg["rpg"] == 0.0 and agg["n_rpg"] == 1
    assert math.isnan(agg["rpg_valid"])


def test_format_results_table():
    agg = aggregate_outcomes([
        _outcome("classification", True, accuracy=0.8, f1=0.6, rpg=0.5),
        _outcome("classification", False),
    ])
    table = format_results_table([("scripted", agg)])
    lines = table.splitlines()
    assert lines[0] == (
        "| Policy/Run | Episodes | Success Rate (%) | Accuracy (Fair) | F1 (Fair) | RMSE (Fair) (%) | RPG |"
    )
    assert lines[2] == "| scripted | 2 | 50.0 | 0.400 | 0.300 | n/a | 0.250 |"
