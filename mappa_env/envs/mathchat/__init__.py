"""``mathchat-v0``: a three-agent team solves competition math, checked by rule.

Agents (in order): ``problem_solver`` (one reply, no code run) → ``code_executor`` (up to 2 actions;
its ```python blocks run in the sandbox, default limit 30 s) → ``verifier`` (one reply, no code run; it
sees the executor's last message and last tool output and must give the final answer as ``\\boxed{...}``).
The workspace starts empty; nothing but the executor's code touches it.

Outcome, by rule and never by a model: the verifier's last ``\\boxed{}`` is checked against the task's
reference answer with ``math-verify`` (:mod:`mappa_env.envs.mathchat.answers`). ``infos[A]["outcome"]``
holds ``valid`` (an answer was found and parsed), ``correct``, ``reason``, ``answer`` (the boxed text),
``parsed`` and ``metrics`` (``correct`` and ``rpg``, both 1.0 or 0.0: for a right-or-wrong answer the
share of the way from nothing to perfect is all or none). An answer the checker cannot parse is wrong,
with the reason. The verifier's action carries the same grade as its ``result`` (the action that earned
it), and so does the coach's request for it.

Tasks: ``suite`` ``"arith"`` (generated, graded levels), ``"champ"`` (270 competition problems) or
``"jsonl"`` / a path to the user's JSONL or Parquet problems (:mod:`mappa_env.tasks.math_sets`), with
``split`` and ``suite_kwargs`` as for ``dsbench-v0``; the engine's arguments are the same too.

Version history:
    v0: initial release.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pettingzoo.utils import wrappers

from mappa_env.envs.mathchat.roles import ANSWER_ROLE, ROLES
from mappa_env.envs.pipeline import PipelineEnv
from mappa_env.envs.suite import SuiteEnv
from mappa_env.records import Outcome, StepRecord
from mappa_env.scorecard import MATH_SCORECARD

#: The executor's per-execution limit unless ``exec_timeout_s`` says otherwise.
MATH_EXEC_TIMEOUT_S = 30.0


class MathChatEnv(SuiteEnv):
    """The problem solver → code executor → verifier team. Build it with :func:`env`."""

    metadata = {**PipelineEnv.metadata, "name": "mathchat_v0"}
    env_id = "mathchat-v0"
    roles = ROLES
    scorecard = MATH_SCORECARD
    suite_names = "'arith', 'champ', 'jsonl' or a path to a problem file"
    shows_workspace = False  # it starts empty and holds nothing of the team's work

    def __init__(
        self,
        *,
        suite: str = "arith",
        split: str = "train",
        suite_kwargs: Mapping[str, Any] | None = None,
        **engine_kwargs: Any,
    ):
        engine_kwargs.setdefault("exec_timeout_s", MATH_EXEC_TIMEOUT_S)
        super().__init__(suite=suite, split=split, suite_kwargs=suite_kwargs, **engine_kwargs)

    def _load_tasks(self):
        from mappa_env.tasks.math_sets import load_math_tasks

        return load_math_tasks(self.suite, split=self.split, **self.suite_kwargs)

    def _prepare_workspace(self, task, workspace: Path) -> None:
        """The workspace starts empty: the problem is in the prompt."""

    def _task_prompt(self, task) -> str:
        return f"# Problem\n{task.problem}"

    def _grade(self, task, workspace: Path, records: Sequence[StepRecord]) -> dict[str, Any]:
        from mappa_env.envs.mathchat.answers import check_answer

        replies = [r for r in records if r.agent == ANSWER_ROLE]
        if not replies:
            return {"valid": False, "correct": False, "reason": "the verifier never answered", "answer": None,
                    "parsed": None, "metrics": {"correct": 0.0, "rpg": 0.0}, "task_id": task.id,
                    "task_type": task.task_type}
        check = check_answer(task.answer, replies[-1].action)
        score = 1.0 if check.correct else 0.0
        return {"valid": check.valid, "correct": check.correct, "reason": check.reason, "answer": check.answer,
                "parsed": check.parsed, "reference": task.answer, "metrics": {"correct": score, "rpg": score},
                "task_id": task.id, "task_type": task.task_type}

    def _grade_action(self, record: StepRecord) -> Outcome | None:
        # The team's answer is in the verifier's reply: that action earned the grade.
        if record.agent != ANSWER_ROLE:
            return None
        return Outcome.from_info(self._grade(self.task, self._workspace, (*self.step_records(), record)))

    def _outcome_score(self, outcome: Outcome) -> float:
        return 10.0 if outcome.extra.get("correct") else 0.0


def raw_env(**kwargs: Any) -> MathChatEnv:
    """The environment without wrappers."""
    return MathChatEnv(**kwargs)


def env(**kwargs: Any):
    """``mathchat-v0`` wrapped with PettingZoo's order-enforcing wrapper (what ``mappa_env.make`` returns)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))
