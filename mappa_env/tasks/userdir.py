"""User task directories: bring your own Kaggle-style task.

One directory is one task; a directory whose sub-directories are task directories is a suite::

    my_task/
      train.csv               # id column, features, target
      test.csv                # id column, features (no target)
      sample_submission.csv   # id column, target (placeholder values)
      answers.csv             # id column, target: the hidden labels, kept on the host
      task.toml               # or task.json, same keys

``task.toml`` example::

    title = "Churn of gym members"
    description = "Each row is a gym member ... (markdown shown to agents)"
    task_type = "classification"      # or "regression"; declared, never guessed
    target = "churned"
    id_column = "member_id"
    metric = "f1"                     # accuracy | f1 | macro_f1 | rmse | mae
    split = "train"                   # optional: "train" (default) or "heldout"
    positive_label = "yes"            # optional, binary F1: default is the minority class

Everything is validated when the suite is loaded (columns, unique ids, answers ids == test ids), with
errors that say what to fix. Because ``answers.csv`` sits next to the public files, the workspace is
never fed from the user directory directly: :func:`materialize` (via
:func:`mappa_env.tasks.ensure_materialized`) copies only the three public files to
``<cache>/tasks/user-v1/<key>/<name>/public/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tomllib
from pathlib import Path
from typing import get_args

from mappa_env.tasks.cache import atomic_directory, tasks_dir
from mappa_env.tasks.describe import standard_sections
from mappa_env.tasks.task import ANSWERS_FILE, PUBLIC_FILES, Split, TabularTask

SUITE = "user"
SUITE_VERSION = "user-v1"
MANIFESTS = ("task.toml", "task.json")
REQUIRED_KEYS = ("title", "description", "task_type", "target", "id_column", "metric")
OPTIONAL_KEYS = ("split", "positive_label", "name")
METRICS = {"classification": ("accuracy", "f1", "macro_f1"), "regression": ("rmse", "mae")}
DONE = ".complete"


def is_task_dir(path: Path) -> bool:
    return any((path / m).is_file() for m in MANIFESTS)


def load_user_tasks(path: str | Path) -> list[TabularTask]:
    """Tasks of one task directory, or of every task sub-directory of ``path``."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"user task path {path} is not a directory")
    if is_task_dir(path):
        return [load_task_dir(path)]
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and is_task_dir(p))
    if not subdirs:
        raise ValueError(
            f"{path} holds no task: a task directory contains {' or '.join(MANIFESTS)}, "
            f"{', '.join(PUBLIC_FILES)} and {ANSWERS_FILE} (see mappa_env.tasks.userdir)"
        )
    return [load_task_dir(p) for p in subdirs]


def read_manifest(task_dir: Path) -> dict:
    """The validated manifest of one task directory."""
    found = [task_dir / m for m in MANIFESTS if (task_dir / m).is_file()]
    if len(found) != 1:
        raise ValueError(f"{task_dir}: need exactly one of {MANIFESTS}, found {[p.name for p in found]}")
    source = found[0]
    try:
        manifest = tomllib.loads(source.read_text()) if source.suffix == ".toml" else json.loads(source.read_text())
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{source}: not valid {source.suffix[1:].upper()}: {exc}") from exc
    missing = [k for k in REQUIRED_KEYS if not manifest.get(k)]
    unknown = sorted(set(manifest) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if missing or unknown:
        raise ValueError(
            f"{source}: missing keys {missing}, unknown keys {unknown}; required: {list(REQUIRED_KEYS)}, "
            f"optional: {list(OPTIONAL_KEYS)}"
        )
    task_type = manifest["task_type"]
    if task_type not in METRICS:
        raise ValueError(f"{source}: task_type must be 'classification' or 'regression', got {task_type!r}")
    if manifest["metric"] not in METRICS[task_type]:
        raise ValueError(f"{source}: metric {manifest['metric']!r} does not fit {task_type}; use one of {METRICS[task_type]}")
    if manifest.get("split", "train") not in get_args(Split):
        raise ValueError(f"{source}: split must be 'train' or 'heldout', got {manifest['split']!r}")
    return manifest


def load_task_dir(task_dir: str | Path) -> TabularTask:
    """Validate one task directory and return its (pending) :class:`TabularTask`."""
    import pandas as pd

    task_dir = Path(task_dir).expanduser().resolve()
    m = read_manifest(task_dir)
    missing = [f for f in (*PUBLIC_FILES, ANSWERS_FILE) if not (task_dir / f).is_file()]
    if missing:
        raise ValueError(f"{task_dir}: missing {missing}; a task directory holds {[*PUBLIC_FILES, ANSWERS_FILE]}")
    idc, target = m["id_column"], m["target"]
    frames = {f: pd.read_csv(task_dir / f, dtype={idc: str}) for f in (*PUBLIC_FILES, ANSWERS_FILE)}
    _check_columns(task_dir, frames, idc, target)
    test_ids = set(frames["test.csv"][idc])
    for f in ("sample_submission.csv", ANSWERS_FILE):
        ids = set(frames[f][idc])
        if ids != test_ids:
            raise ValueError(
                f"{task_dir / f}: ids differ from test.csv ({len(ids - test_ids)} extra, "
                f"{len(test_ids - ids)} missing); it needs exactly one row per test id"
            )
    train_y, answers_y = frames["train.csv"][target], frames[ANSWERS_FILE][target]
    if train_y.isna().any() or answers_y.isna().any():
        raise ValueError(f"{task_dir}: the target {target!r} has missing values in train.csv or {ANSWERS_FILE}")
    positive, classes, target_range = None, None, None
    if m["task_type"] == "regression":
        try:
            both = pd.concat([train_y, answers_y]).astype(float)
        except ValueError as exc:
            raise ValueError(f"{task_dir}: regression target {target!r} must be numeric: {exc}") from exc
        target_range = float(both.max() - both.min())
    else:
        counts = train_y.astype(str).value_counts()
        classes = sorted(counts.index)
        if len(classes) == 2:
            positive = str(m.get("positive_label") or min(classes, key=lambda c: (counts[c], c)))
            if positive not in classes:
                raise ValueError(f"{task_dir}: positive_label {positive!r} is not a class of train.csv {classes}")
    name = m.get("name") or task_dir.name
    description = m["description"].rstrip() + "\n\n" + standard_sections(
        task_type=m["task_type"], target=target, id_column=idc, metric=m["metric"],
        n_train=len(train_y), n_test=len(test_ids), classes=classes, positive_label=positive,
    )
    out = tasks_dir(SUITE_VERSION) / _key(task_dir) / name
    # Always pending: materialize() re-copies when the user edited the directory since the last copy,
    # so grading never uses stale answers (checking costs a few stat calls per reset).
    extra = {"n_train": len(train_y), "n_test": len(test_ids), "dir": str(task_dir), "materialized": False}
    if classes is not None:
        extra |= {"n_classes": len(classes), "classes": classes}
    return TabularTask(
        id=f"{SUITE}/{name}", title=m["title"], description=description, task_type=m["task_type"],
        target=target, id_column=idc, metric=m["metric"], split=m.get("split", "train"), suite=SUITE,
        public_dir=out / "public", answers_path=out / ANSWERS_FILE, positive_label=positive,
        target_range=target_range, extra=extra,
    )


def _check_columns(task_dir: Path, frames: dict, idc: str, target: str) -> None:
    need = {"train.csv": [idc, target], "test.csv": [idc], "sample_submission.csv": [idc, target],
            ANSWERS_FILE: [idc, target]}
    for f, cols in need.items():
        absent = [c for c in cols if c not in frames[f].columns]
        if absent:
            raise ValueError(f"{task_dir / f}: missing column(s) {absent} (manifest: id_column={idc!r}, target={target!r})")
        dupes = frames[f][idc].duplicated().sum()
        if dupes:
            raise ValueError(f"{task_dir / f}: {dupes} duplicated value(s) in the id column {idc!r}; ids must be unique")
    if target in frames["test.csv"].columns:
        raise ValueError(f"{task_dir / 'test.csv'}: contains the target {target!r}; move it to {ANSWERS_FILE}")
    if list(frames["sample_submission.csv"].columns) != [idc, target]:
        raise ValueError(f"{task_dir / 'sample_submission.csv'}: columns must be exactly [{idc!r}, {target!r}]")


def _key(task_dir: Path) -> str:
    return hashlib.sha256(str(task_dir).encode()).hexdigest()[:16]


def materialize(task: TabularTask) -> TabularTask:
    """Copy the public files (and the answers) of a user task into the cache; idempotent."""
    src = Path(task.extra["dir"])

    def build(tmp: Path) -> None:
        (tmp / "public").mkdir()
        for f in PUBLIC_FILES:
            shutil.copyfile(src / f, tmp / "public" / f)
        shutil.copyfile(src / ANSWERS_FILE, tmp / ANSWERS_FILE)
        (tmp / DONE).write_text("")

    out = task.public_dir.parent
    if (out / DONE).is_file():
        # Re-copy when the user edited the task since the last copy.
        if any((src / f).stat().st_mtime_ns > (out / DONE).stat().st_mtime_ns for f in (*PUBLIC_FILES, ANSWERS_FILE)):
            shutil.rmtree(out)
    atomic_directory(out, build, complete_marker=DONE)
    return dataclasses.replace(task, extra={**task.extra, "materialized": True})
