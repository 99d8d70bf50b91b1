"""The offline math problem sets of mathchat-v0: arith (generated), champ (packaged) and user files."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("reasoning_gym")
pytest.importorskip("champ_dataset")
pytest.importorskip("math_verify")

from mappa_env.envs.mathchat.answers import check_answer  # noqa: E402
from mappa_env.tasks.math_sets import (  # noqa: E402
    ARITH_LEVELS,
    MATH_SUITES,
    MathTask,
    load_math_tasks,
)

ROOT = Path(__file__).resolve().parents[2]


def _fingerprint(tasks) -> str:
    rows = [(t.id, t.split, t.problem, t.answer, t.level) for t in tasks]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@pytest.fixture(scope="module")
def arith():
    return load_math_tasks("arith")


@pytest.fixture(scope="module")
def champ():
    return load_math_tasks("champ")


# --- arith -----------------------------------------------------------------------------------------------------


def test_suites_are_named():
    assert MATH_SUITES == ("arith", "champ", "jsonl")


def test_arith_default_sizes_and_split(arith):
    assert len(arith) == len(ARITH_LEVELS) * 60
    for spec in ARITH_LEVELS:
        level = [t for t in arith if t.level == spec.level]
        assert sum(t.split == "train" for t in level) == 40
        assert sum(t.split == "heldout" for t in level) == 20
        assert len({t.problem for t in level}) == 60  # no repeats, so no held-out problem is also in train
    assert all(isinstance(t, MathTask) and t.task_type == "arith" and t.suite == "arith" for t in arith)
    assert all(t.description == t.problem and t.extra["level"] == t.level for t in arith)
    assert [t.id for t in arith] == sorted(t.id for t in arith)
    assert all(re.fullmatch(r"arith/l\d-\d{4}", t.id) for t in arith)
    assert all(re.fullmatch(r"-?\d+", t.answer) for t in arith)


def test_arith_is_deterministic_within_and_across_processes(arith):
    assert _fingerprint(load_math_tasks("arith")) == _fingerprint(arith)
    code = ("import hashlib, json; from mappa_env.tasks.math_sets import load_math_tasks as L; "
            "print(hashlib.sha256(json.dumps([(t.id, t.split, t.problem, t.answer, t.level) for t in L('arith')])"
            ".encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONHASHSEED": "123", "PATH": "", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _fingerprint(arith)


def test_arith_level_one_is_two_small_terms(arith):
    level1 = [t for t in arith if t.level == 1]
    for t in level1:
        terms = re.fullmatch(r".*: (\d{1,2}) ([+-]) (\d{1,2}) =", t.problem)
        assert terms, t.problem
        a, op, b = terms.groups()
        assert int(t.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))


def test_arith_levels_grow_harder(arith):
    def mean_len(level):
        xs = [t for t in arith if t.level == level]
        return sum(len(t.problem) for t in xs) / len(xs)

    def mean_terms(level):
        xs = [t for t in arith if t.level == level]
        return sum(len(re.findall(r"\d+", t.problem)) for t in xs) / len(xs)

    assert mean_terms(1) < mean_terms(2)
    assert mean_len(4) < mean_len(5) < mean_len(6)
    assert [t.extra["generator"] for t in arith if t.id.endswith("-0000")] == [s.generator for s in ARITH_LEVELS]


def test_arith_levels_option_and_heldout_stability(arith):
    only = load_math_tasks("arith", levels=[1, 3])
    assert {t.level for t in only} == {1, 3}
    assert _fingerprint(only) == _fingerprint([t for t in arith if t.level in (1, 3)])
    small = load_math_tasks("arith", "heldout", levels=1, train_per_level=5)
    assert _fingerprint(small) == _fingerprint([t for t in arith if t.level == 1 and t.split == "heldout"])
    assert len(load_math_tasks("arith", "train", levels=2, train_per_level=5)) == 5
    with pytest.raises(ValueError, match="levels"):
        load_math_tasks("arith", levels=[7])
    with pytest.raises(ValueError, match="no argument 'level'"):
        load_math_tasks("arith", level=1)


# --- champ -----------------------------------------------------------------------------------------------------


def test_champ_has_270_problems_with_answers(champ):
    assert len(champ) == 270
    assert all(t.answer.strip() and t.extra["raw_answer"].strip() and t.problem.strip() for t in champ)
    assert all(t.task_type == "champ" and t.id == f"champ/{t.extra['champ_id']}" for t in champ)
    assert {t.extra["category"] for t in champ} == {"Combinatorics", "Inequality", "Number-Theory", "Polynomial",
                                                   "Sequence"}


def test_champ_split_is_stable_and_about_70_30(champ):
    heldout = [t.id for t in champ if t.split == "heldout"]
    assert 60 <= len(heldout) <= 100
    assert [t.id for t in load_math_tasks("champ", "heldout")] == heldout
    for t in champ:  # the documented rule
        first = hashlib.sha256(t.extra["champ_id"].encode()).digest()[0]
        assert (t.split == "heldout") == (first < 77)


def test_champ_sentences_become_checkable_references(champ):
    by_id = {t.extra["champ_id"]: t for t in champ}
    assert by_id["P_Sequence_7"].answer == "3"  # "The limit exists and is equal to 3"
    assert by_id["P_Combinatorics_2"].answer == "252"  # "C(10, 5), or equivalently 252"
    assert by_id["P_Inequality_14"].answer == "100"  # "100 (i.e., all values)"
    assert check_answer(by_id["P_Sequence_7"].answer, "\\boxed{3}").correct
    assert not check_answer(by_id["P_Sequence_7"].answer, "\\boxed{4}").correct
    assert check_answer(by_id["P_Number-Theory_3"].answer, "\\boxed{625, 376}").correct


def test_every_builtin_answer_checks_as_correct_when_boxed(arith, champ):
    for task in arith + champ:
        check = check_answer(task.answer, "\\boxed{" + task.answer + "}")
        assert check.valid and check.correct, (task.id, task.answer, check)


# --- user files ------------------------------------------------------------------------------------------------


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_file_with_ids_and_optional_fields(tmp_path):
    path = _jsonl(tmp_path / "aime.jsonl", [
        {"id": "aime-2024-1", "problem": "What is 1+1?", "answer": 2, "source": "AIME", "year": 2024},
        {"id": "aime-2024-2", "problem": "What is 3/4 of 1?", "answer": "3/4", "split": "train", "hint": "x"},
    ])
    tasks = load_math_tasks(path)
    assert [t.id for t in tasks] == ["jsonl/aime-2024-1", "jsonl/aime-2024-2"]
    first, second = tasks
    assert first.answer == "2" and first.split == "heldout" and first.source == "AIME" and first.extra["year"] == 2024
    assert first.task_type == "user" and first.suite == "jsonl"
    assert second.split == "train" and second.extra["hint"] == "x" and second.source == "aime.jsonl"
    assert load_math_tasks("jsonl", "train", path=str(path)) == [second]
    assert load_math_tasks("user", path=path) == tasks


def test_directory_split_by_file_name_and_row_numbers(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data / "train.jsonl", [{"problem": "p1", "answer": "1"}, {"problem": "p2", "answer": "2"}])
    (data / "test.json").write_text(json.dumps([{"problem": "p3", "answer": "3"}]))
    _jsonl(data / "extra.jsonl", [{"problem": "p4", "answer": "4"}])
    tasks = load_math_tasks(data)
    assert {t.id: t.split for t in tasks} == {"jsonl/train-0001": "train", "jsonl/train-0002": "train",
                                             "jsonl/test-0001": "heldout", "jsonl/extra-0001": "heldout"}
    assert {t.id: t.split for t in load_math_tasks(data, default_split="train")}["jsonl/extra-0001"] == "train"


def test_parquet_file(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "eval.parquet"
    pd.DataFrame({"problem": ["a", "b"], "answer": ["1", "2"], "year": [2025, 2025]}).to_parquet(path)
    tasks = load_math_tasks(path)
    assert [(t.id, t.answer, t.split, t.extra["year"]) for t in tasks] == [
        ("jsonl/eval-0001", "1", "heldout", 2025), ("jsonl/eval-0002", "2", "heldout", 2025)]
    assert type(tasks[0].extra["year"]) is int


def test_parquet_without_pyarrow_says_to_install_it(tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")

    def no_engine(*args, **kwargs):
        raise ImportError("Unable to find a usable engine; tried using: 'pyarrow', 'fastparquet'.")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    path = tmp_path / "eval.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="install it \\(pip install pyarrow\\)"):
        load_math_tasks(path)


@pytest.mark.parametrize(("rows", "message"), [
    ([{"problem": "p"}], r"bad\.jsonl, row 1: missing field 'answer'"),
    ([{"question": "p", "answer": "1"}], r"row 1: missing field 'problem' \(the row has 'question': rename it"),
    ([{"problem": 7, "answer": "1"}], r"row 1: 'problem' must be non-empty text"),
    ([{"problem": "p", "answer": ""}], r"row 1: 'answer' is empty"),
    ([{"problem": "p", "answer": [1]}], r"row 1: 'answer' must be text or a number"),
    ([{"id": "a", "problem": "p", "answer": "1"}, {"id": "a", "problem": "q", "answer": "2"}],
     r"row 2: duplicate id 'a' \(first at .*row 1\)"),
    ([{"problem": "p", "answer": "1"}, "{not json"], r"bad\.jsonl, line 2: not valid JSON"),
    ([{"problem": "p", "answer": "1", "split": "later"}], r"row 1: unknown split 'later'"),
    (["[1, 2]"], r"row 1: expected a JSON object"),
    ([], r"bad\.jsonl: the file has no problems"),
])
def test_bad_files_give_clear_errors(tmp_path, rows, message):
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        load_math_tasks(path)


def test_duplicate_ids_across_files_and_empty_directory(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"id": 1, "problem": "p", "answer": "1"}])
    _jsonl(tmp_path / "b.jsonl", [{"id": 1, "problem": "q", "answer": "2"}])
    with pytest.raises(ValueError, match=r"b\.jsonl, row 1: duplicate id '1' \(first at .*a\.jsonl, row 1\)"):
        load_math_tasks(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .jsonl, .json or .parquet problem files"):
        load_math_tasks(empty)


def test_bad_json_list_and_missing_paths(tmp_path):
    path = tmp_path / "list.json"
    path.write_text('[{"problem": "p", "answer": "1"},')
    with pytest.raises(ValueError, match=r"list\.json: not valid JSON"):
        load_math_tasks(path)
    with pytest.raises(ValueError, match="no such problem file"):
        load_math_tasks(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="needs path="):
        load_math_tasks("jsonl")
    with pytest.raises(ValueError, match="unknown math suite 'mathh'"):
        load_math_tasks("mathh")
    with pytest.raises(ValueError, match="split must be one of"):
        load_math_tasks("champ", split="test")
