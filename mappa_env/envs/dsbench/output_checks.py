"""Checks of what the data engineer saved, so the coach can blame the action that introduced a fault.

Three faults pass every downstream stage without an error and only show in the grade, where they are
blamed on whoever wrote the submission: test ids that are not ``test.csv``'s, a feature that (nearly)
equals the target (leakage), and the id column kept as a feature. After an action that changes one of
:data:`CHECKED_FILES`, :func:`check_outputs` looks at the files and returns a
:class:`~mappa_env.records.Finding` for each fault, on the file at fault (its producer is the role to
blame).

The files are pickles written by untrusted code, and unpickling runs code: they are never loaded on the
host. The checks run in a sandbox of the episode's own backend (:data:`SANDBOX_SCRIPT`), which prints one
JSON line; the host only parses that line, strictly. A check that cannot run (a file that does not
unpickle, a timeout) finds nothing: it never invents a fault.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from mappa_env.records import Finding, StepRecord
from mappa_env.sandbox import ExecResult

#: The data engineer's outputs the checks read.
CHECKED_FILES = ("X_train.pkl", "y_train.pkl", "X_test.pkl", "test_ids.pkl")
#: The kinds of finding, as ``Finding.kind`` says them.
FINDING_KINDS = ("ids_not_in_test", "target_leak", "id_feature")
#: A feature whose absolute correlation with the target reaches this is reported as leakage.
LEAK_CORRELATION = 0.98

_MARKER = "MAPPA_CHECKS "
_MAX_MESSAGE_CHARS = 400

# Runs inside the sandbox, in a worker of its own; everything lives inside one function so that nothing
# is left in the worker's namespace but the function itself.
SANDBOX_SCRIPT = r'''
def _mappa_checks(id_column, target, task_type, leak_correlation):
    import json, os
    import numpy as np
    import pandas as pd

    def norm(value):
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return str(int(number)) if number.is_integer() else text

    def load(name):
        if not os.path.isfile(name) or os.path.islink(name):
            return None
        try:
            return pd.read_pickle(name)
        except Exception:
            return None

    def examples(values):
        return ", ".join(repr(v) for v in list(values)[:3])

    findings = []
    test = pd.read_csv("test.csv", dtype=str, keep_default_na=False)
    train = pd.read_csv("train.csv", dtype=str, keep_default_na=False)

    ids = load("test_ids.pkl")
    if ids is not None and id_column in test.columns:
        saved = [norm(v) for v in np.asarray(ids, dtype=object).ravel()]
        expected = [norm(v) for v in test[id_column]]
        expected_set, saved_set = set(expected), set(saved)
        foreign = [v for v in saved if v not in expected_set]
        absent = [v for v in expected if v not in saved_set]
        if foreign or absent:
            parts = [f"test_ids.pkl holds {len(saved)} ids for test.csv's {len(expected)} rows"]
            if foreign:
                parts.append(f"{len(foreign)} are not ids of test.csv (e.g. {examples(foreign)})")
            if absent:
                parts.append(f"{len(absent)} test ids are missing")
            findings.append({"kind": "ids_not_in_test", "file": "test_ids.pkl", "message": "; ".join(parts)})

    # The id kept as a column, as its one-hot columns ("id_<value>"), or as a column of the id values.
    id_values = set(train[id_column]) | set(test[id_column]) if id_column in train.columns else set()
    id_numbers = pd.to_numeric(train.get(id_column, pd.Series(dtype=str)), errors="coerce").to_numpy(dtype=float)

    def is_id(frame, column, rows_are_train):
        name = str(column)
        if name.lower() == id_column.lower():
            return True
        prefix = id_column + "_"
        if name.startswith(prefix) and name[len(prefix):] in id_values:
            return True
        if not rows_are_train or len(frame) != len(id_numbers) or not np.isfinite(id_numbers).all():
            return False
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        return bool(np.array_equal(values, id_numbers))

    for name in ("X_train.pkl", "X_test.pkl"):
        frame = load(name)
        if not isinstance(frame, pd.DataFrame):
            continue
        columns = [str(c) for c in frame.columns if is_id(frame, c, name == "X_train.pkl")]
        if columns:
            shown = ", ".join(repr(c) for c in columns[:3]) + (", ..." if len(columns) > 3 else "")
            findings.append({"kind": "id_feature", "file": name,
                             "message": f"{name} uses the id column {id_column!r} as a feature ({len(columns)} "
                                        f"column(s): {shown}); ids carry no signal about the target"})

    features, labels = load("X_train.pkl"), load("y_train.pkl")
    if isinstance(features, pd.DataFrame) and labels is not None and len(np.ravel(labels)) == len(features):
        values = pd.Series(np.asarray(labels, dtype=object).ravel())
        if task_type == "regression":
            y = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        else:
            y = pd.factorize(values.astype(str))[0].astype(float)
        for column in features.columns:
            if str(column) == target:
                findings.append({"kind": "target_leak", "file": "X_train.pkl",
                                 "message": f"X_train.pkl has the target {target!r} itself as a feature"})
                continue
            x = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype=float)
            usable = np.isfinite(x) & np.isfinite(y)
            if usable.sum() < 10 or np.std(x[usable]) == 0 or np.std(y[usable]) == 0:
                continue
            r = float(np.corrcoef(x[usable], y[usable])[0, 1])
            if abs(r) >= leak_correlation:
                findings.append({"kind": "target_leak", "file": "X_train.pkl",
                                 "message": f"feature {str(column)!r} of X_train.pkl nearly equals the target "
                                            f"{target!r} (correlation {r:.3f}): target leakage"})
    print("MAPPA_CHECKS " + json.dumps(findings))
'''


def check_outputs(record: StepRecord, *, id_column: str, target: str, task_type: str,
                  run: Callable[[str], ExecResult]) -> tuple[Finding, ...]:
    """The findings on the files ``record``'s action changed; ``run`` executes code in a sandbox."""
    changed = set(record.files_changed) & set(CHECKED_FILES)
    if not changed:
        return ()
    call = f"\n_mappa_checks({id_column!r}, {target!r}, {task_type!r}, {LEAK_CORRELATION!r})\ndel _mappa_checks\n"
    result = run(SANDBOX_SCRIPT + call)
    if result.status != "ok":
        return ()
    findings = parse_findings(result.stdout)
    # A leak involves X_train.pkl and y_train.pkl: it is the action's when it wrote either of them.
    touched = changed | ({"X_train.pkl"} if "y_train.pkl" in changed else set())
    return tuple(f for f in findings if f.file in touched)


def parse_findings(stdout: str) -> tuple[Finding, ...]:
    """The findings the sandbox script printed; anything malformed is dropped (its output is untrusted)."""
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(_MARKER)), None)
    if line is None:
        return ()
    try:
        raw = json.loads(line[len(_MARKER):])
    except ValueError:
        return ()
    return tuple(_valid(raw if isinstance(raw, list) else []))


def _valid(items: Iterable[object]) -> Iterable[Finding]:
    for item in items:
        if not isinstance(item, dict):
            continue
        kind, file, message = item.get("kind"), item.get("file"), item.get("message")
        if kind in FINDING_KINDS and file in CHECKED_FILES and isinstance(message, str):
            yield Finding(kind, file, message[:_MAX_MESSAGE_CHARS])
