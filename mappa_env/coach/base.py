"""The coach seam: what a coach is given (:class:`CoachRequest`) and what it returns (:class:`Verdict`).

A coach judges one action of one agent with the evidence in hand, so that credit goes to the agent that
caused a failure, not to the one that tripped over it. Scores are on a 0–10 scale; the environment maps
them to rewards. A coach that cannot score (an API error, a malformed reply) returns ``score=None`` with
the reason: it never invents a number.

Coaches follow the contract of TRL's reward functions: plain records in, a score (or ``None``) out, a
``name`` for logging, and an async variant so many episodes can be coached concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Timing = Literal["online", "hindsight"]


@dataclass(frozen=True)
class RoleInfo:
    """A role of the team as the coach needs to know it: which files it reads and which it must write."""

    name: str
    consumes: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()


@dataclass(frozen=True)
class CoachRequest:
    """Everything known about one action when it is judged.

    Attributes:
        env_id, task_id, task_type: where the action happened.
        role: the acting agent's id (``"modeler"``); ``role_instructions`` its system prompt.
        team: every role in pipeline order, with the files it reads and writes (for blaming the
            role that should have produced a missing file).
        task_description: the task text all agents saw.
        observation: the full prompt the agent saw before acting.
        action: the agent's full reply (thinking included); ``code`` the Python extracted from it.
        action_index: 0-based index of this action among the agent's actions.
        ends_stage: True when this action ended the agent's stage (no code, or the last allowed action).
        status, stdout, stderr, error: the tool output (see :class:`mappa_env.sandbox.ExecResult`);
            ``status`` is ``"no_code"`` when the action had no code.
        workspace_before, workspace_after: file name → size in bytes, around the action.
        files_changed: workspace paths created or modified by the action.
        upstream_steps: step records of the agents that acted before this one in the episode (each
            with an ``"agent"`` key), in order.
        outcome: the graded outcome (``valid``, ``reason``, ``metrics``, ...) when known, else None.
        trajectory: for hindsight coaches, every step record of the episode in pipeline order (this
            action's included, its verdict still pending); empty for online coaching.
    """

    env_id: str
    task_id: str
    task_type: str
    role: str
    role_instructions: str
    team: tuple[RoleInfo, ...]
    task_description: str
    observation: str
    action: str
    code: str
    action_index: int
    ends_stage: bool
    status: str
    stdout: str
    stderr: str
    error: str
    workspace_before: Mapping[str, int]
    workspace_after: Mapping[str, int]
    files_changed: tuple[str, ...]
    upstream_steps: tuple[Mapping[str, Any], ...] = ()
    outcome: Mapping[str, Any] | None = None
    trajectory: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for recording episodes and coaching them again later."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoachRequest:
        """Inverse of :meth:`to_dict` (lists become tuples again)."""
        fields = dict(data)
        fields["team"] = tuple(RoleInfo(r["name"], tuple(r["consumes"]), tuple(r["produces"])) for r in fields["team"])
        for name in ("files_changed", "upstream_steps", "trajectory"):
            fields[name] = tuple(fields.get(name, ()))
        return cls(**fields)

    @property
    def role_info(self) -> RoleInfo:
        return next(r for r in self.team if r.name == self.role)

    @property
    def is_final_role(self) -> bool:
        return self.team[-1].name == self.role

    def owner_of(self, filename: str) -> str | None:
        """The role that must produce ``filename``, or None when no role does (e.g. a task input)."""
        return next((r.name for r in self.team if filename in r.produces), None)


@dataclass(frozen=True)
class Verdict:
    """A coach's judgement of one action.

    Attributes:
        score: 0–10, or None when the action could not be scored (``rationale`` says why).
        rationale: short human-readable reason.
        coach: name of the coach that produced it.
        details: optional extras (tokens, cost, latency, rule ids) for logging.
    """

    score: float | None
    rationale: str
    coach: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.score is not None and not 0.0 <= self.score <= 10.0:
            raise ValueError(f"coach {self.coach!r} returned score {self.score}; scores must be within 0-10")

    def to_dict(self) -> dict[str, Any]:
        """The verdict as the step record stores it: ``{"score", "rationale", "coach", ...details}``."""
        data = asdict(self)
        details = data.pop("details")
        return {**details, **data}  # the contract keys win over any detail of the same name


@runtime_checkable
class Coach(Protocol):
    """Scores actions. ``timing`` says when: right after each action, or after the whole episode."""

    name: str
    timing: Timing

    def score(self, request: CoachRequest) -> Verdict: ...

    async def ascore(self, request: CoachRequest) -> Verdict: ...


class SyncCoach:
    """Base for coaches whose scoring is a fast pure function: ``ascore`` runs ``score`` in a thread."""

    name = "coach"
    timing: Timing = "online"

    def score(self, request: CoachRequest) -> Verdict:
        raise NotImplementedError

    async def ascore(self, request: CoachRequest) -> Verdict:
        return await asyncio.to_thread(self.score, request)
