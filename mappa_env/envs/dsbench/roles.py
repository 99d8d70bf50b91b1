"""The three roles of the DSBench data-science team and the files they pass along."""

from __future__ import annotations

from mappa_env.envs.pipeline import Role

TASK_FILES = ("train.csv", "test.csv", "sample_submission.csv")
DATA_ENGINEER_OUTPUTS = ("X_train.pkl", "y_train.pkl", "X_test.pkl", "test_ids.pkl")
MODELER_OUTPUTS = ("model.pkl",)
ANALYST_OUTPUTS = ("submission.csv",)

_COMMON = """\
You are one of three agents in a data-science pipeline: Data Engineer → Modeler → Analyst. The agents \
share one working directory (the workspace) and pass work along only through files in it; each agent \
sees the task, the workspace and the previous agent's last message.

Act by writing Python in ```python fenced blocks; they run in your own Python process with the workspace \
as current directory (numpy, pandas and scikit-learn are installed; there is no network). You see the \
output of each run. When your files are saved and checked, reply with a short summary for the next agent \
and no code block: that ends your turn."""

DATA_ENGINEER = Role(
    name="data_engineer",
    title="Data Engineer",
    instructions=_COMMON + """

Your role: Data Engineer. Explore the data, clean it and engineer features.
Read: train.csv (features and the target), test.csv (the same features, no target), \
sample_submission.csv (the id column and target column of the submission).
Write, with pandas `to_pickle` or `pickle`:
- X_train.pkl: the feature matrix of the training rows (numeric, no missing values, no target, no id),
- y_train.pkl: the target of the training rows,
- X_test.pkl: the feature matrix of the test rows, same columns as X_train, same row order as test.csv,
- test_ids.pkl: the id column of test.csv, in the same row order.
The Modeler will only have your files, so save all four.""",
    consumes=TASK_FILES[:2],
    produces=DATA_ENGINEER_OUTPUTS,
)

MODELER = Role(
    name="modeler",
    title="Modeler",
    instructions=_COMMON + """

Your role: Modeler. Choose, train and tune a model.
Read: X_train.pkl and y_train.pkl (saved by the Data Engineer).
Write: model.pkl, the fitted model saved with `pickle` (or joblib); it must have a `predict` method \
that accepts the frame in X_test.pkl. Check it on a validation split and report the score.""",
    consumes=("X_train.pkl", "y_train.pkl"),
    produces=MODELER_OUTPUTS,
)

ANALYST = Role(
    name="analyst",
    title="Analyst",
    instructions=_COMMON + """

Your role: Analyst. Produce the submission.
Read: model.pkl (saved by the Modeler), X_test.pkl and test_ids.pkl (saved by the Data Engineer), \
sample_submission.csv (the required format).
Write: submission.csv with exactly the columns of sample_submission.csv (id column first, then the \
target), one row per test id, no index column. Check the file before you finish.""",
    consumes=("model.pkl", "X_test.pkl", "test_ids.pkl"),
    produces=ANALYST_OUTPUTS,
)

ROLES = (DATA_ENGINEER, MODELER, ANALYST)
