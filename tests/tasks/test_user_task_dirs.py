"""User task directories: manifests, validation errors that say what to fix, no labels in public files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mappa_env.tasks import ensure_materialized, load_tasks

MANIFEST = """title = "Toy churn"
description = "Each row is a customer."
task_type = "classification"
target = "churned"
id_column = "cid"
metric = "f1"
split = "heldout"
"""


def _make(task_dir, manifest=MANIFEST, *, json_manifest=None):
    task_dir.mkdir(parents=True)
    pd.DataFrame({"cid": ["a", "b", "c", "d"], "age": [20, 30, 40, 50], "churned": ["no", "yes", "no", "no"]}).to_csv(task_dir / "train.csv", index=False)
    pd.DataFrame({"cid": ["e", "f"], "age": [25, 35]}).to_csv(task_dir / "test.csv", index=False)
    pd.DataFrame({"cid": ["e", "f"], "churned": ["no", "no"]}).to_csv(task_dir / "sample_submission.csv", index=False)
    pd.DataFrame({"cid": ["e", "f"], "churned": ["yes", "no"]}).to_csv(task_dir / "answers.csv", index=False)
    if json_manifest is not None:
        (task_dir / "task.json").write_text(json.dumps(json_manifest))
    else:
        (task_dir / "task.toml").write_text(manifest)
    return task_dir


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_single_task_dir_loads_and_materialises_without_answers(tmp_path, cache):
    task_dir = _make(tmp_path / "churn")
    (task,) = load_tasks(str(task_dir))
    assert (task.id, task.task_type, task.metric, task.split) == ("user/churn", "classification", "f1", "heldout")
    assert task.positive_label == "yes" and task.extra["classes"] == ["no", "yes"]
    assert "Task type: classification" in task.description and "Each row is a customer." in task.description
    task = ensure_materialized(task)
    assert cache in task.public_dir.parents
    assert sorted(p.name for p in task.public_dir.iterdir()) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert pd.read_csv(task.answers_path)["churned"].tolist() == ["yes", "no"]


def test_parent_dir_is_a_suite_with_json_manifest(tmp_path):
    _make(tmp_path / "suite" / "one")
    _make(tmp_path / "suite" / "two", json_manifest={
        "title": "Toy age", "description": "Rows are customers.", "task_type": "regression",
        "target": "churned", "id_column": "cid", "metric": "rmse"})
    # "two" declares regression on a string target: validation must say so.
    with pytest.raises(ValueError, match="must be numeric"):
        load_tasks("user", path=tmp_path / "suite")
    (tmp_path / "suite" / "two" / "task.json").write_text(json.dumps({
        "title": "Toy 2", "description": "Rows are customers.", "task_type": "classification",
        "target": "churned", "id_column": "cid", "metric": "accuracy"}))
    tasks = load_tasks("user", path=tmp_path / "suite", split="train")
    assert [t.id for t in tasks] == ["user/two"]
    assert len(load_tasks("user", path=tmp_path / "suite")) == 2


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: (d / "answers.csv").unlink(), r"missing \['answers.csv'\]"),
    (lambda d: (d / "task.toml").write_text(MANIFEST.replace('metric = "f1"', 'metric = "rmse"')), "does not fit classification"),
    (lambda d: (d / "task.toml").write_text(MANIFEST.replace('task_type = "classification"', 'task_type = "auto"')), "task_type must be"),
    (lambda d: (d / "task.toml").write_text(MANIFEST.replace('target = "churned"\n', "")), r"missing keys \['target'\]"),
    (lambda d: (d / "task.toml").write_text(MANIFEST + 'colour = "red"\n'), r"unknown keys \['colour'\]"),
    (lambda d: (d / "task.toml").write_text("title = [broken"), "not valid TOML"),
    (lambda d: pd.DataFrame({"cid": ["e", "g"], "churned": ["no", "no"]}).to_csv(d / "answers.csv", index=False), "ids differ from test.csv"),
    (lambda d: pd.DataFrame({"cid": ["e", "e"], "age": [1, 2]}).to_csv(d / "test.csv", index=False), "duplicated"),
    (lambda d: pd.DataFrame({"cid": ["e", "f"], "age": [1, 2], "churned": ["no", "no"]}).to_csv(d / "test.csv", index=False), "contains the target"),
    (lambda d: pd.DataFrame({"id": ["e", "f"], "churned": ["no", "no"]}).to_csv(d / "sample_submission.csv", index=False), r"missing column\(s\) \['cid'\]"),
])
def test_invalid_task_dirs_explain_the_fix(tmp_path, edit, message):
    task_dir = _make(tmp_path / "bad")
    edit(task_dir)
    with pytest.raises(ValueError, match=message):
        load_tasks(str(task_dir))


def test_empty_dir_is_not_a_suite(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no task"):
        load_tasks("user", path=tmp_path / "empty")
