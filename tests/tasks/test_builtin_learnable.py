"""Every builtin task is learnable: a generic random forest clearly beats the best constant prediction.

Slow (materialises all tasks, about a minute on 2 cores): ``pytest -m slow tests/tasks``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

from mappa_env.tasks import ensure_materialized, load_tasks
from mappa_env.tasks.builtin_catalogue import CATALOGUE


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAPPA_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _score(metric: str, truth, pred, positive=None) -> float:
    if metric == "accuracy":
        return accuracy_score(truth, pred)
    if metric == "f1":
        return f1_score(np.asarray(truth) == positive, np.asarray(pred) == positive)
    if metric == "macro_f1":
        return f1_score(truth, pred, average="macro")
    if metric == "rmse":
        return mean_squared_error(truth, pred) ** 0.5
    if metric == "mae":
        return mean_absolute_error(truth, pred)
    raise AssertionError(metric)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(s.name for s in CATALOGUE))
def test_random_forest_beats_constant_baseline(cache, name):
    (task,) = [ensure_materialized(t) for t in load_tasks("builtin") if t.id == f"builtin/{name}"]
    label_dtype = {task.target: str} if task.task_type == "classification" else None
    train = pd.read_csv(task.public_dir / "train.csv", dtype=label_dtype, keep_default_na=False, na_values=[""])
    test = pd.read_csv(task.public_dir / "test.csv", keep_default_na=False, na_values=[""])
    answers = pd.read_csv(task.answers_path, dtype=label_dtype, keep_default_na=False, na_values=[""])
    truth = answers.set_index(task.id_column).loc[test[task.id_column], task.target].to_numpy()
    y = train.pop(task.target)
    features = pd.get_dummies(pd.concat([train, test]).drop(columns=[task.id_column])).astype(float)
    features = features.fillna(features.median())
    x_train, x_test = features.iloc[: len(train)], features.iloc[len(train):]
    if task.task_type == "classification":
        model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=2).fit(x_train, y)
        constants = [np.full(len(truth), c, dtype=object) for c in sorted(y.unique())]
        baseline = max(_score(task.metric, truth, c, task.positive_label) for c in constants)
        score = _score(task.metric, truth, model.predict(x_test), task.positive_label)
        assert score > baseline + 0.02, f"{task.id}: {task.metric} {score:.3f} vs constant {baseline:.3f}"
    else:
        model = RandomForestRegressor(n_estimators=100, random_state=0, n_jobs=2).fit(x_train, y)
        constant = np.full(len(truth), y.median() if task.metric == "mae" else y.mean())
        baseline = _score(task.metric, truth, constant)
        score = _score(task.metric, truth, model.predict(x_test))
        assert score < 0.97 * baseline, f"{task.id}: {task.metric} {score:.3f} vs constant {baseline:.3f}"
