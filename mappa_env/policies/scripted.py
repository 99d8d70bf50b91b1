"""Reference teams for ``dsbench-v0`` that write their code from templates.

``scripted`` solves any task in the pipeline's file format with plain pandas/scikit-learn: the data
engineer one-hot encodes categoricals and fills gaps, the modeler fits a random forest, the analyst writes
the submission in the sample submission's format. It reads everything it needs (id and target columns,
task type) from the workspace and the task text, as a model would.

The faulty teams reproduce classic pipeline failures for credit-assignment tests; each breaks exactly one
role and leaves the others correct:

* ``buggy-missing-x-test``: the data engineer never saves ``X_test.pkl``.
* ``buggy-missing-model``: the modeler trains but never saves ``model.pkl``.
* ``buggy-analyst-keyerror``: the analyst indexes a column that does not exist.
* ``buggy-wrong-columns``: the analyst writes the submission with a wrong column name.
* ``buggy-train-ids``: the data engineer saves ``train.csv``'s ids as ``test_ids.pkl``.
* ``buggy-target-leak``: the data engineer adds a feature that equals the target (encoded) to
  ``X_train.pkl`` (and its training mean to ``X_test.pkl``).
* ``buggy-id-feature``: the data engineer keeps the id column as a feature.
* ``buggy-swallowed-error``: the modeler's training fails inside ``try/except``; it prints the error and
  saves the untrained model.
* ``buggy-false-claim``: the analyst writes no code and says it saved ``submission.csv``.
* ``leak-diagnosed``: the target leak of ``buggy-target-leak``, and a modeler that, without code,
  correctly refuses to train on it and names the data engineer's fault.
* ``silent``: every agent answers without code.
"""

from __future__ import annotations

import re

from mappa_env.envs.dsbench.roles import ROLES
from mappa_env.policies.base import ScriptedTeamBase, num_previous_actions

_TASK_TYPE_RE = re.compile(r"Task type:\s*\**\s*(classification|regression)", re.I)

DATA_ENGINEER_CODE = '''\
import numpy as np
import pandas as pd

train = pd.read_csv("train.csv")
test = pd.read_csv("test.csv")
sample = pd.read_csv("sample_submission.csv")
id_col, target = sample.columns[0], sample.columns[1]
features = [c for c in train.columns if c not in ({dropped})]
full = pd.concat([train[features], test[features]], keys=["train", "test"])
numeric = full.select_dtypes("number").columns.tolist()
categorical = [c for c in features if c not in numeric]
full[numeric] = full[numeric].fillna(full[numeric].median())
for col in categorical:
    values = full[col].astype("string").fillna("missing")
    top = values.value_counts().index[:20]
    full[col] = values.where(values.isin(top), "other")
full = pd.get_dummies(full, columns=categorical, dtype=float).fillna(0.0)
X_train, X_test = full.loc["train"], full.loc["test"]
{leak}X_train.to_pickle("X_train.pkl")
train[target].to_pickle("y_train.pkl")
{save_x_test}{ids_source}[id_col].to_pickle("test_ids.pkl")
print("X_train", X_train.shape, "X_test", X_test.shape, "target", target)
'''

MODELER_CODE = '''\
import pickle
import pandas as pd
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import cross_val_score

X_train = pd.read_pickle("X_train.pkl")
y_train = pd.read_pickle("y_train.pkl")
task_type = "{task_type}"
if task_type == "classification":
    y_train = y_train.astype(str)
    model = RandomForestClassifier(n_estimators=150, random_state=0, n_jobs=1)
else:
    model = RandomForestRegressor(n_estimators=150, random_state=0, n_jobs=1)
{fit}{save_model}'''

FIT = '''scores = cross_val_score(model, X_train, y_train, cv=3)
print("cross-validation score:", scores.mean().round(4))
model.fit(X_train, y_train)
'''

SWALLOWED_FIT = '''try:
    model.fit(X_train, y_train.iloc[: len(y_train) // 2])
except Exception as exc:
    print("training failed:", exc)
'''

LEAK = '''codes = train[target] if train[target].dtype.kind in "if" else pd.Series(pd.factorize(train[target])[0], index=train.index)
X_train = X_train.assign(target_hint=codes.to_numpy(dtype=float))
X_test = X_test.assign(target_hint=float(codes.mean()))
'''

LEAK_DIAGNOSIS = ("I did not train a model. X_train.pkl leaks the target: its feature 'target_hint' equals the "
                  "target, so any model fit on it is worthless on the test set. The data engineer must rebuild "
                  "X_train.pkl and X_test.pkl without it.")

ANALYST_CODE = '''\
import pickle
import pandas as pd

with open("model.pkl", "rb") as f:
    model = pickle.load(f)
X_test = pd.read_pickle("X_test.pkl")
ids = pd.read_pickle("test_ids.pkl")
sample = pd.read_csv("sample_submission.csv")
id_col, target = sample.columns[0], sample.columns[1]
{bug}submission = pd.DataFrame({{{id_expr}: ids.values, {target_expr}: model.predict(X_test)}})
submission.to_csv("submission.csv", index=False)
print(submission.shape, submission.columns.tolist())
'''

SAVE_MODEL = 'with open("model.pkl", "wb") as f:\n    pickle.dump(model, f)\nprint("saved model.pkl")\n'


def task_type_of(text: str) -> str:
    """The task type declared in the task text (``Task type: ...``); regression when absent."""
    match = _TASK_TYPE_RE.search(text)
    return match.group(1).lower() if match else "regression"


class ScriptedTeam(ScriptedTeamBase):
    """The deterministic ``dsbench-v0`` team: one code action per agent, then a summary without code."""

    def __init__(self, name: str = "scripted", *, fault: str | None = None):
        super().__init__(ROLES, name, fault=fault)

    def act(self, agent: str, observation, info) -> str:
        first = num_previous_actions(info) == 0
        if first and agent == "modeler" and self.fault == "leak-diagnosed":
            return LEAK_DIAGNOSIS
        if first and agent == "analyst" and self.fault == "false-claim":
            return "Done. I saved submission.csv in the workspace."
        return super().act(agent, observation, info)

    def code_for(self, agent: str, text: str) -> str:
        if agent == "data_engineer":
            skip = self.fault == "missing-x-test"
            return DATA_ENGINEER_CODE.format(
                save_x_test="" if skip else 'X_test.to_pickle("X_test.pkl")\n',
                leak=LEAK if self.fault in ("target-leak", "leak-diagnosed") else "",
                ids_source="train" if self.fault == "train-ids" else "test",
                dropped="target," if self.fault == "id-feature" else "id_col, target",
            )
        if agent == "modeler":
            save = "" if self.fault == "missing-model" else SAVE_MODEL
            fit = SWALLOWED_FIT if self.fault == "swallowed-error" else FIT
            return MODELER_CODE.format(task_type=task_type_of(text), fit=fit, save_model=save)
        bug = 'ids = ids.to_frame()["no_such_column"]\n' if self.fault == "analyst-keyerror" else ""
        target_expr = '"prediction"' if self.fault == "wrong-columns" else "target"
        return ANALYST_CODE.format(bug=bug, id_expr="id_col", target_expr=target_expr)


FAULTS = {
    "buggy-missing-x-test": "missing-x-test",
    "buggy-missing-model": "missing-model",
    "buggy-analyst-keyerror": "analyst-keyerror",
    "buggy-wrong-columns": "wrong-columns",
    "buggy-train-ids": "train-ids",
    "buggy-target-leak": "target-leak",
    "buggy-id-feature": "id-feature",
    "buggy-swallowed-error": "swallowed-error",
    "buggy-false-claim": "false-claim",
    "leak-diagnosed": "leak-diagnosed",
    "silent": "silent",
}
