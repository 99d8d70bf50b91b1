"""Host-side grading of a DSBench-style ``submission.csv`` against a task's hidden answers.

The grader runs on the host, never in the sandbox: it is the only code that reads ``answers.csv``.
A submission is *valid* when it is a readable CSV of at most :data:`MAX_SUBMISSION_BYTES` whose columns are
exactly the sample submission's columns (in any order), with every test id exactly once and nothing else,
and with a usable prediction in every row (a finite number for regression, a non-empty label for
classification). An invalid submission is data, not an exception: the outcome says why, precisely enough
for the coach and the agent to act on. Exceptions are raised only for broken task data (a misconfigured
``TabularTask`` or inconsistent files on the host).

Rows are matched to the answers BY ID, never by row position (a shuffled correct submission scores the
same as a sorted one). Ids and classification labels are compared as normalised strings
(:func:`mappa_env.metrics.normalize_label`: ``1``, ``"1"`` and ``"1.0"`` agree). A label the task has never
seen is valid but wrong. Binary tasks may be answered with positive-class probabilities (see
:func:`mappa_env.metrics.binary_scores`).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mappa_env.metrics import (
    HIGHER_IS_BETTER,
    PERFECT_SCORE,
    constant_baseline_score,
    metric_value,
    normalize_label,
    normalize_labels,
    relative_performance_gap,
    score_predictions,
)
from mappa_env.tasks.task import TabularTask

#: Submissions larger than this are refused unread (a test set of 10^5 rows fits in a few MB).
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024

_REGRESSION_METRICS = frozenset({"rmse", "mae"})

#: How many offending ids or rows a reason quotes.
_EXAMPLES = 3


class _Rejected(Exception):
    """Internal: the submission is invalid for the given reason. Never escapes :func:`grade_submission`."""


@dataclass(frozen=True)
class _Reference:
    """What grading needs from the host files of one task, loaded once per file version."""

    ids: tuple[str, ...]  # normalised test ids, in answers.csv order
    truth: tuple[Any, ...]  # labels (str) or targets (float), aligned with ids
    columns: tuple[str, ...]  # the sample submission's columns
    baseline: float  # the constant baseline's value of the primary metric


def grade_submission(task: TabularTask, submission_path: Path) -> dict[str, Any]:
    """Grade one submission file against ``task``'s hidden answers.

    Returns the outcome mapping with exactly the keys ``valid`` (bool), ``reason`` (``"ok"`` when valid,
    else why not), ``metrics`` (empty when invalid; otherwise the :func:`~mappa_env.metrics.score_predictions`
    values plus ``primary`` (the value of ``task.metric``), the same value under the metric's own name
    (``roc_auc``, ``macro_f1``, ...), ``baseline`` (the constant baseline's value of that metric) and
    ``rpg``), ``task_id`` and ``task_type``.

    Raises ValueError when the task itself is broken (unknown metric, answers inconsistent with test.csv,
    columns missing from the host files).
    """
    reference = _load_reference(task)
    try:
        frame = _read_submission(Path(submission_path))
        predictions = _aligned_predictions(task, reference, frame)
    except _Rejected as rejection:
        return _outcome(task, valid=False, reason=str(rejection), metrics={})
    return _outcome(task, valid=True, reason="ok", metrics=_score(task, reference, predictions))


def _outcome(task: TabularTask, *, valid: bool, reason: str, metrics: dict[str, float]) -> dict[str, Any]:
    return {"valid": valid, "reason": reason, "metrics": metrics, "task_id": task.id, "task_type": task.task_type}


def _score(task: TabularTask, reference: _Reference, predictions: list[Any]) -> dict[str, float]:
    kwargs = {"positive_label": task.positive_label, "target_range": task.target_range}
    metrics = score_predictions(task.task_type, reference.truth, predictions, **kwargs)
    primary = metric_value(task.metric, reference.truth, predictions, **kwargs)
    rpg = relative_performance_gap(
        primary, reference.baseline, PERFECT_SCORE[task.metric], HIGHER_IS_BETTER[task.metric]
    )
    # The primary metric also under its own name (a ROC-AUC task answered with labels has no "roc_auc" from
    # score_predictions; "macro_f1" is never there). Where the name is there already it is the same value.
    return {**metrics, task.metric: metrics.get(task.metric, primary), "primary": primary,
            "baseline": reference.baseline, "rpg": rpg}


# ----------------------------------------------------------------------------------------------------
# Reading the submission (everything here may reject; nothing here may raise)
# ----------------------------------------------------------------------------------------------------


def _read_submission(path: Path) -> pd.DataFrame:
    """The submission as a frame of the raw cell strings, or :class:`_Rejected` with the reason.

    Parsed with the strict stdlib ``csv`` reader rather than ``pd.read_csv``: pandas silently turns rows
    with extra fields into an index and pads short rows, which would grade a malformed file.
    """
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    rows: list[list[str]] = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank lines carry nothing
            if rows and len(row) != len(rows[0]):
                raise _Rejected(
                    f"not a CSV: line {reader.line_num} has {len(row)} fields, the header has {len(rows[0])}"
                )
            rows.append(row)
    except csv.Error as exc:
        raise _Rejected(f"not a CSV: {_first_line(exc)} (line {reader.line_num})") from None
    if not rows:
        raise _Rejected("empty file")
    return pd.DataFrame(rows[1:], columns=rows[0], dtype=object)


def _read_text(path: Path) -> str:
    # The file was written by untrusted code and is read on the host: never follow a symbolic link
    # (a link to the hidden answers would otherwise grade as a perfect submission).
    if path.is_symlink():
        raise _Rejected(f"{path.name} is a symbolic link; write a regular file")
    if not path.exists():
        raise _Rejected(f"{path.name} not found in the workspace")
    if not path.is_file():
        raise _Rejected(f"{path.name} is not a regular file")
    try:
        # O_NONBLOCK: a FIFO swapped in after the checks must not hang the host (no effect on files).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:  # replaced by a link between the checks above and here
        raise _Rejected(f"could not read {path.name}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_SUBMISSION_BYTES:
            raise _Rejected(
                f"file too large: {size / 2**20:.1f} MB exceeds the {MAX_SUBMISSION_BYTES / 2**20:.0f} MB limit"
            )
        try:
            data = handle.read(MAX_SUBMISSION_BYTES + 1)
        except OSError as exc:
            raise _Rejected(f"could not read {path.name}: {exc.strerror or exc}") from None
    if b"\x00" in data:  # text never holds NUL bytes; pickles, parquet and zip files do
        raise _Rejected("not a CSV: binary content (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")  # -sig: tolerate the BOM some editors write
    except UnicodeDecodeError as exc:
        raise _Rejected(f"not a CSV: not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not text.strip():
        raise _Rejected("empty file")
    return text


def _first_line(exc: Exception) -> str:
    message = str(exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


# ----------------------------------------------------------------------------------------------------
# Checking columns, ids and values
# ----------------------------------------------------------------------------------------------------


def _aligned_predictions(task: TabularTask, reference: _Reference, frame: pd.DataFrame) -> list[Any]:
    """The predictions in answers order (matched by id), or :class:`_Rejected` with the reason."""
    _check_columns(reference.columns, frame)
    if frame.empty:
        raise _Rejected("no rows: the file has a header but no predictions")
    ids = [normalize_label(v) for v in frame[task.id_column]]
    _check_ids(reference.ids, ids)
    raw = frame[task.target].tolist()
    if task.task_type == "regression":
        values: list[Any] = _parse_numbers(task.target, raw)
    else:
        values = _check_labels(task.target, raw)
    by_id = dict(zip(ids, values))
    return [by_id[i] for i in reference.ids]


def _check_columns(expected: tuple[str, ...], frame: pd.DataFrame) -> None:
    # Order-insensitive: pandas users often reorder columns, and grading matches by name anyway.
    got = [str(c) for c in frame.columns]
    if sorted(got) != sorted(expected):
        # The most common cause by far is pandas' index written as an unnamed first column.
        hint = "; an unnamed column usually means the index was written (use index=False)" if "" in got else ""
        raise _Rejected(f"wrong columns: expected {list(expected)}, got {got} (column order does not matter{hint})")


def _examples(values: list[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:_EXAMPLES])
    return f"e.g. {shown}, ..." if len(values) > _EXAMPLES else f"e.g. {shown}"


def _check_ids(expected: tuple[str, ...], ids: list[str]) -> None:
    """Every expected id exactly once and nothing else; all problems are reported together."""
    counts = Counter(ids)
    expected_set = set(expected)
    duplicated = [i for i, n in counts.items() if n > 1]
    missing = [i for i in expected if i not in counts]
    extra = [i for i in counts if i not in expected_set]
    problems = []
    if duplicated:
        problems.append(f"duplicate ids: {len(duplicated)} ids appear more than once ({_examples(duplicated)})")
    if missing:
        problems.append(
            f"missing ids: {len(missing)} of {len(expected)} test ids are absent ({_examples(missing)})"
        )
    if extra:
        problems.append(f"extra ids not in test.csv: {len(extra)} ({_examples(extra)})")
    if problems:
        raise _Rejected("; ".join(problems))


def _bad_rows_reason(kind: str, column: str, bad: list[tuple[int, str]], total: int) -> str:
    # Rows are counted from 1 after the header, as a spreadsheet user would count them.
    shown = ", ".join(f"row {row + 1}: {value!r}" for row, value in bad[:_EXAMPLES])
    more = ", ..." if len(bad) > _EXAMPLES else ""
    return f"{kind} values in column {column!r} ({len(bad)} of {total} rows, e.g. {shown}{more})"


def _parse_numbers(column: str, raw: list[str]) -> list[float]:
    values, bad = [], []
    for row, text in enumerate(raw):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):  # NaN and inf cannot be scored: invalid, never imputed
            bad.append((row, text))
        values.append(value)
    if bad:
        raise _Rejected(_bad_rows_reason("unparsable (not finite numbers)", column, bad, len(raw)))
    return values


def _check_labels(column: str, raw: list[str]) -> list[str]:
    labels = normalize_labels(raw)
    bad = [(row, raw[row]) for row in np.flatnonzero(labels == "")]
    if bad:  # an empty cell is a missing prediction, not a label
        raise _Rejected(_bad_rows_reason("empty", column, bad, len(raw)))
    return raw


# ----------------------------------------------------------------------------------------------------
# Host-side reference data (answers, sample columns, constant baseline), cached per file version
# ----------------------------------------------------------------------------------------------------


def _file_version(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _load_reference(task: TabularTask) -> _Reference:
    if task.metric not in HIGHER_IS_BETTER:
        raise ValueError(
            f"task {task.id!r}: unknown metric {task.metric!r}; expected one of {sorted(HIGHER_IS_BETTER)}"
        )
    if (task.task_type == "regression") != (task.metric in _REGRESSION_METRICS):
        raise ValueError(f"task {task.id!r}: metric {task.metric!r} does not fit a {task.task_type} task")
    public = Path(task.public_dir)
    paths = (Path(task.answers_path), public / "train.csv", public / "test.csv", public / "sample_submission.csv")
    for path in paths:
        if not path.is_file():
            raise ValueError(f"task {task.id!r}: host file {path} is missing; rebuild the task directory")
    # The file versions are part of the key so that rewriting a task's files is never served stale data.
    key = tuple(_file_version(p) for p in paths)
    settings = (task.task_type, task.target, task.id_column, task.metric, task.positive_label, task.target_range)
    return _cached_reference(key, settings, task.id)


@lru_cache(maxsize=64)
def _cached_reference(versions: tuple, settings: tuple, task_id: str) -> _Reference:
    (answers_path, *_), (train_path, *_), (test_path, *_), (sample_path, *_) = versions
    task_type, target, id_column, metric, positive_label, target_range = settings
    answers = _read_host_csv(answers_path, [id_column, target], task_id)
    ids = _answer_ids(answers[id_column].tolist(), test_path, id_column, task_id)
    columns = tuple(str(c) for c in pd.read_csv(sample_path, nrows=0).columns)
    if id_column not in columns or target not in columns:
        raise ValueError(
            f"task {task_id!r}: {sample_path} must hold columns {id_column!r} and {target!r}, has {list(columns)}"
        )
    truth = _truth(answers[target].tolist(), task_type, task_id)
    y_train = _read_host_csv(train_path, [target], task_id)[target].tolist()
    if task_type == "regression":  # unparsable training targets are skipped by the baseline, not guessed
        y_train = pd.to_numeric(pd.Series(y_train), errors="coerce").tolist()
    baseline = constant_baseline_score(
        task_type, metric, y_train, truth, positive_label=positive_label, target_range=target_range
    )
    return _Reference(ids=ids, truth=tuple(truth), columns=columns, baseline=baseline)


def _answer_ids(raw_ids: list[str], test_path: str, id_column: str, task_id: str) -> tuple[str, ...]:
    """Normalised answer ids, checked to be unique and to be exactly test.csv's ids."""
    ids = tuple(normalize_labels(raw_ids))
    if len(set(ids)) != len(ids):
        raise ValueError(f"task {task_id!r}: answers.csv has duplicate ids (after normalisation)")
    test_ids = set(normalize_labels(_read_host_csv(test_path, [id_column], task_id)[id_column]))
    if test_ids != set(ids):
        raise ValueError(f"task {task_id!r}: the ids of answers.csv and {test_path} differ")
    return ids


def _read_host_csv(path: str, columns: list[str], task_id: str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c in columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"task {task_id!r}: {path} lacks column(s) {missing}")
    return frame


def _truth(values: list[str], task_type: str, task_id: str) -> list[Any]:
    if task_type == "classification":
        return values
    truth = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(truth)):
        raise ValueError(f"task {task_id!r}: answers.csv has non-numeric regression targets")
    return truth.tolist()
