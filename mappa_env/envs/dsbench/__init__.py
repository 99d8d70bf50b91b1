"""``dsbench-v0``: a three-agent team solves Kaggle-style tabular prediction tasks by writing Python.

Agents (in order): ``data_engineer`` → ``modeler`` → ``analyst``. Each acts up to
``max_actions_per_agent`` times (default 4); a reply without a ```python block, or the last allowed
action, ends its stage. Files pass through a shared workspace::

    train.csv, test.csv, sample_submission.csv        (task inputs)
    data_engineer → X_train.pkl, y_train.pkl, X_test.pkl, test_ids.pkl
    modeler       → model.pkl
    analyst       → submission.csv                    (graded on the host by id)

Spaces:
    action: any text (:class:`mappa_env.spaces.UnicodeText`): the model's full reply.
    observation: ``{"text": str}``, the complete prompt the agent should now see;
    ``infos[agent]["messages"]`` holds the same content as chat messages.

Rewards (see :mod:`mappa_env.envs.pipeline` for the channels):
    ``env.rewards[A]`` after ``A`` acts: the coach's 0–10 score times ``reward_scale`` (default 0.1).
    ``infos[A]["step_rewards"]`` at termination: one reward per action of ``A`` in ``reward_mode``
    (``"process"``, ``"outcome"``: every action gets the episode's outcome reward, or ``"mixed"``).
    The outcome reward is 0 for an invalid submission, else the quality on a 0–10 scale: the task's
    primary metric × 10 for classification, ``10 × (1 − RMSE / target range)`` (floored at 0) for
    regression; where that metric is undefined (NaN), 10 × the relative performance gap.

Checks: after an action that writes ``submission.csv`` it is graded on the host right away
(``infos[A]["step"]["result"]``), so its quality is judged on that action; after an action that writes the
data engineer's outputs, they are checked in a sandbox for ids not in ``test.csv``, target leakage and the id
column used as a feature (``infos[A]["step"]["findings"]``, :mod:`mappa_env.envs.dsbench.output_checks`).

Info at termination: ``infos[A]["outcome"]`` = ``{valid, reason, metrics, task_id, task_type}``;
``infos[A]["steps"]`` every step record of ``A``.

Arguments: ``suite`` (``"builtin"``, ``"dsbench"``, ``"user"`` or a task directory), ``suite_kwargs``
(``{"root": ...}`` for DSBench, ``{"path": ...}`` for user tasks), ``split`` (``"train"``, ``"heldout"``,
``"all"``), and the engine's ``max_actions_per_agent``, ``reward_mode``, ``reward_scale``,
``outcome_weight``, ``coach``, ``coach_kwargs``, ``sandbox``, ``sandbox_kwargs``, ``exec_timeout_s``,
``max_output_chars``, ``render_mode`` (``"ansi"`` or ``"human"``), ``max_cycles``.

Version history:
    v0: initial release.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pettingzoo.utils import wrappers

from mappa_env.envs.dsbench.grader import grade_submission
from mappa_env.envs.dsbench.output_checks import check_outputs
from mappa_env.envs.dsbench.roles import ROLES
from mappa_env.envs.pipeline import PipelineEnv
from mappa_env.envs.suite import SuiteEnv
from mappa_env.metrics import TABULAR_SCORECARD
from mappa_env.records import Finding, Outcome, StepRecord


#: The key of the sandbox the output checks run in (beside the agents' own, closed with them).
CHECKS_SANDBOX = "output-checks"


class DSBenchEnv(SuiteEnv):
    """The data engineer → modeler → analyst pipeline on tabular tasks. Build it with :func:`env`."""

    metadata = {**PipelineEnv.metadata, "name": "dsbench_v0"}
    env_id = "dsbench-v0"
    roles = ROLES
    scorecard = TABULAR_SCORECARD
    result_files = ("submission.csv",)
    suite_names = "'builtin', 'dsbench', 'user' or a task directory path"

    def __init__(
        self,
        *,
        suite: str = "builtin",
        split: str = "train",
        suite_kwargs: Mapping[str, Any] | None = None,
        **engine_kwargs: Any,
    ):
        super().__init__(suite=suite, split=split, suite_kwargs=suite_kwargs, **engine_kwargs)

    def _load_tasks(self):
        from mappa_env.tasks import load_tasks

        return load_tasks(self.suite, split=self.split, **self.suite_kwargs)

    def _prepare_workspace(self, task, workspace: Path) -> None:
        from mappa_env.tasks import ensure_materialized

        self.task = task = ensure_materialized(task)
        for name in task.files:
            shutil.copyfile(task.public_dir / name, workspace / name)

    def _hidden_paths(self) -> tuple[str, ...]:
        # The builtin tasks' source datasets: reloading one would let code match rows to hidden labels.
        from mappa_env.tasks.builtin import source_data_dirs

        return source_data_dirs()

    def _grade(self, task, workspace: Path, records) -> dict[str, Any]:
        return grade_submission(task, workspace / "submission.csv")

    def _check_outputs(self, record: StepRecord) -> tuple[Finding, ...]:
        # The pickles are untrusted: they are read in a sandbox of the episode's backend, never here.
        task = self.task
        return check_outputs(record, id_column=task.id_column, target=task.target, task_type=task.task_type,
                             run=lambda code: self._sandbox(CHECKS_SANDBOX).run(code))

    def _outcome_score(self, outcome: Outcome) -> float:
        if not outcome.valid:
            return 0.0
        metrics = outcome.metrics
        key = "rmse_pct_range" if outcome.task_type == "regression" else "primary"
        value = metrics.get(key)
        if value is None or math.isnan(value):  # undefined metric (no target range, one-class test set)
            rpg = metrics.get("rpg")
            return 0.0 if rpg is None or math.isnan(rpg) else 10.0 * rpg
        if key == "rmse_pct_range":
            return max(0.0, 10.0 * (1.0 - value / 100.0))
        return float(min(10.0, max(0.0, 10.0 * value)))


def raw_env(**kwargs: Any) -> DSBenchEnv:
    """The environment without wrappers."""
    return DSBenchEnv(**kwargs)


def env(**kwargs: Any):
    """``dsbench-v0`` wrapped with PettingZoo's order-enforcing wrapper (what ``mappa_env.make`` returns)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))
