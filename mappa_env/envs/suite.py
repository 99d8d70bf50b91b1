"""``SuiteEnv``: a team whose tasks come from a named suite and split, as every mappa_env team's do."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mappa_env.envs.pipeline import PipelineEnv, check_engine_kwargs
from mappa_env.tasks.task import SPLITS


class SuiteEnv(PipelineEnv):
    """A :class:`PipelineEnv` drawing its tasks from ``suite`` (a name or a path) and ``split``.

    Subclasses set :attr:`suite_names` (for the error message) and implement ``_load_tasks`` from
    ``self.suite``, ``self.split`` and ``self.suite_kwargs``. The task list is loaded at construction, so a
    bad suite fails there, with the coach the environment may have built already released.
    """

    #: what ``suite`` may name, for the message of a wrong one
    suite_names = "a suite name or a path"

    def __init__(self, *, suite: str | Path, split: str, suite_kwargs: Mapping[str, Any] | None, **engine_kwargs: Any):
        check_engine_kwargs(self.env_id, engine_kwargs, own=("suite", "split", "suite_kwargs"))
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(suite, (str, Path)):
            raise ValueError(f"suite must be {self.suite_names}, got {suite!r}")
        self.suite = str(suite)
        self.split = split
        self.suite_kwargs = dict(suite_kwargs or {})
        super().__init__(**engine_kwargs)
        try:
            self.tasks  # load (and validate) the task list now
        except BaseException:
            self.close()  # and release the coach it may have built already
            raise
