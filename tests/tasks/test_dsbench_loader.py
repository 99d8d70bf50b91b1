"""The DSBench loader on a tiny fixture in DSBench's exact data-modeling layout."""

from __future__ import annotations

import pandas as pd
import pytest

from mappa_env.tasks import ensure_materialized, get_task, load_tasks
from mappa_env.tasks.dsbench import infer_metric

REGRESSION_TEXT = "# House prices\n\nPredict the sale price.\n\n## Evaluation\n\nSubmissions are scored on the Root Mean Squared Error (RMSE).\n"
CLASSIFICATION_TEXT = "# Titanic\n\nWho survived?\n\n## Evaluation\n\nThe score is the percentage of passengers you correctly predict (accuracy).\n"
AMBIGUOUS_TEXT = "# Mystery\n\nMake good predictions. Your score will be computed by us.\n"


def _write_task(root, name, text, *, target="y", values=(1.5, 2.5, 3.5, 4.5), sample_name="sample_submission.csv"):
    folder = root / "data_resplit" / name
    folder.mkdir(parents=True)
    (root / "task").mkdir(exist_ok=True)
    (root / "answers" / name).mkdir(parents=True)
    pd.DataFrame({"Id": [1, 2, 3, 4], "x": [0.1, 0.2, 0.3, 0.4], target: list(values)}).to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"Id": [5, 6], "x": [0.5, 0.6]}).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"Id": [5, 6], target: [values[0]] * 2}).to_csv(folder / sample_name, index=False)
    pd.DataFrame({"Id": [5, 6], target: [values[1], values[2]]}).to_csv(root / "answers" / name / "test_answer.csv", index=False)
    (root / "task" / f"{name}.txt").write_text(text)


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "dsbench"
    _write_task(root, "house-prices", REGRESSION_TEXT, target="SalePrice")
    _write_task(root, "titanic", CLASSIFICATION_TEXT, target="Survived", values=(0, 1, 0, 0),
                sample_name="gender_submission.csv")
    return root


def test_loads_layout_with_inferred_types(root):
    tasks = load_tasks("dsbench", root=root)
    assert [t.id for t in tasks] == ["dsbench/house-prices", "dsbench/titanic"]
    house, titanic = tasks
    assert (house.task_type, house.metric, house.id_column, house.target) == ("regression", "rmse", "Id", "SalePrice")
    assert (titanic.task_type, titanic.metric, titanic.target) == ("classification", "accuracy", "Survived")
    assert all(t.split == "heldout" and t.suite == "dsbench" for t in tasks)
    assert house.answers_path == root / "answers" / "house-prices" / "test_answer.csv"


def test_materialise_copies_public_files_under_standard_names(root):
    task = ensure_materialized(get_task("dsbench/titanic", suite="dsbench", root=root))
    assert sorted(p.name for p in task.public_dir.iterdir()) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert root not in task.public_dir.parents  # a cache copy, never the source folder
    assert task.positive_label == "1" and task.extra["classes"] == ["0", "1"]
    assert "Task type: classification" in task.description and "test.csv` with 2 rows" in task.description
    house = ensure_materialized(get_task("house-prices", suite="dsbench", root=root))
    assert house.target_range == pytest.approx(3.0)
    # Listing again after materialisation returns complete records.
    assert load_tasks("dsbench", root=root)[0].extra["materialized"] is True


def test_train_names_and_split_filter(root):
    assert [t.id for t in load_tasks("dsbench", split="train", root=root, train_names=["titanic"])] == ["dsbench/titanic"]
    assert [t.id for t in load_tasks("dsbench", split="heldout", root=root, train_names=["titanic"])] == ["dsbench/house-prices"]


def test_unknown_task_type_needs_declaration(root):
    _write_task(root, "mystery", AMBIGUOUS_TEXT)
    with pytest.raises(ValueError, match=r"overrides=.*'mystery'"):
        load_tasks("dsbench", root=root)
    tasks = load_tasks("dsbench", root=root, overrides={"mystery": {"task_type": "regression", "metric": "mae"}})
    mystery = next(t for t in tasks if t.id == "dsbench/mystery")
    assert (mystery.task_type, mystery.metric) == ("regression", "mae")


def test_manifest_file_declares_types(root, tmp_path):
    _write_task(root, "mystery", AMBIGUOUS_TEXT)
    manifest = tmp_path / "types.json"
    manifest.write_text('{"mystery": {"task_type": "classification"}}')
    mystery = get_task("mystery", suite="dsbench", root=root, manifest=manifest)
    assert (mystery.task_type, mystery.metric) == ("classification", "accuracy")


def test_missing_answers_is_a_clear_error(root):
    (root / "answers" / "titanic" / "test_answer.csv").unlink()
    with pytest.raises(ValueError, match=r"titanic.*test_answer\.csv.*expected layout"):
        load_tasks("dsbench", root=root)


def test_missing_top_level_folder(tmp_path):
    (tmp_path / "data_resplit").mkdir()
    with pytest.raises(ValueError, match=r"no folder task/.*expected layout"):
        load_tasks("dsbench", root=tmp_path)


def test_name_mismatch_between_folders(root):
    (root / "task" / "titanic.txt").rename(root / "task" / "titanic-v2.txt")
    with pytest.raises(ValueError, match=r"titanic.*titanic\.txt"):
        load_tasks("dsbench", root=root)


def test_no_sample_submission(root):
    (root / "data_resplit" / "house-prices" / "sample_submission.csv").unlink()
    with pytest.raises(ValueError, match="sample submission"):
        load_tasks("dsbench", root=root)


def test_unknown_train_name(root):
    with pytest.raises(ValueError, match="not folders"):
        load_tasks("dsbench", root=root, train_names=["titanik"])


@pytest.mark.parametrize(("text", "expected"), [
    ("Evaluation: mean absolute error", ("mae", "regression")),
    ("scored with RMSLE", ("rmsle", "regression")),
    ("Evaluation\nSubmissions are evaluated on area under the ROC curve", ("auc", "classification")),
    ("evaluated using the multi-class logarithmic loss", ("log_loss", "classification")),
    ("we use the F1 score", ("f1", "classification")),
    ("nothing about scoring", None),
])
def test_infer_metric(text, expected):
    assert infer_metric(text) == expected


def test_competition_metrics_the_grader_lacks_are_graded_with_the_closest_one(tmp_path, monkeypatch):
    from mappa_env.envs.dsbench.grader import grade_submission

    monkeypatch.setenv("MAPPA_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "dsbench"
    _write_task(root, "bikes", "## Evaluation\n\nSubmissions are scored on RMSLE.\n")
    _write_task(root, "churn", "## Evaluation\n\nArea under the ROC curve.\n", target="churn", values=(0, 1, 0, 1))
    bikes, churn = (ensure_materialized(t) for t in load_tasks("dsbench", root=root))
    assert (bikes.metric, bikes.extra["source_metric"]) == ("rmse", "rmsle")
    assert (churn.metric, churn.extra["source_metric"]) == ("roc_auc", "auc")
    submission = tmp_path / "submission.csv"
    pd.DataFrame({"Id": [5, 6], "churn": [1, 0]}).to_csv(submission, index=False)  # the true labels
    outcome = grade_submission(churn, submission)
    assert outcome["valid"] and outcome["metrics"]["primary"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot grade a regression task"):
        load_tasks("dsbench", root=root, overrides={"bikes": {"metric": "accuracy"}})
