"""The DSBench grader on tiny tasks built in tmp_path: valid, shuffled, partially wrong and invalid submissions."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pandas as pd
import pytest

from mappa_env.envs.dsbench import grader
from mappa_env.envs.dsbench.grader import grade_submission
from mappa_env.tasks.task import TabularTask

OUTCOME_KEYS = {"valid", "reason", "metrics", "task_id", "task_type"}


def _write_task(root: Path, *, task_type, target, id_column, metric, ids, answers, train_target,
                positive_label=None, target_range=None) -> TabularTask:
    public = root / "public"
    public.mkdir(parents=True)
    pd.DataFrame({id_column: [f"t{i}" for i in range(len(train_target))], "x": range(len(train_target)),
                  target: train_target}).to_csv(public / "train.csv", index=False)
    pd.DataFrame({id_column: ids, "x": range(len(ids))}).to_csv(public / "test.csv", index=False)
    pd.DataFrame({id_column: ids, target: [answers[0]] * len(ids)}).to_csv(public / "sample_submission.csv", index=False)
    hidden = root / "hidden"
    hidden.mkdir()
    pd.DataFrame({id_column: ids, target: answers}).to_csv(hidden / "answers.csv", index=False)
    return TabularTask(id=f"test/{root.name}", title="tiny", description="tiny task", task_type=task_type, target=target,
                id_column=id_column, metric=metric, split="train", suite="test", public_dir=public,
                answers_path=hidden / "answers.csv", positive_label=positive_label, target_range=target_range)


@pytest.fixture
def species_task(tmp_path) -> TabularTask:
    # truth [a, g, a, c, a]; train majority "adelie" -> baseline accuracy 3/5
    return _write_task(tmp_path / "species", task_type="classification", target="species", id_column="id",
                       metric="accuracy", ids=["p1", "p2", "p3", "p4", "p5"],
                       answers=["adelie", "gentoo", "adelie", "chinstrap", "adelie"],
                       train_target=["adelie", "adelie", "gentoo"])


@pytest.fixture
def survival_task(tmp_path) -> TabularTask:
    # integer ids and 0/1 labels; truth [1, 1, 0, 0, 1]; train majority 0 -> baseline F1 0
    return _write_task(tmp_path / "survival", task_type="classification", target="survived", id_column="passenger",
                       metric="f1", ids=[1, 2, 3, 4, 5], answers=[1, 1, 0, 0, 1], train_target=[0, 0, 1],
                       positive_label="1")


@pytest.fixture
def price_task(tmp_path) -> TabularTask:
    # truth [1..5], range 4; train mean 2 -> baseline RMSE sqrt(3)
    return _write_task(tmp_path / "price", task_type="regression", target="price", id_column="id", metric="rmse",
                       ids=["r1", "r2", "r3", "r4", "r5"], answers=[1.0, 2.0, 3.0, 4.0, 5.0],
                       train_target=[1.0, 2.0, 3.0], target_range=4.0)


def _submit(tmp_path: Path, frame: pd.DataFrame | None = None, *, text: str | None = None,
            data: bytes | None = None) -> Path:
    path = tmp_path / "workspace" / "submission.csv"
    path.parent.mkdir(exist_ok=True)
    if frame is not None:
        frame.to_csv(path, index=False)
    elif text is not None:
        path.write_text(text)
    else:
        path.write_bytes(data or b"")
    return path


def _grade_invalid(task: TabularTask, path: Path, reason_part: str) -> dict:
    outcome = grade_submission(task, path)
    assert set(outcome) == OUTCOME_KEYS
    assert outcome["valid"] is False, outcome
    assert reason_part in outcome["reason"], outcome["reason"]
    assert outcome["metrics"] == {}
    return outcome


SPECIES_RIGHT = pd.DataFrame({"id": ["p1", "p2", "p3", "p4", "p5"],
                              "species": ["adelie", "gentoo", "adelie", "chinstrap", "adelie"]})
PRICE_RIGHT = pd.DataFrame({"id": ["r1", "r2", "r3", "r4", "r5"], "price": [1.0, 2.0, 3.0, 4.0, 5.0]})


# ---- valid submissions ------------------------------------------------------------------------------


def test_correct_classification_submission(species_task, tmp_path):
    outcome = grade_submission(species_task, _submit(tmp_path, SPECIES_RIGHT))
    assert set(outcome) == OUTCOME_KEYS
    assert outcome["valid"] is True and outcome["reason"] == "ok"
    assert outcome["task_id"] == species_task.id and outcome["task_type"] == "classification"
    assert outcome["metrics"] == pytest.approx(
        {"accuracy": 1.0, "f1": 1.0, "primary": 1.0, "baseline": 0.6, "rpg": 1.0})


def test_correct_regression_submission(price_task, tmp_path):
    outcome = grade_submission(price_task, _submit(tmp_path, PRICE_RIGHT))
    assert outcome["valid"] is True
    assert outcome["metrics"] == pytest.approx(
        {"rmse": 0.0, "mae": 0.0, "rmse_pct_range": 0.0, "primary": 0.0, "baseline": math.sqrt(3), "rpg": 1.0})


def test_mae_is_lower_is_better_in_the_relative_performance_gap(tmp_path):
    # truth [1..5], train mean 2 -> baseline MAE (1 + 0 + 1 + 2 + 3) / 5 = 1.4; predictions off by 1 on one row:
    # MAE 0.2, RPG (0.2 - 1.4) / (0 - 1.4) = 6/7
    task = _write_task(tmp_path / "mae", task_type="regression", target="price", id_column="id", metric="mae",
                       ids=["r1", "r2", "r3", "r4", "r5"], answers=[1.0, 2.0, 3.0, 4.0, 5.0],
                       train_target=[1.0, 2.0, 3.0], target_range=4.0)
    near = pd.DataFrame({"id": ["r1", "r2", "r3", "r4", "r5"], "price": [1.0, 2.0, 3.0, 4.0, 6.0]})
    metrics = grade_submission(task, _submit(tmp_path, near))["metrics"]
    assert metrics["primary"] == pytest.approx(0.2) and metrics["baseline"] == pytest.approx(1.4)
    assert metrics["rpg"] == pytest.approx(6 / 7)


def test_shuffled_submission_grades_by_id(species_task, price_task, tmp_path):
    for task, right in ((species_task, SPECIES_RIGHT), (price_task, PRICE_RIGHT)):
        wrong = right.copy()
        wrong.iloc[2, 1] = right.iloc[3, 1]  # one wrong row, so a row-order grader would differ more
        sorted_outcome = grade_submission(task, _submit(tmp_path, wrong))
        shuffled = wrong.sample(frac=1.0, random_state=3)
        assert list(shuffled["id"]) != list(wrong["id"])
        shuffled_outcome = grade_submission(task, _submit(tmp_path, shuffled))
        assert shuffled_outcome == sorted_outcome


def test_column_order_does_not_matter(species_task, tmp_path):
    outcome = grade_submission(species_task, _submit(tmp_path, SPECIES_RIGHT[["species", "id"]]))
    assert outcome["valid"] is True and outcome["metrics"]["accuracy"] == 1.0


def test_partially_wrong_classification(species_task, tmp_path):
    # truth [a, g, a, c, a], pred [a, g, c, c, g]: accuracy 3/5; macro F1 11/18 (see test_metrics);
    # RPG = (0.6 - 0.6) / (1 - 0.6) = 0
    wrong = SPECIES_RIGHT.assign(species=["adelie", "gentoo", "chinstrap", "chinstrap", "gentoo"])
    metrics = grade_submission(species_task, _submit(tmp_path, wrong))["metrics"]
    assert metrics == pytest.approx({"accuracy": 0.6, "f1": 11 / 18, "primary": 0.6, "baseline": 0.6, "rpg": 0.0})


def test_partially_wrong_binary(survival_task, tmp_path):
    # truth [1,1,0,0,1], pred [1,0,1,0,1]: accuracy 3/5, F1 2/3; baseline F1 0 -> RPG 2/3
    sub = pd.DataFrame({"passenger": [1, 2, 3, 4, 5], "survived": [1, 0, 1, 0, 1]})
    metrics = grade_submission(survival_task, _submit(tmp_path, sub))["metrics"]
    assert metrics == pytest.approx({"accuracy": 0.6, "f1": 2 / 3, "primary": 2 / 3, "baseline": 0.0, "rpg": 2 / 3})


def test_partially_wrong_regression(price_task, tmp_path):
    # errors [1, 0, 0, 0, -2]: RMSE 1, MAE 0.6, 25 % of range 4; RPG = (1 - sqrt3) / (0 - sqrt3)
    sub = PRICE_RIGHT.assign(price=[2.0, 2.0, 3.0, 4.0, 3.0])
    metrics = grade_submission(price_task, _submit(tmp_path, sub))["metrics"]
    assert metrics == pytest.approx({"rmse": 1.0, "mae": 0.6, "rmse_pct_range": 25.0, "primary": 1.0,
                                     "baseline": math.sqrt(3), "rpg": 1 - 1 / math.sqrt(3)})


def test_float_spelled_labels_and_ids_agree(survival_task, tmp_path):
    # a float column written by pandas: ids "1.0", labels "1.0"/"0.0"
    path = _submit(tmp_path, text="passenger,survived\n1.0,1.0\n2.0,1.0\n3.0,0.0\n4.0,0.0\n5.0,1.0\n")
    outcome = grade_submission(survival_task, path)
    assert outcome["valid"] is True and outcome["metrics"]["accuracy"] == 1.0 and outcome["metrics"]["f1"] == 1.0


def test_binary_probabilities_give_roc_auc(survival_task, tmp_path):
    # scores [0.9, 0.4, 0.4, 0.2, 0.6] vs truth [1,1,0,0,1]: > 0.5 -> [1,0,0,0,1], accuracy 4/5, F1 4/5;
    # AUC: positives 0.9, 0.4, 0.6 vs negatives 0.4, 0.2 -> 5.5 / 6
    sub = pd.DataFrame({"passenger": [1, 2, 3, 4, 5], "survived": [0.9, 0.4, 0.4, 0.2, 0.6]})
    metrics = grade_submission(survival_task, _submit(tmp_path, sub))["metrics"]
    assert metrics["accuracy"] == pytest.approx(0.8) and metrics["f1"] == pytest.approx(0.8)
    assert metrics["roc_auc"] == pytest.approx(11 / 12)


@pytest.mark.parametrize(
    "metric, survived, named",
    [
        # labels [1,0,1,0,1] vs truth [1,1,0,0,1] as 0/1 scores: TPR 2/3, FPR 1/2 -> AUC (1 + 2/3 - 1/2) / 2 = 7/12;
        # the constant 0 scores 0.5 -> RPG (7/12 - 1/2) / (1 - 1/2) = 1/6
        ("roc_auc", [1, 0, 1, 0, 1], {"accuracy": 0.6, "f1": 2 / 3, "roc_auc": 7 / 12, "primary": 7 / 12,
                                       "baseline": 0.5, "rpg": 1 / 6}),
        # scores: AUC 11/12 (see test_binary_probabilities_give_roc_auc) -> RPG (11/12 - 1/2) / (1/2) = 5/6
        ("roc_auc", [0.9, 0.4, 0.4, 0.2, 0.6], {"accuracy": 0.8, "f1": 0.8, "roc_auc": 11 / 12,
                                                 "primary": 11 / 12, "baseline": 0.5, "rpg": 5 / 6}),
        # macro F1: class 1 2/3, class 0 (tp 1, fp 1, fn 1) 1/2 -> 7/12, while "f1" stays the positive class's 2/3;
        # the constant 0: class 0 tp 2, fp 3 -> 4/7, class 1 0 -> baseline 2/7; RPG (7/12 - 2/7) / (5/7) = 5/12
        ("macro_f1", [1, 0, 1, 0, 1], {"accuracy": 0.6, "f1": 2 / 3, "macro_f1": 7 / 12, "primary": 7 / 12,
                                        "baseline": 2 / 7, "rpg": 5 / 12}),
    ],
)
def test_the_primary_metric_is_also_under_its_own_name(tmp_path, metric, survived, named):
    task = _write_task(tmp_path / metric, task_type="classification", target="survived", id_column="passenger",
                       metric=metric, ids=[1, 2, 3, 4, 5], answers=[1, 1, 0, 0, 1], train_target=[0, 0, 1],
                       positive_label="1")
    sub = pd.DataFrame({"passenger": [1, 2, 3, 4, 5], "survived": survived})
    assert grade_submission(task, _submit(tmp_path, sub))["metrics"] == pytest.approx(named)


def test_unknown_label_is_valid_but_wrong(species_task, tmp_path):
    sub = SPECIES_RIGHT.assign(species=["adelie", "gentoo", "adelie", "chinstrap", "emperor"])
    outcome = grade_submission(species_task, _submit(tmp_path, sub))
    assert outcome["valid"] is True and outcome["metrics"]["accuracy"] == pytest.approx(0.8)


def test_cache_follows_rewritten_answers(species_task, tmp_path):
    path = _submit(tmp_path, SPECIES_RIGHT)
    assert grade_submission(species_task, path)["metrics"]["accuracy"] == 1.0
    changed = SPECIES_RIGHT.assign(species=["gentoo", "gentoo", "adelie", "chinstrap", "adelie"])
    changed.to_csv(species_task.answers_path, index=False)
    assert grade_submission(species_task, path)["metrics"]["accuracy"] == pytest.approx(0.8)


# ---- invalid submissions ----------------------------------------------------------------------------


def test_missing_file(species_task, tmp_path):
    _grade_invalid(species_task, tmp_path / "nowhere" / "submission.csv", "submission.csv not found in the workspace")


def test_directory_instead_of_file(species_task, tmp_path):
    (tmp_path / "submission.csv").mkdir()
    _grade_invalid(species_task, tmp_path / "submission.csv", "not a regular file")


def test_missing_ids(species_task, tmp_path):
    outcome = _grade_invalid(species_task, _submit(tmp_path, SPECIES_RIGHT.iloc[:3]), "missing ids: 2 of 5 test ids")
    assert "'p4'" in outcome["reason"]


def test_duplicate_ids(species_task, tmp_path):
    doubled = pd.concat([SPECIES_RIGHT, SPECIES_RIGHT.iloc[[1]]])
    outcome = _grade_invalid(species_task, _submit(tmp_path, doubled), "duplicate ids: 1 ids appear more than once")
    assert "'p2'" in outcome["reason"]


def test_extra_ids(species_task, tmp_path):
    extra = pd.concat([SPECIES_RIGHT, pd.DataFrame({"id": ["zz9"], "species": ["adelie"]})])
    outcome = _grade_invalid(species_task, _submit(tmp_path, extra), "extra ids not in test.csv: 1")
    assert "'zz9'" in outcome["reason"]


def test_wrong_columns(species_task, tmp_path):
    with_index = _submit(tmp_path, text=SPECIES_RIGHT.to_csv())  # the classic forgotten index=False
    _grade_invalid(species_task, with_index, "wrong columns: expected ['id', 'species'], got ['', 'id', 'species']")
    _grade_invalid(species_task, with_index, "index=False")
    renamed = SPECIES_RIGHT.rename(columns={"species": "prediction"})
    _grade_invalid(species_task, _submit(tmp_path, renamed), "got ['id', 'prediction']")


def test_unparsable_regression_values(price_task, tmp_path):
    sub = PRICE_RIGHT.astype({"price": object}).assign(price=[1.0, "abc", 3.0, 4.0, 5.0])
    outcome = _grade_invalid(price_task, _submit(tmp_path, sub), "unparsable")
    assert "'price'" in outcome["reason"] and "row 2: 'abc'" in outcome["reason"]


def test_nan_and_inf_regression_values(price_task, tmp_path):
    sub = PRICE_RIGHT.assign(price=[1.0, float("nan"), 3.0, float("inf"), 5.0])  # NaN is written as ""
    outcome = _grade_invalid(price_task, _submit(tmp_path, sub), "unparsable")
    assert "2 of 5 rows" in outcome["reason"]
    _grade_invalid(price_task, _submit(tmp_path, text="id,price\nr1,1\nr2,nan\nr3,3\nr4,4\nr5,5\n"), "row 2: 'nan'")


def test_empty_classification_label(species_task, tmp_path):
    sub = SPECIES_RIGHT.assign(species=["adelie", None, "adelie", "chinstrap", "adelie"])
    _grade_invalid(species_task, _submit(tmp_path, sub), "empty values in column 'species'")


@pytest.mark.parametrize("text", ["", "   \n\n"])
def test_empty_file(species_task, tmp_path, text):
    _grade_invalid(species_task, _submit(tmp_path, text=text), "empty file")


def test_header_only(species_task, tmp_path):
    _grade_invalid(species_task, _submit(tmp_path, text="id,species\n"), "no rows")


def test_binary_garbage(species_task, tmp_path):
    _grade_invalid(species_task, _submit(tmp_path, data=pickle.dumps(SPECIES_RIGHT)), "not a CSV: binary content")
    _grade_invalid(species_task, _submit(tmp_path, data=b"\xff\xfe\xfa\xc3\x28 id,species"), "not a CSV: not UTF-8")


def test_ragged_csv(species_task, tmp_path):
    # pandas would silently read the extra fields as an index and pad the short row; the grader refuses
    too_long = "id,species\np1,adelie,x,y\np2,gentoo\n"
    _grade_invalid(species_task, _submit(tmp_path, text=too_long), "not a CSV: line 2 has 4 fields, the header has 2")
    too_short = "id,species\np1,adelie\np2\n"
    _grade_invalid(species_task, _submit(tmp_path, text=too_short), "not a CSV: line 3 has 1 fields")


def test_quoted_fields_and_blank_lines_are_fine(species_task, tmp_path):
    text = '"id","species"\n"p1","adelie"\n\np2,gentoo\np3,adelie\np4,"chinstrap"\np5,adelie\n\n'
    outcome = grade_submission(species_task, _submit(tmp_path, text=text))
    assert outcome["valid"] is True and outcome["metrics"]["accuracy"] == 1.0


def test_file_over_size_cap(species_task, tmp_path, monkeypatch):
    monkeypatch.setattr(grader, "MAX_SUBMISSION_BYTES", 10)
    _grade_invalid(species_task, _submit(tmp_path, SPECIES_RIGHT), "file too large")


# ---- broken tasks raise -----------------------------------------------------------------------------


def test_unknown_metric_raises(tmp_path):
    task = _write_task(tmp_path / "bad", task_type="regression", target="y", id_column="id", metric="rmsle",
                       ids=["a"], answers=[1.0], train_target=[1.0], target_range=1.0)
    with pytest.raises(ValueError, match="unknown metric"):
        grade_submission(task, tmp_path / "submission.csv")


def test_metric_that_does_not_fit_the_task_type_raises(tmp_path):
    task = _write_task(tmp_path / "bad", task_type="classification", target="y", id_column="id", metric="rmse",
                       ids=["a"], answers=["x"], train_target=["x"])
    with pytest.raises(ValueError, match="does not fit"):
        grade_submission(task, tmp_path / "submission.csv")


def test_answers_inconsistent_with_test_csv_raises(species_task, tmp_path):
    pd.DataFrame({"id": ["p1", "p2"], "species": ["adelie", "gentoo"]}).to_csv(species_task.answers_path, index=False)
    with pytest.raises(ValueError, match="differ"):
        grade_submission(species_task, _submit(tmp_path, SPECIES_RIGHT))


def test_symlink_to_the_answers_is_rejected_not_followed(species_task, tmp_path):
    path = tmp_path / "workspace" / "submission.csv"
    path.parent.mkdir(exist_ok=True)
    path.symlink_to(species_task.answers_path)  # the answers have exactly the submission's columns
    _grade_invalid(species_task, path, "symbolic link")
