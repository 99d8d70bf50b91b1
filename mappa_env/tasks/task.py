"""Task records: :class:`Task`, what every team's task has, and :class:`TabularTask`, a Kaggle-style
prediction problem (``dsbench-v0``), wherever it comes from.

A tabular task is described by its metadata (this record) and by files in a directory on the host:

``public_dir``
    ``train.csv``, ``test.csv`` (no target column) and ``sample_submission.csv`` (id column first, then
    the target column). These are copied into each episode's workspace.
``answers_path``
    ``answers.csv`` with the id column and the true target for every test row. It lives on the host only
    and is never copied into a workspace or made visible to the sandbox.

A team declares which task types it has (its :class:`mappa_env.scorecard.Scorecard`); the record checks
the split, the team its own types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

TaskType = Literal["classification", "regression"]
#: The split a task belongs to.
Split = Literal["train", "heldout"]
#: The splits an environment, an evaluation or a training run may select: a task's split, or every task.
SplitSelection = Literal["train", "heldout", "all"]
SPLITS: tuple[str, ...] = get_args(SplitSelection)

#: Files every task's public directory holds, in the order they are listed to agents.
PUBLIC_FILES = ("train.csv", "test.csv", "sample_submission.csv")
ANSWERS_FILE = "answers.csv"


@dataclass(frozen=True, kw_only=True)
class Task:
    """What every team's task has, whatever the team.

    Attributes:
        id: stable identifier, unique within its suite (``"builtin/penguins-species"``).
        title: one-line human title.
        description: the full text shown to agents.
        task_type: the kind of task, one of the team's declared task types (for ``dsbench-v0``:
            ``"classification"`` or ``"regression"``). Declared, never guessed.
        split: ``"train"`` or ``"heldout"``.
        suite: name of the suite the task belongs to (``"builtin"``, ``"dsbench"``, ``"user"``).
        extra: anything else a suite knows about the task (not compared).
    """

    id: str
    title: str
    description: str
    task_type: str
    split: Split
    suite: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.task_type:
            raise ValueError(f"task {self.id!r}: task_type must be declared")
        if self.split not in get_args(Split):
            raise ValueError(f"task {self.id!r}: split must be 'train' or 'heldout', got {self.split!r}")


@dataclass(frozen=True, kw_only=True)
class TabularTask(Task):
    """One prediction task: CSVs in, predictions for held-out rows out.

    Attributes (besides :class:`Task`'s):
        task_type: ``"classification"`` or ``"regression"``.
        target: name of the target column in ``train.csv`` and in the submission.
        id_column: name of the id column in ``test.csv``, the submission and the answers.
        metric: primary metric name (see :mod:`mappa_env.metrics`): ``"accuracy"``, ``"f1"``,
            ``"macro_f1"``, ``"roc_auc"``, ``"rmse"`` or ``"mae"``.
        public_dir: host directory with the public files (:data:`PUBLIC_FILES`).
        answers_path: host path of the hidden labels. Never visible to the sandbox.
        files: names of the public files, relative to ``public_dir``.
        positive_label: for binary classification, the label F1 treats as positive (as a string), or None.
        target_range: for regression, ``max - min`` of the target over train and test, used for
            RMSE as a percentage of the range.
    """

    task_type: TaskType
    target: str
    id_column: str
    metric: str
    public_dir: Path
    answers_path: Path
    files: tuple[str, ...] = PUBLIC_FILES
    positive_label: str | None = None
    target_range: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task_type not in get_args(TaskType):
            raise ValueError(
                f"task {self.id!r}: task_type must be 'classification' or 'regression', got {self.task_type!r}"
            )
