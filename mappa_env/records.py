"""The frozen records that cross seams: one action (:class:`StepRecord`), its judgement (:class:`Verdict`),
an episode's graded result (:class:`Outcome`) and what a coach is given (:class:`CoachRequest`).

One action's data is written once, by the engine, into a :class:`StepRecord`, and every consumer reads
that same object: the coach (through a :class:`CoachRequest`, which holds the record and the records
of the agents before it by reference, never copies), PettingZoo's infos (:meth:`StepRecord.to_info`,
a fresh plain mapping each time, with the keys docs/environment.md documents), the evaluation's
results file and offline re-coaching (:func:`requests_to_json` / :func:`requests_from_json`).

Records are never changed after they are handed out. A verdict that arrives later (hindsight coaching)
makes a new record (:meth:`StepRecord.with_verdict`); the mapping handed out earlier in
``infos[agent]["step"]`` keeps what it said.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "ERROR_STATUSES", "NO_CODE", "RECORDS_FORMAT_VERSION", "STEP_STATUSES", "CoachRequest", "Finding", "Outcome", "RoleInfo",
    "StepRecord", "Verdict",
    "outcome_succeeded", "requests_from_json", "requests_to_json", "unscored_reason",
]

#: What ``StepRecord.status`` may say: the sandbox's outcomes, or no code to run.
STEP_STATUSES = ("ok", "error", "timeout", "killed", "no_code")
#: The statuses of code that did not run to its end.
ERROR_STATUSES = ("error", "timeout", "killed")
NO_CODE = "no_code"

#: Version of the recorded-episode format written by ``python -m mappa_env evaluate`` (``format_version``).
#: 1 (no ``format_version`` key): every coach request a flat copy of its fields; 2: records stored once,
#: requests referring to them by position.
RECORDS_FORMAT_VERSION = 2


class ReadOnlyDict(dict):
    """A dict whose items cannot be changed: what a record's mappings are. Copies, pickles and JSON
    like a dict (a ``MappingProxyType`` would not pickle, which rules out process pools and Ray)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a record's mappings are read-only; make a new record (dataclasses.replace) instead")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (dict(self),)


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return value if isinstance(value, ReadOnlyDict) else ReadOnlyDict(value or {})


@dataclass(frozen=True)
class Verdict:
    """A coach's judgement of one action.

    Attributes:
        score: 0–10, or None when the action could not be scored (``rationale`` says why).
        rationale: short human-readable reason.
        coach: name of the coach that produced it.
        details: optional extras (tokens, cost, latency, rule ids, ``unscored_reason``) for logging.
    """

    score: float | None
    rationale: str
    coach: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.score is not None and not 0.0 <= self.score <= 10.0:
            raise ValueError(f"coach {self.coach!r} returned score {self.score}; scores must be within 0-10")
        object.__setattr__(self, "details", _frozen_mapping(self.details))

    @classmethod
    def pending(cls, coach: str) -> Verdict:
        """The placeholder of an action a hindsight coach scores when the episode ends."""
        return cls(None, "pending: scored in hindsight when the episode ends", coach, {"pending": True})

    def to_dict(self) -> dict[str, Any]:
        """The verdict as the step record stores it: ``{"score", "rationale", "coach", ...details}``."""
        # the contract keys win over any detail of the same name
        return {**self.details, "score": self.score, "rationale": self.rationale, "coach": self.coach}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """Inverse of :meth:`to_dict`."""
        details = {k: v for k, v in data.items() if k not in ("score", "rationale", "coach")}
        return cls(data["score"], data["rationale"], data["coach"], details)


def unscored_reason(verdict: Mapping[str, Any] | None) -> str:
    """Why a verdict mapping (``StepRecord.to_info()["verdict"]``) has no score: its ``unscored_reason``,
    ``"pending"`` for a hindsight verdict not given yet, else ``"unknown"``."""
    verdict = verdict or {}
    return str(verdict.get("unscored_reason") or ("pending" if verdict.get("pending") else "unknown"))


@dataclass(frozen=True)
class RoleInfo:
    """A role of the team as a coach needs to know it: which files it reads and which it must write."""

    name: str
    consumes: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """A fault the team's host-side checks found in what an action saved (a fact for the coach, not a score).

    Attributes:
        kind: the check that found it, from the team's vocabulary (dsbench: ``"ids_not_in_test"``,
            ``"target_leak"``, ``"id_feature"``; see the team's docs).
        file: the workspace file at fault; its producer (``CoachRequest.owner_of``) is the role to blame.
        message: what was found, in a sentence a coach can quote.
    """

    kind: str
    file: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "file": self.file, "message": self.message}


@dataclass(frozen=True)
class StepRecord:
    """One action of one agent: what it did, what running it produced, and the coach's verdict.

    Attributes:
        agent: the acting agent's id; ``action_index`` its 0-based index among that agent's actions.
        action: the full reply (thinking included); ``code`` the Python extracted from it (``""``: none)
            and ``num_code_blocks`` how many blocks were joined into it.
        stdout, stderr: tool output, cut to the environment's ``max_output_chars`` (head and tail).
        error: ``"ExcType: message"``, or the reason of a timeout or kill, else ``""``.
        status: ``"ok"``, ``"error"``, ``"timeout"``, ``"killed"`` or ``"no_code"``.
        state_lost: the agent's Python process was restarted; its variables are gone.
        duration_s: wall-clock seconds of the execution.
        files_changed: workspace paths created, modified or deleted by the action.
        workspace_before, workspace_after: workspace inventory (path → bytes) around the action.
        ends_stage: this action ended the agent's turn.
        result: the team's result (dsbench: ``submission.csv``) graded on the host right after this action,
            when the action wrote or changed it; None otherwise. The quality an action earned is judged on
            the action that produced it, not only on the one that happens to end the episode.
        findings: faults the team's host-side checks found in the files this action saved.
        verdict: the coach's judgement; None only inside the engine, before the coach has answered.
    """

    agent: str
    action_index: int
    action: str
    code: str = ""
    num_code_blocks: int = 0
    stdout: str = ""
    stderr: str = ""
    error: str = ""
    status: str = "no_code"
    state_lost: bool = False
    duration_s: float = 0.0
    files_changed: tuple[str, ...] = ()
    workspace_before: Mapping[str, int] = field(default_factory=dict)
    workspace_after: Mapping[str, int] = field(default_factory=dict)
    ends_stage: bool = True
    result: Outcome | None = None
    findings: tuple[Finding, ...] = ()
    verdict: Verdict | None = None

    def __post_init__(self) -> None:
        if self.status not in STEP_STATUSES:
            raise ValueError(f"step status must be one of {STEP_STATUSES}, got {self.status!r}")
        object.__setattr__(self, "files_changed", tuple(self.files_changed))
        object.__setattr__(self, "findings", tuple(self.findings))
        object.__setattr__(self, "workspace_before", _frozen_mapping(self.workspace_before))
        object.__setattr__(self, "workspace_after", _frozen_mapping(self.workspace_after))

    def with_verdict(self, verdict: Verdict) -> StepRecord:
        """A copy of this record with ``verdict``; this record is left as it is."""
        return replace(self, verdict=verdict)

    def to_info(self) -> dict[str, Any]:
        """The mapping PettingZoo's ``infos[agent]["step"]`` holds (docs/environment.md), a fresh copy."""
        return {
            "agent": self.agent,
            "action_index": self.action_index,
            "action": self.action,
            "code": self.code,
            "num_code_blocks": self.num_code_blocks,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
            "status": self.status,
            "state_lost": self.state_lost,
            "duration_s": self.duration_s,
            "files_changed": list(self.files_changed),
            "workspace": dict(self.workspace_after),
            "ends_stage": self.ends_stage,
            "result": None if self.result is None else self.result.to_info(),
            "findings": [f.to_dict() for f in self.findings],
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-serialisable; :meth:`from_dict` restores the record."""
        data = self.to_info()
        data["workspace_after"] = data.pop("workspace")
        data["workspace_before"] = dict(self.workspace_before)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepRecord:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        verdict, result = fields.pop("verdict", None), fields.pop("result", None)
        findings = tuple(Finding(**f) for f in fields.pop("findings", ()))
        return cls(**fields, result=None if result is None else Outcome.from_info(result), findings=findings,
                   verdict=None if verdict is None else Verdict.from_dict(verdict))


@dataclass(frozen=True)
class Outcome:
    """An episode's graded result, computed on the host once the last agent is done.

    Attributes:
        valid: the team produced a gradable result (a valid submission, a parsable answer).
        reason: why it is invalid, or a short description of the grade.
        metrics: metric name → value (the team declares its metric names).
        task_id, task_type: the task graded.
        extra: what a team's grader adds (e.g. the parsed answer); kept in ``to_info()``.
    """

    valid: bool
    reason: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    task_id: str = ""
    task_type: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", _frozen_mapping(self.metrics))
        object.__setattr__(self, "extra", _frozen_mapping(self.extra))

    def to_info(self) -> dict[str, Any]:
        """The mapping ``infos[agent]["outcome"]`` holds: ``valid``, ``reason``, ``metrics``, ``task_id``,
        ``task_type``, plus the team's extra keys."""
        return {**self.extra, "valid": self.valid, "reason": self.reason, "metrics": dict(self.metrics),
                "task_id": self.task_id, "task_type": self.task_type}

    @classmethod
    def from_info(cls, data: Mapping[str, Any]) -> Outcome:
        """The outcome a grader or an infos mapping describes (keys beyond the five go to ``extra``)."""
        known = ("valid", "reason", "metrics", "task_id", "task_type")
        return cls(bool(data["valid"]), str(data.get("reason", "")), dict(data.get("metrics") or {}),
                   str(data.get("task_id", "")), str(data.get("task_type", "")),
                   {k: v for k, v in data.items() if k not in known})


def outcome_succeeded(outcome: Mapping[str, Any] | None) -> bool:
    """Whether an episode's outcome (an :meth:`Outcome.to_info` mapping) is a success.

    A team that grades right and wrong says so with ``correct`` (a math answer may be valid, parsed, and
    wrong): then success is ``correct``; otherwise it is ``valid`` (a valid dsbench submission).
    """
    if not outcome:
        return False
    return bool(outcome["correct"]) if "correct" in outcome else bool(outcome.get("valid"))


@dataclass(frozen=True)
class CoachRequest:
    """Everything known about one action when it is judged: its record plus the context around it.

    Attributes:
        env_id, task_id, task_type: where the action happened.
        step: the action's record (its ``verdict`` still None).
        role_instructions: the acting agent's system prompt.
        team: every role in pipeline order, with the files it reads and writes (for blaming the
            role that should have produced a missing file).
        task_description: the task text all agents saw.
        observation: the full prompt the agent saw before acting.
        upstream: the records of the agents that acted before this one, in order (the same objects
            the engine holds, not copies).
        earlier: this agent's own earlier actions in the episode, in order (with their online verdicts).
        outcome: the graded outcome when known (the action that ends the episode, hindsight), else None.
        trajectory: for hindsight coaches, every record of the episode in pipeline order (this action's
            included); empty for online coaching.
    """

    env_id: str
    task_id: str
    task_type: str
    step: StepRecord
    role_instructions: str
    team: tuple[RoleInfo, ...]
    task_description: str
    observation: str
    upstream: tuple[StepRecord, ...] = ()
    outcome: Outcome | None = None
    trajectory: tuple[StepRecord, ...] = ()
    earlier: tuple[StepRecord, ...] = ()

    # what coaches read most, named as they think of it
    @property
    def role(self) -> str:
        return self.step.agent

    @property
    def action_index(self) -> int:
        return self.step.action_index

    @property
    def role_info(self) -> RoleInfo:
        return next(r for r in self.team if r.name == self.role)

    @property
    def is_final_role(self) -> bool:
        return self.team[-1].name == self.role

    def owner_of(self, filename: str) -> str | None:
        """The role that must produce ``filename``, or None when no role does (e.g. a task input)."""
        return next((r.name for r in self.team if filename in r.produces), None)

    @property
    def history(self) -> tuple[StepRecord, ...]:
        """Every action up to and including this one, in pipeline order (upstream, earlier, this)."""
        return (*self.upstream, *self.earlier, self.step)

    def latest_writers(self, *, include_self: bool = True) -> dict[str, StepRecord]:
        """For each file changed so far, the record of the latest action that changed it (this action's
        own changes left out with ``include_self=False``)."""
        latest: dict[str, StepRecord] = {}
        for record in self.history if include_self else self.history[:-1]:
            for path in record.files_changed:
                latest[path] = record
        return latest

    def standing_findings(self) -> tuple[Finding, ...]:
        """The findings still true after this action: for each file, those of the latest action that changed it."""
        latest = self.latest_writers()
        writers = {id(record): record for record in latest.values()}  # records hold dicts: not hashable
        return tuple(f for record in writers.values() for f in record.findings if latest.get(f.file) is record)

    def context_dict(self) -> dict[str, Any]:
        """The request's context without its records, JSON-serialisable (see :func:`requests_to_json`)."""
        return {
            "env_id": self.env_id, "task_id": self.task_id, "task_type": self.task_type,
            "role_instructions": self.role_instructions,
            "team": [{"name": r.name, "consumes": list(r.consumes), "produces": list(r.produces)} for r in self.team],
            "task_description": self.task_description, "observation": self.observation,
            "outcome": None if self.outcome is None else self.outcome.to_info(),
        }


def requests_to_json(requests: Sequence[CoachRequest], records: Sequence[StepRecord]) -> list[dict[str, Any]]:
    """Coach requests as JSON that refers to ``records`` (the episode's records, stored once beside them).

    Each request's step, upstream and trajectory become positions in ``records``, matched by
    ``(agent, action_index)``, so no request carries a copy of a record (its own, upstream or trajectory).
    """
    position = {(r.agent, r.action_index): i for i, r in enumerate(records)}

    def refs(steps: Sequence[StepRecord]) -> list[int]:
        return [position[(s.agent, s.action_index)] for s in steps]

    return [
        {**request.context_dict(), "step": position[(request.step.agent, request.step.action_index)],
         "upstream": refs(request.upstream), "trajectory": refs(request.trajectory),
         "earlier": refs(request.earlier)}
        for request in requests
    ]


def requests_from_json(data: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]) -> list[CoachRequest]:
    """Inverse of :func:`requests_to_json`, given the stored records (:meth:`StepRecord.to_dict` mappings).

    References resolve to the episode's final records; the request's own step is given without its
    verdict, as the coach saw it.
    """
    steps = [StepRecord.from_dict(r) for r in records]
    requests = []
    for raw in data:
        team = tuple(RoleInfo(r["name"], tuple(r["consumes"]), tuple(r["produces"])) for r in raw["team"])
        requests.append(CoachRequest(
            env_id=raw["env_id"], task_id=raw["task_id"], task_type=raw["task_type"],
            step=replace(steps[raw["step"]], verdict=None), role_instructions=raw["role_instructions"], team=team,
            task_description=raw["task_description"], observation=raw["observation"],
            upstream=tuple(steps[i] for i in raw["upstream"]),
            outcome=None if raw["outcome"] is None else Outcome.from_info(raw["outcome"]),
            trajectory=tuple(steps[i] for i in raw["trajectory"]),
            earlier=tuple(steps[i] for i in raw.get("earlier", ())),
        ))
    return requests
