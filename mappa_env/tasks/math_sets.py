"""Offline math problem sets for ``mathchat-v0``, as :class:`MathTask` records.

Suites (:data:`MATH_SUITES`), each with a fixed train/held-out split:

``"arith"``
    Generated with ``reasoning-gym`` (Apache-2.0), seeded, in graded levels (:data:`ARITH_LEVELS`):
    1 = a sum or difference of two 1–2 digit numbers (within reach of SmolLM2-135M), 2 = 3–4 such
    terms, 3 = 3–4 one-digit terms (possibly negative) with ``*`` and parentheses, 4 = a linear equation in one unknown, 5 = counting
    the legs of 2–4 kinds of animals, 6 = grade-school word problems (GSM-Symbolic templates). Each level
    is one seeded stream of problems without repeats: the first ``heldout_per_level`` (default 20) are
    held out, the next ``train_per_level`` (default 40) are train, so the held-out problems do not move
    when the train size changes. Ids ``"arith/l<level>-<position in the stream>"``; answers are integers.
    kwargs: ``levels`` (default all), ``train_per_level``, ``heldout_per_level``.
``"champ"``
    The 270 CHAMP competition problems (Mao et al. 2024, MIT) from the ``champ-dataset`` package, read
    offline from its packaged JSON. Its answers are sentences written for a human or LLM grader ("The
    limit exists and is equal to 3"); :func:`champ_reference` rewrites them into references the rule
    checker reads (``3``), the original kept in ``extra["raw_answer"]``. Answers that are words only
    ("No") are checked as text. Split: held out when the first byte of SHA-256 of the CHAMP id is below
    77 (30 %), else train. Ids ``"champ/P_Combinatorics_1"``.
``"jsonl"`` (alias ``"user"``; or a path as the suite)
    The user's problems: a ``.jsonl``, ``.json`` or ``.parquet`` file, or a directory searched
    recursively for them, in the Hugging Face datasets layout: one problem per row with ``problem`` and
    ``answer`` (text or number) and optional ``id``, ``source``, ``year``, ``level``, ``split``. The
    split of a row is its ``split`` field (``train``; ``heldout``/``test``/``eval``/``validation``/
    ``valid``/``dev`` mean held out), else its file's name (one containing ``train`` is train, one
    containing ``test``, ``eval``, ``heldout``, ``valid`` or ``dev`` held out), else ``default_split``
    (default ``"heldout"``: a file of problems is most often an evaluation set). Ids ``"jsonl/<id>"``,
    the row's ``id`` or ``<file stem>-<row number>``. kwargs: ``path`` (unless the suite is the path),
    ``default_split``.

``task_type`` is the family (``"arith"``, ``"champ"``, ``"user"``) and ``description`` the problem text.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mappa_env.arguments import reject_unknown
from mappa_env.tasks.task import SPLITS, Task

MATH_SUITES = ("arith", "champ", "jsonl")
#: The task types of the math sets (the team's declared types).
MATH_TASK_TYPES = ("arith", "champ", "user")


@dataclass(frozen=True, kw_only=True)
class MathTask(Task):
    """One math problem with a reference answer.

    Attributes (besides :class:`Task`'s):
        problem: the problem statement (also the ``description``).
        answer: the reference answer as text, in a form :func:`mappa_env.envs.mathchat.answers.check_answer`
            reads (boxing it verbatim is judged correct).
        level: difficulty level where the set has levels (``arith``: 1 easiest), else None.
        source: where the problem comes from (``"reasoning-gym:chain_sum"``, ``"champ"``, a user's
            ``source`` field or file name).
    """

    problem: str
    answer: str
    level: int | None = None
    source: str = ""


def load_math_tasks(suite: str | Path, split: str = "all", **kwargs: Any) -> list[MathTask]:
    """The problems of ``suite`` in ``split`` (``"train"``, ``"heldout"`` or ``"all"``), sorted by id.

    Args:
        suite: ``"arith"`` (kwargs ``levels``, ``train_per_level``, ``heldout_per_level``), ``"champ"``
            (none), ``"jsonl"`` or ``"user"`` (kwargs ``path``, ``default_split``), or a path to a
            problem file or directory (kwarg ``default_split``).
        split: which split to return.

    Raises:
        ValueError: an unknown suite, split or option, or a bad user file (naming the file, the row and
            the fix).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if suite == "arith":
        reject_unknown("the arith suite (suite_kwargs)", kwargs, ["levels", "train_per_level", "heldout_per_level"])
        tasks = load_arith(**kwargs)
    elif suite == "champ":
        if kwargs:
            raise ValueError(f"the champ suite takes no options (suite_kwargs), got {sorted(kwargs)}")
        tasks = load_champ()
    elif suite in ("jsonl", "user"):
        reject_unknown(f"the {suite} suite (suite_kwargs)", kwargs, ["path", "default_split"])
        if "path" not in kwargs:
            raise ValueError(f"the {suite} suite needs path=<a .jsonl/.json/.parquet file or a directory of them> "
                             "(suite_kwargs={'path': ...})")
        tasks = load_problem_files(**kwargs)
    elif isinstance(suite, Path) or (isinstance(suite, str) and (_looks_like_path(suite))):
        reject_unknown("a problem-file path (suite_kwargs)", kwargs, ["default_split"])
        tasks = load_problem_files(suite, **kwargs)
    else:
        raise ValueError(f"unknown math suite {suite!r}; valid: {list(MATH_SUITES)} (or 'user'), or the path of a "
                         ".jsonl/.json/.parquet problem file or of a directory of them")
    if split != "all":
        tasks = [t for t in tasks if t.split == split]
    return sorted(tasks, key=lambda t: t.id)


def _looks_like_path(suite: str) -> bool:
    return "/" in suite or suite.endswith(_FILE_SUFFIXES) or Path(suite).expanduser().exists()


# --- arith ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArithLevel:
    """One ``arith`` level: a reasoning-gym generator and its configuration."""

    level: int
    generator: str
    config: dict
    summary: str


#: The ``arith`` levels, easiest first. Changing one changes its problems: bump the env version.
ARITH_LEVELS: tuple[ArithLevel, ...] = (
    ArithLevel(1, "chain_sum", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2),
               "a sum or difference of two 1-2 digit numbers"),
    ArithLevel(2, "chain_sum", dict(min_terms=3, max_terms=4, min_digits=1, max_digits=2),
               "3-4 terms of 1-2 digits, + and -"),
    # Parentheses on: without them reasoning-gym 0.1.25 computes left to right, ignoring precedence.
    ArithLevel(3, "basic_arithmetic", dict(min_terms=3, max_terms=4, min_digits=1, max_digits=1,
                                           operators=("+", "-", "*"), allow_parentheses=True, allow_negation=False),
               "3-4 one-digit terms (possibly negative) with +, -, * and parentheses"),
    ArithLevel(4, "simple_equations", dict(min_terms=2, max_terms=3, min_value=1, max_value=30),
               "a linear equation in one unknown, integer solution"),
    ArithLevel(5, "leg_counting", dict(min_animals=2, max_animals=4, min_instances=1, max_instances=6),
               "count the legs of 2-4 kinds of animals"),
    ArithLevel(6, "gsm_symbolic", dict(), "grade-school word problems (GSM-Symbolic templates)"),
)
ARITH_TRAIN_PER_LEVEL = 40
ARITH_HELDOUT_PER_LEVEL = 20
#: The seed of level ``n`` is ``ARITH_SEED + n``.
ARITH_SEED = 1400
_ARITH_STREAM = 100_000  # virtual size of each level's stream; problems are generated lazily
_INT_RE = re.compile(r"^-?\d+$")


def load_arith(levels: int | list[int] | tuple[int, ...] | None = None, train_per_level: int = ARITH_TRAIN_PER_LEVEL,
               heldout_per_level: int = ARITH_HELDOUT_PER_LEVEL) -> list[MathTask]:
    """The generated ``arith`` problems of ``levels`` (default: all), both splits."""
    known = {spec.level: spec for spec in ARITH_LEVELS}
    if levels is None:
        levels = sorted(known)
    elif isinstance(levels, int):
        levels = [levels]
    unknown = [lv for lv in levels if lv not in known]
    if unknown or not levels:
        raise ValueError(f"arith levels must be a non-empty list of {sorted(known)}, got {levels!r}")
    for name, value in (("train_per_level", train_per_level), ("heldout_per_level", heldout_per_level)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    tasks: list[MathTask] = []
    for lv in sorted(set(levels)):
        tasks.extend(_arith_level(known[lv], train_per_level, heldout_per_level))
    return tasks


def _arith_level(spec: ArithLevel, n_train: int, n_heldout: int) -> list[MathTask]:
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(spec.generator, seed=ARITH_SEED + spec.level, size=_ARITH_STREAM,
                                           **spec.config)
    seen: set[str] = set()
    tasks: list[MathTask] = []
    for index in range(_ARITH_STREAM):
        if len(tasks) == n_train + n_heldout:
            break
        item = dataset[index]
        question, answer = item["question"].strip(), str(item["answer"]).strip()
        # Repeats would leak held-out problems into train; a non-integer answer is not an arith answer;
        # an expression whose value is not the answer would teach a wrong sum.
        if question in seen or not _INT_RE.match(answer) or not _expression_agrees(item, answer):
            continue
        seen.add(question)
        split = "heldout" if len(tasks) < n_heldout else "train"
        task_id = f"arith/l{spec.level}-{len(tasks):04d}"
        tasks.append(MathTask(
            id=task_id, title=f"arith level {spec.level} ({spec.generator}) #{len(tasks)}", description=question,
            task_type="arith", split=split, suite="arith", problem=question, answer=answer, level=spec.level,
            source=f"reasoning-gym:{spec.generator}",
            extra={"level": spec.level, "generator": spec.generator, "seed": ARITH_SEED + spec.level,
                   "stream_index": index, "summary": spec.summary}))
    else:  # pragma: no cover - a generator that cannot supply enough distinct problems
        raise ValueError(f"arith level {spec.level}: {spec.generator} gave fewer than {n_train + n_heldout} distinct "
                         "problems; lower train_per_level/heldout_per_level")
    return tasks


def _expression_agrees(item: dict, answer: str) -> bool:
    """For generators that give their expression, whether it evaluates (with precedence) to ``answer``."""
    expression = item.get("metadata", {}).get("expression")
    if not isinstance(expression, str):
        return True
    try:
        return _evaluate(ast.parse(expression, mode="eval").body) == int(answer)
    except (SyntaxError, ValueError):
        return False


def _evaluate(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
        left, right = _evaluate(node.left), _evaluate(node.right)
        return left + right if isinstance(node.op, ast.Add) else left - right if isinstance(node.op, ast.Sub) else left * right
    raise ValueError(f"not an integer +, -, * expression: {ast.dump(node)}")


# --- champ ----------------------------------------------------------------------------------------------------

#: CHAMP ids whose share of SHA-256 first bytes below this are held out (77/256 ≈ 30 %).
CHAMP_HELDOUT_BELOW = 77

# References written by hand where the sentence has no rule-readable form (see champ_reference).
_CHAMP_OVERRIDES = {
    "P_Combinatorics_3": r"2^{\lfloor n/2 \rfloor} \cdot \lfloor n/2 \rfloor!",
    "P_Combinatorics_16": r"\binom{n+1}{2m+1}",
    "P_Combinatorics_29": r"\binom{n}{4}",
    "P_Inequality_9": "x(n)<y(n-1)",
    "P_Inequality_32": "x(n)>y(n-1)",
    "P_Inequality_12": r"\sum_{k=1}^{n} \frac{1}{k}",
    "P_Inequality_18": r"\frac{\sqrt{3}}{3}",
    "P_Inequality_44": "1",
    "P_Number-Theory_10": "1",
    "P_Number-Theory_39": "(0, 2), (9, 11)",
    "P_Number-Theory_44": "(0, 0)",
    "P_Number-Theory_65": "(3, 2), (5, 3)",
    "P_Number-Theory_70": "(1, 1), (3, 2)",
    "P_Polynomial_2": r"a(1+\sqrt{2}), a(1-\sqrt{2}), \frac{a(1+\sqrt{5})}{2}, \frac{a(1-\sqrt{5})}{2}",
    "P_Polynomial_5": "(8, 2), (2, 8)",
    "P_Polynomial_6": "(1, 2), (2, 1)",
    "P_Polynomial_15": "0, 1",
    "P_Polynomial_20": "0",
    "P_Polynomial_22": r"\pm 1",
    "P_Polynomial_28": r"\frac{(-1)^{n+1}+n+1}{n+2}",
    "P_Polynomial_37": "16, 81",
    "P_Polynomial_38": r"\pm 1, \pm 2, \pm \frac{1}{2}",
    "P_Polynomial_46": r"\prod_{k=0}^{2022} (x-k)",
    "P_Sequence_43": "Yes",
    "P_Sequence_44": "1",
    "P_Sequence_48": "8",
}
_CHAMP_RULES = (
    (re.compile(r"^.*?,? or (?:an )?equivalen(?:tly|t form such as) (.+)$"), r"\1"),
    (re.compile(r"^(.+?),? or approximately .+$"), r"\1"),
    (re.compile(r"^(.+?)\s+\((?:i\.e\.,?\s*)?[^()]*[A-Za-z]{3,}[^()]*\)$"), r"\1"),
    (re.compile(r"^(\S+) is the only possible value$"), r"\1"),
    (re.compile(r"^The (?:limit exists and is equal to|only possible value for the limit is) (.+)$"), r"\1"),
    (re.compile(r"^At (?:most|least) (\S+) .+$"), r"\1"),
    (re.compile(r"^(\S+) (?:values|pairs|roots|inequalities|times|numbers?)$"), r"\1"),
)


def champ_reference(problem_id: str, raw: str) -> str:
    """A rule-checkable reference for a CHAMP answer sentence (``raw`` unchanged when none is needed).

    Hand-written references for a few sentences (:data:`_CHAMP_OVERRIDES`), then rules: keep the exact
    form of "X, or equivalently Y" (Y), drop "or approximately ..." and a parenthetical gloss ("100
    (i.e., all values)" → 100), and read "N is the only possible value", "The limit exists and is equal
    to X", "At most N ...", "N values" as N. Sums become ``\\sum``, ``C(n, k)`` ``\\binom{n}{k}``,
    ``sqrt(x)`` ``\\sqrt{x}``, "a and b" a set. Word-only answers (``"No"``) stay, checked as text.
    """
    if problem_id in _CHAMP_OVERRIDES:
        return _CHAMP_OVERRIDES[problem_id]
    answer = raw.strip().replace("−", "-")
    for pattern, replacement in _CHAMP_RULES:
        answer = pattern.sub(replacement, answer).strip()
    answer = re.sub(r"sqrt\(([^()]+)\)", r"\\sqrt{\1}", answer)
    answer = re.sub(r"\bC\(([^(),]+),\s*([^(),]+)\)", r"\\binom{\1}{\2}", answer)
    if re.fullmatch(r"-?[\w^/()\\{}+-]+(?:, -?[\w^/()\\{}+-]+)* and -?[\w^/()\\{}+-]+", answer):
        answer = answer.replace(" and ", ", ")
    return answer


def load_champ() -> list[MathTask]:
    """The 270 CHAMP problems, read offline from the ``champ-dataset`` package."""
    import champ_dataset

    dataset = champ_dataset.load("v0")
    tasks = []
    for pid, problem in dataset.problems.items():
        raw = problem.answer.strip()
        reference = champ_reference(pid, raw)
        heldout = hashlib.sha256(pid.encode()).digest()[0] < CHAMP_HELDOUT_BELOW
        number = pid.rsplit("_", 1)[-1]
        tasks.append(MathTask(
            id=f"champ/{pid}", title=f"CHAMP {problem.category} {number}", description=problem.text.strip(),
            task_type="champ", split="heldout" if heldout else "train", suite="champ", problem=problem.text.strip(),
            answer=reference, source="champ",
            extra={"category": problem.category, "raw_answer": raw, "champ_id": pid}))
    return tasks


# --- user files ------------------------------------------------------------------------------------------------

_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
_SPLIT_WORDS = {"train": "train", "training": "train", "heldout": "heldout", "held_out": "heldout", "test": "heldout",
                "eval": "heldout", "evaluation": "heldout", "validation": "heldout", "valid": "heldout", "dev": "heldout"}
_KNOWN_FIELDS = ("id", "problem", "answer", "source", "year", "level", "split")


def load_problem_files(path: str | Path, default_split: str = "heldout") -> list[MathTask]:
    """The problems of a ``.jsonl``/``.json``/``.parquet`` file, or of every such file under a directory."""
    if default_split not in ("train", "heldout"):
        raise ValueError(f"default_split must be 'train' or 'heldout', got {default_split!r}")
    root = Path(path).expanduser()
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _FILE_SUFFIXES)
        if not files:
            raise ValueError(f"{root}: no .jsonl, .json or .parquet problem files in this directory; "
                             "add one with 'problem' and 'answer' fields per row")
    elif root.is_file():
        if root.suffix.lower() not in _FILE_SUFFIXES:
            raise ValueError(f"{root}: not a problem file; use .jsonl, .json or .parquet (one problem per row "
                             "with 'problem' and 'answer' fields)")
        files = [root]
    else:
        raise ValueError(f"{root}: no such problem file or directory")
    tasks: list[MathTask] = []
    where: dict[str, str] = {}
    for file in files:
        for row_no, row in _read_rows(file):
            task = _user_task(file, row_no, row, default_split)
            if task.id in where:
                raise ValueError(f"{file}, row {row_no}: duplicate id {task.id.split('/', 1)[1]!r} (first at "
                                 f"{where[task.id]}); ids must be unique across the files; rename one or drop the "
                                 "'id' field to number rows by file")
            where[task.id] = f"{file}, row {row_no}"
            tasks.append(task)
    return tasks


def _read_rows(file: Path) -> list[tuple[int, dict]]:
    """The rows of ``file`` as (1-based row or line number, mapping); errors name the file and row."""
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        rows = list(enumerate(_read_parquet(file), start=1))
    else:
        text = file.read_text(encoding="utf-8")
        stripped = text.strip()
        rows = None
        if suffix == ".json" and stripped.startswith("["):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError as err:
                raise ValueError(f"{file}: not valid JSON ({err.msg} at line {err.lineno}); write a JSON list of "
                                 "objects or one JSON object per line") from None
            rows = list(enumerate(data, start=1))
        elif suffix == ".json" and stripped.startswith("{") and "\n" not in stripped:
            rows = [(1, json.loads(stripped))]
        if rows is None:  # JSON Lines (Hugging Face also writes these as .json)
            rows = []
            for line_no, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((line_no, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{file}, line {line_no}: not valid JSON ({err.msg}); each line must be one "
                                     "JSON object such as {\"problem\": \"...\", \"answer\": \"...\"}") from None
    if not rows:
        raise ValueError(f"{file}: the file has no problems; add rows with 'problem' and 'answer' fields")
    for row_no, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{file}, row {row_no}: expected a JSON object with 'problem' and 'answer', got "
                             f"{type(row).__name__}")
    return rows


def _read_parquet(file: Path) -> list[dict]:
    import pandas as pd

    try:
        frame = pd.read_parquet(file)
    except ImportError as err:
        raise ValueError(f"{file}: reading Parquet needs pyarrow; install it (pip install pyarrow) or convert the "
                         f"file to JSONL ({err})") from None
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    """numpy scalars to Python, missing (NaN/None) to None."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _user_task(file: Path, row_no: int, row: dict, default_split: str) -> MathTask:
    at = f"{file}, row {row_no}"
    for name in ("problem", "answer"):
        if row.get(name) is None:
            hint = ""
            alias = {"problem": ("question", "prompt", "input"), "answer": ("solution", "final_answer", "target")}[name]
            present = [a for a in alias if a in row]
            if present:
                hint = f" (the row has {present[0]!r}: rename it to {name!r})"
            raise ValueError(f"{at}: missing field {name!r}{hint}; every row needs 'problem' and 'answer'")
    problem = row["problem"]
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{at}: 'problem' must be non-empty text, got {type(problem).__name__} {problem!r:.60}")
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ValueError(f"{at}: 'answer' must be text or a number, got {type(answer).__name__}")
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    answer = str(answer).strip()
    if not answer:
        raise ValueError(f"{at}: 'answer' is empty; give the reference answer as text (for example \"3/4\")")
    raw_id = row.get("id")
    if raw_id is None:
        raw_id = f"{file.stem}-{row_no:04d}"
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
        raise ValueError(f"{at}: 'id' must be non-empty text or an integer, got {raw_id!r}")
    split = _row_split(file, at, row.get("split"), default_split)
    level = row.get("level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise ValueError(f"{at}: 'level' must be an integer, got {level!r}")
    source = row.get("source")
    source = str(source) if source is not None else file.name
    extra = {k: v for k, v in row.items() if k not in _KNOWN_FIELDS}
    extra.update(file=str(file), row=row_no)
    if row.get("year") is not None:
        extra["year"] = row["year"]
    task_id = f"jsonl/{str(raw_id).strip()}"
    return MathTask(id=task_id, title=f"{source} {str(raw_id).strip()}", description=problem.strip(), task_type="user",
                    split=split, suite="jsonl", problem=problem.strip(), answer=answer, level=level, source=source,
                    extra=extra)


def _row_split(file: Path, at: str, value: Any, default_split: str) -> str:
    if value is not None:
        split = _SPLIT_WORDS.get(str(value).strip().lower())
        if split is None:
            raise ValueError(f"{at}: unknown split {value!r}; use 'train' or one of 'heldout', 'test', 'eval', "
                             "'validation' (or drop the field)")
        return split
    name = file.stem.lower()
    words = set(re.split(r"[^a-z]+", name))
    if "train" in words or name.startswith("train"):
        return "train"
    if words & {"test", "eval", "heldout", "valid", "validation", "dev"}:
        return "heldout"
    return default_split
