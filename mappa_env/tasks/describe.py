"""The standard Kaggle-style sections every task description ends with.

Agents see only the description and the files, so the text states plainly: the task type, the target,
the classes, the id column, the metric and the exact submission format.
"""

from __future__ import annotations

from collections.abc import Sequence

METRIC_TEXT = {
    "accuracy": "accuracy (share of test rows whose predicted class equals the true class; higher is better)",
    "f1": "F1 score of the positive class `{positive}` (harmonic mean of precision and recall; higher is better)",
    "macro_f1": "macro-averaged F1 score (unweighted mean of the per-class F1 scores; higher is better)",
    "rmse": "root mean squared error (RMSE) between predicted and true values; lower is better",
    "mae": "mean absolute error (MAE) between predicted and true values; lower is better",
}


def metric_text(metric: str, positive_label: str | None = None) -> str:
    """A one-line explanation of ``metric`` for agents."""
    text = METRIC_TEXT.get(metric, metric)
    return text.format(positive=positive_label) if "{positive}" in text else text


def standard_sections(
    *,
    task_type: str,
    target: str,
    id_column: str,
    metric: str,
    n_train: int | None,
    n_test: int | None,
    classes: Sequence[str] | None = None,
    positive_label: str | None = None,
    target_about: str | None = None,
) -> str:
    """Markdown sections: task type, target, evaluation, files and submission format."""
    lines = ["## Task", "", f"Task type: {task_type}", ""]
    what = f" ({target_about})" if target_about else ""
    lines.append(f"Predict the target column `{target}`{what} for every row of `test.csv`.")
    if task_type == "classification" and classes:
        lines.append(f"Classes ({len(classes)}): " + ", ".join(f"`{c}`" for c in classes) + ".")
        if positive_label is not None:
            lines.append(f"Positive class: `{positive_label}`.")
    lines.append(f"Rows are identified by the id column `{id_column}`.")
    lines += ["", "## Evaluation", "", f"Metric: `{metric}`: {metric_text(metric, positive_label)}.", ""]
    train_rows = f" with {n_train} rows" if n_train is not None else ""
    test_rows = f" with {n_test} rows" if n_test is not None else ""
    lines += [
        "## Files",
        "",
        f"- `train.csv`{train_rows}: the id column `{id_column}`, the features and the target `{target}`.",
        f"- `test.csv`{test_rows}: the id column and the features, without the target.",
        f"- `sample_submission.csv`: columns `{id_column}`, `{target}`; one row per test id, "
        "filled with a constant placeholder.",
        "",
        "## Submission format",
        "",
        f"Write `submission.csv` with exactly the columns `{id_column},{target}` (in this order) and one "
        "row per id of `test.csv`, like `sample_submission.csv`.",
    ]
    if task_type == "classification":
        lines.append("Predicted values must be class labels exactly as they appear in `train.csv`.")
    else:
        lines.append("Predicted values must be numbers.")
    return "\n".join(lines) + "\n"
