"""The ``dsbench`` suite: DSBench data-modeling tasks from a local copy of the DSBench data.

Expected layout under ``root`` (DSBench's ``data_modeling/data`` folder)::

    root/data_resplit/<name>/train.csv
    root/data_resplit/<name>/test.csv               # no target column
    root/data_resplit/<name>/<any other>.csv        # the sample submission (exactly one other CSV,
                                                    #   or one whose name contains "sample"/"submission")
    root/task/<name>.txt                            # the Kaggle competition text
    root/answers/<name>/test_answer.csv             # hidden labels: id column + target

The id column is the first column of the sample submission and the target its second. The task type is
never guessed from label values: it comes from ``overrides`` / a ``manifest`` JSON file
(``{"<name>": {"task_type": "regression", "metric": "rmse"}}``), else from the metric named in the task
text (RMSE, MAE, RMSLE → regression; accuracy, AUC, F1, log loss → classification); if the text is
ambiguous a :class:`ValueError` says how to declare it.

Listing reads only the task texts and CSV header lines. :func:`materialize` (via
:func:`mappa_env.tasks.ensure_materialized`) copies the three public files, under their standard names,
to ``<cache>/tasks/dsbench-v1/<key>/<name>/public/`` and counts rows; ``answers_path`` points to the
original ``test_answer.csv``, which never leaves the host.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

from mappa_env.tasks.cache import atomic_directory, tasks_dir
from mappa_env.tasks.describe import standard_sections
from mappa_env.tasks.task import TabularTask

SUITE = "dsbench"
SUITE_VERSION = "dsbench-v1"
META_FILE = "task.json"

LAYOUT = """expected layout under the DSBench root:
  <root>/data_resplit/<name>/train.csv
  <root>/data_resplit/<name>/test.csv
  <root>/data_resplit/<name>/<sample submission>.csv
  <root>/task/<name>.txt
  <root>/answers/<name>/test_answer.csv"""

# Metric phrases in competition texts → (metric name, task type). Longer phrases first.
_METRICS: list[tuple[str, str, str]] = [
    (r"root mean squared? logarithmic error|\brmsle\b", "rmsle", "regression"),
    (r"root mean squared? error|\brmse\b", "rmse", "regression"),
    (r"mean absolute percentage error|\bmape\b", "mape", "regression"),
    (r"mean absolute error|\bmae\b", "mae", "regression"),
    (r"mean squared error|\bmse\b", "mse", "regression"),
    (r"coefficient of determination|\br2\b|\br\^2\b|r-squared", "r2", "regression"),
    (r"\bauc\b|area under the roc|roc curve|area under the curve", "auc", "classification"),
    (r"log[- ]?loss|logarithmic loss|cross[- ]entropy", "log_loss", "classification"),
    (r"macro[- ]?f1|macro[- ]averaged f1", "macro_f1", "classification"),
    (r"\bf1\b|f-score|f1-score|f1 score", "f1", "classification"),
    (r"quadratic weighted kappa|cohen'?s kappa", "kappa", "classification"),
    (r"\baccuracy\b|classification accuracy", "accuracy", "classification"),
]


# Competition metrics the grader does not implement are graded with the closest one it does; the
# competition's own name is kept in Task.extra["source_metric"] so reports can say so.
GRADED_METRIC = {
    "rmsle": "rmse", "mse": "rmse", "mape": "mae", "r2": "rmse",
    "auc": "roc_auc", "log_loss": "accuracy", "kappa": "accuracy",
}
SUPPORTED_METRICS = {
    "classification": ("accuracy", "f1", "macro_f1", "roc_auc"),
    "regression": ("rmse", "mae"),
}


def load_dsbench(
    root: str | Path,
    *,
    train_names: list[str] | tuple[str, ...] = (),
    names: list[str] | tuple[str, ...] | None = None,
    overrides: dict[str, dict] | None = None,
    manifest: str | Path | None = None,
) -> list[TabularTask]:
    """List DSBench tasks under ``root`` (cheap: no data file is read beyond its header).

    Args:
        root: the DSBench data folder (see the module docstring for the layout).
        train_names: task names placed in the ``train`` split; all others are ``heldout``.
        names: only these tasks (default: every folder of ``data_resplit``).
        overrides: per task name, ``{"task_type": ..., "metric": ...}`` taking precedence over the text.
        manifest: a JSON file with the same structure as ``overrides`` (overrides win over it).
    """
    root = Path(root).expanduser()
    declared = _declared(manifest, overrides)
    resplit = root / "data_resplit"
    for sub in ("data_resplit", "task", "answers"):
        if not (root / sub).is_dir():
            raise ValueError(f"DSBench root {root} has no folder {sub}/; {LAYOUT}")
    available = sorted(p.name for p in resplit.iterdir() if p.is_dir())
    wanted = list(names) if names is not None else available
    unknown = sorted(set(wanted) - set(available)) + sorted(set(train_names) - set(available))
    if unknown:
        raise ValueError(f"DSBench tasks {unknown} are not folders of {resplit}; available: {available}")
    return [_task(root, name, declared.get(name, {}), name in set(train_names)) for name in wanted]


def _declared(manifest: str | Path | None, overrides: dict[str, dict] | None) -> dict[str, dict]:
    declared: dict[str, dict] = {}
    if manifest is not None:
        try:
            declared = json.loads(Path(manifest).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read DSBench manifest {manifest}: {exc}") from exc
    for name, entry in (overrides or {}).items():
        declared[name] = {**declared.get(name, {}), **entry}
    for name, entry in declared.items():
        bad = set(entry) - {"task_type", "metric"}
        if bad or entry.get("task_type", "regression") not in ("classification", "regression"):
            raise ValueError(
                f"DSBench override for {name!r} must look like "
                f"{{'task_type': 'classification' | 'regression', 'metric': '<name>'}}, got {entry!r}"
            )
    return declared


def _files(root: Path, name: str) -> dict[str, Path]:
    folder = root / "data_resplit" / name
    files = {
        "train": folder / "train.csv",
        "test": folder / "test.csv",
        "text": root / "task" / f"{name}.txt",
        "answers": root / "answers" / name / "test_answer.csv",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ValueError(f"DSBench task {name!r} is missing {missing}; {LAYOUT}")
    others = sorted(p for p in folder.glob("*.csv") if p.name not in ("train.csv", "test.csv"))
    if len(others) > 1:
        others = [p for p in others if re.search(r"sample|submission", p.name, re.I)] or others
    if len(others) != 1:
        found = [p.name for p in others] or "none"
        raise ValueError(
            f"DSBench task {name!r}: need exactly one sample submission CSV in {folder} besides "
            f"train.csv and test.csv (found {found}); {LAYOUT}"
        )
    files["sample"] = others[0]
    return files


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def infer_metric(text: str) -> tuple[str, str] | None:
    """``(metric, task_type)`` named in a competition text, or None if absent or ambiguous."""
    low = text.lower()
    match = re.search(r"evaluation(.{0,1500})", low, re.S)  # prefer the Evaluation section
    for scope in ([match.group(1)] if match else []) + [low]:
        found = [(m, t) for pattern, m, t in _METRICS if re.search(pattern, scope)]
        types = {t for _, t in found}
        if len(types) == 1:
            return found[0]
    return None


def _task(root: Path, name: str, declared: dict, in_train: bool) -> TabularTask:
    files = _files(root, name)
    sample_cols = _header(files["sample"])
    if len(sample_cols) < 2:
        raise ValueError(f"DSBench task {name!r}: sample submission {files['sample']} needs an id column and a target column")
    id_column, target = sample_cols[0], sample_cols[1]
    for key, need in (("train", (id_column, target)), ("test", (id_column,)), ("answers", (id_column, target))):
        cols = _header(files[key])
        absent = [c for c in need if c not in cols]
        if absent:
            raise ValueError(f"DSBench task {name!r}: {files[key]} lacks column(s) {absent} named by the sample submission")
    if target in _header(files["test"]):
        raise ValueError(f"DSBench task {name!r}: {files['test']} contains the target column {target!r}")
    text = files["text"].read_text(encoding="utf-8", errors="replace")
    inferred = infer_metric(text)
    task_type = declared.get("task_type") or (inferred[1] if inferred else None)
    metric = declared.get("metric") or (inferred[0] if inferred and inferred[1] == task_type else None)
    if task_type is None:
        raise ValueError(
            f"DSBench task {name!r}: cannot tell classification from regression from the metric in "
            f"{files['text']}. Declare it: load_tasks('dsbench', root=..., overrides={{{name!r}: "
            "{'task_type': 'regression', 'metric': 'rmse'}}) or the same mapping in a manifest JSON file."
        )
    metric = metric or ("rmse" if task_type == "regression" else "accuracy")
    source_metric, metric = metric, GRADED_METRIC.get(metric, metric)
    if metric not in SUPPORTED_METRICS[task_type]:
        raise ValueError(
            f"DSBench task {name!r}: metric {source_metric!r} cannot grade a {task_type} task; declare one of "
            f"{SUPPORTED_METRICS[task_type]} with overrides={{{name!r}: {{'metric': ...}}}} or a manifest"
        )
    out = _cache_dir(root, name, files)
    title = name.replace("-", " ").replace("_", " ").strip().capitalize()
    meta = _read_meta(out)
    return TabularTask(
        id=f"{SUITE}/{name}",
        title=title,
        description=meta["description"] if meta else text,
        task_type=task_type,  # type: ignore[arg-type]
        target=target,
        id_column=id_column,
        metric=metric,
        split="train" if in_train else "heldout",
        suite=SUITE,
        public_dir=out / "public",
        answers_path=files["answers"],
        positive_label=meta["positive_label"] if meta else None,
        target_range=meta["target_range"] if meta else None,
        extra={**(meta["extra"] if meta else {}), "materialized": meta is not None,
               "root": str(root), "name": name, "targets": sample_cols[1:], "source_metric": source_metric},
    )


def _cache_dir(root: Path, name: str, files: dict[str, Path]) -> Path:
    # Keyed by the source files' identity, so edited sources are re-materialised, not served stale.
    key = hashlib.sha256()
    for path in sorted(files.values()):
        st = path.stat()
        key.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return tasks_dir(SUITE_VERSION) / key.hexdigest()[:16] / name


def _read_meta(out: Path) -> dict | None:
    try:
        return json.loads((out / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def materialize(task: TabularTask) -> TabularTask:
    """Copy the public files of a pending DSBench task into the cache; return the complete record."""
    import dataclasses

    root, name = Path(task.extra["root"]), task.extra["name"]
    files = _files(root, name)
    out = task.public_dir.parent
    atomic_directory(out, lambda tmp: _build(task, files, tmp), complete_marker=META_FILE)
    meta = _read_meta(out)
    assert meta is not None
    return dataclasses.replace(
        task, description=meta["description"], positive_label=meta["positive_label"],
        target_range=meta["target_range"], extra={**task.extra, **meta["extra"], "materialized": True},
    )


def _build(task: TabularTask, files: dict[str, Path], out: Path) -> None:
    import pandas as pd

    public = out / "public"
    public.mkdir()
    for key, dest in (("train", "train.csv"), ("test", "test.csv"), ("sample", "sample_submission.csv")):
        shutil.copyfile(files[key], public / dest)
    train_y = pd.read_csv(files["train"], usecols=[task.target])[task.target]
    answers_y = pd.read_csv(files["answers"], usecols=[task.target])[task.target]
    n_test = len(pd.read_csv(files["test"], usecols=[task.id_column]))
    positive, classes, target_range = None, None, None
    if task.task_type == "regression":
        both = pd.concat([train_y, answers_y]).astype(float)
        target_range = float(both.max() - both.min())
    else:
        counts = train_y.astype(str).value_counts()
        if len(counts) <= 50:
            classes = sorted(counts.index.tolist())
        if len(counts) == 2:
            positive = min(counts.index, key=lambda c: (counts[c], c))
    text = files["text"].read_text(encoding="utf-8", errors="replace").rstrip()
    description = text + "\n\n" + standard_sections(
        task_type=task.task_type, target=task.target, id_column=task.id_column, metric=task.metric,
        n_train=len(train_y), n_test=n_test, classes=classes, positive_label=positive,
    )
    extra = {"n_train": len(train_y), "n_test": n_test}
    if classes is not None:
        extra |= {"n_classes": len(classes), "classes": classes}
    meta = {"description": description, "positive_label": positive, "target_range": target_range, "extra": extra}
    (out / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
