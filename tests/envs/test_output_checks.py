"""dsbench's checks of the data engineer's pickles: what they find, what they leave alone, what they refuse."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mappa_env.envs.dsbench.output_checks import check_outputs, parse_findings
from mappa_env.records import StepRecord
from mappa_env.sandbox import ExecResult

N = 60


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"id": [f"r{i}" for i in range(N)], "x": rng.normal(size=N), "y": rng.normal(size=N)})
    test = pd.DataFrame({"id": [f"t{i}" for i in range(20)], "x": rng.normal(size=20)})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    pd.to_pickle(train[["x"]], tmp_path / "X_train.pkl")
    pd.to_pickle(train["y"], tmp_path / "y_train.pkl")
    pd.to_pickle(test[["x"]], tmp_path / "X_test.pkl")
    pd.to_pickle(test["id"], tmp_path / "test_ids.pkl")
    return tmp_path, train, test


def run_in(directory):
    """Run the checks' code in a fresh interpreter in ``directory``, as a sandbox worker would."""
    def run(code):
        done = subprocess.run([sys.executable, "-c", code], cwd=directory, capture_output=True, text=True, timeout=60)
        return ExecResult(status="ok" if done.returncode == 0 else "error", stdout=done.stdout, stderr=done.stderr,
                          duration_s=0.0, error="")
    return run


def findings(directory, changed=("X_train.pkl", "y_train.pkl", "X_test.pkl", "test_ids.pkl")):
    record = StepRecord(agent="data_engineer", action_index=0, action="", status="ok", files_changed=changed)
    return check_outputs(record, id_column="id", target="y", task_type="regression", run=run_in(directory))


def test_sound_outputs_have_no_findings(workspace):
    directory, _, _ = workspace
    assert findings(directory) == ()


def test_test_ids_with_one_missing_are_found(workspace):
    directory, _, test = workspace
    pd.to_pickle(test["id"].iloc[1:], directory / "test_ids.pkl")
    (found,) = findings(directory)
    assert found.kind == "ids_not_in_test" and "1 test ids are missing" in found.message


def test_train_ids_saved_as_test_ids(workspace):
    directory, train, _ = workspace
    pd.to_pickle(train["id"], directory / "test_ids.pkl")
    (found,) = findings(directory)
    assert (found.kind, found.file) == ("ids_not_in_test", "test_ids.pkl")
    assert "60 are not ids of test.csv" in found.message and "20 test ids are missing" in found.message


@pytest.mark.parametrize("leak", ["same", "noisy", "named"])
def test_a_feature_that_equals_or_nearly_equals_the_target_is_a_leak(workspace, leak):
    directory, train, _ = workspace
    noise = np.random.default_rng(1).normal(scale=0.05, size=N)
    column = {"same": train["y"], "noisy": train["y"] + noise, "named": train["y"]}[leak]
    name = "y" if leak == "named" else "hint"
    pd.to_pickle(train[["x"]].assign(**{name: column}), directory / "X_train.pkl")
    (found,) = findings(directory)
    assert (found.kind, found.file) == ("target_leak", "X_train.pkl") and repr(name) in found.message


def test_a_merely_informative_feature_is_not_a_leak(workspace):
    directory, train, _ = workspace
    informative = train["y"] + np.random.default_rng(2).normal(scale=0.6, size=N)  # correlation about 0.85
    pd.to_pickle(train[["x"]].assign(good=informative), directory / "X_train.pkl")
    assert findings(directory) == ()


@pytest.mark.parametrize("how", ["kept", "one-hot"])
def test_the_id_column_as_a_feature(workspace, how):
    directory, train, _ = workspace
    frame = train[["id", "x"]] if how == "kept" else pd.get_dummies(train[["id", "x"]], columns=["id"], dtype=float)
    pd.to_pickle(frame, directory / "X_train.pkl")
    (found,) = findings(directory)
    assert (found.kind, found.file) == ("id_feature", "X_train.pkl")


def test_only_files_the_action_changed_are_its_findings(workspace):
    directory, train, _ = workspace
    pd.to_pickle(train["id"], directory / "test_ids.pkl")
    assert findings(directory, changed=("X_train.pkl",)) == ()
    assert findings(directory, changed=("model.pkl",)) == ()  # nothing checked: nothing run


def test_a_file_that_does_not_unpickle_finds_nothing(workspace):
    directory, _, _ = workspace
    (directory / "test_ids.pkl").write_bytes(b"not a pickle")
    assert findings(directory) == ()


def test_checks_that_fail_to_run_find_nothing():
    record = StepRecord(agent="data_engineer", action_index=0, action="", status="ok", files_changed=("X_train.pkl",))
    failed = ExecResult(status="timeout", stdout='MAPPA_CHECKS [{"kind": "target_leak", "file": "X_train.pkl", '
                        '"message": "m"}]', stderr="", duration_s=1.0, error="timed out")
    assert check_outputs(record, id_column="id", target="y", task_type="regression", run=lambda code: failed) == ()


@pytest.mark.parametrize("stdout", [
    "", "MAPPA_CHECKS not json", 'MAPPA_CHECKS {"kind": "target_leak"}',
    'MAPPA_CHECKS [{"kind": "made_up", "file": "X_train.pkl", "message": "m"}]',
    'MAPPA_CHECKS [{"kind": "target_leak", "file": "/etc/passwd", "message": "m"}]',
    'MAPPA_CHECKS [{"kind": "target_leak", "file": "X_train.pkl", "message": 3}]',
])
def test_malformed_check_output_is_dropped(stdout):
    assert parse_findings(stdout) == ()


def test_the_last_marked_line_is_read_and_long_messages_are_cut():
    stdout = 'noise\nMAPPA_CHECKS []\nMAPPA_CHECKS [{"kind": "id_feature", "file": "X_test.pkl", "message": "' + "m" * 900 + '"}]'
    (found,) = parse_findings(stdout)
    assert found.kind == "id_feature" and len(found.message) == 400
