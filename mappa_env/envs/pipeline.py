"""The generic sequential-team engine behind every mappa_env team.

A team is a fixed sequence of roles (agents). Each agent acts up to ``max_actions_per_agent`` times;
an action is the model's full text. The Python in its ```python blocks runs in the agent's own
sandbox, in a workspace shared by the whole team, and a coach scores the action right away. An action
without code ends the agent's stage, and so does its last allowed action; then the next agent starts,
with the previous agent's last message (thinking removed) handed over. After the last agent's stage the
episode is graded on the host and terminates for every agent.

This module knows nothing about CSVs or maths: a team subclass supplies the roles, the tasks, the
workspace set-up, the task prompt and the grader (see :class:`PipelineEnv`'s abstract hooks).

Reward channels (what a trainer reads):

* ``env.rewards[A]`` right after agent ``A`` stepped: that action's reward as known then
  (:func:`~mappa_env.envs.rewards.immediate_reward`).
* ``env.infos[A]["step_rewards"]`` at termination, the canonical channel: each action's final reward
  (:func:`~mappa_env.envs.rewards.final_reward`; ``None`` for an action the coach could not score),
  including rewards known only at the end. ``env.rewards[A]`` then receives whatever part of
  ``sum(step_rewards)`` was not delivered yet, so ``last()``'s accumulated reward adds up too.
* ``env.infos[A]["step"]``: the record of ``A``'s latest action (code, stdout, stderr, status,
  duration, files changed, coach verdict); ``env.infos[A]["steps"]``: all of them, at termination.
  Both are :meth:`mappa_env.records.StepRecord.to_info` mappings of the records the engine keeps.

Prompts and transcripts are rendered by :mod:`mappa_env.envs.transcript`; which sandbox backends exist
and what they accept is :mod:`mappa_env.sandbox`'s business, not the engine's.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pettingzoo import AECEnv

from mappa_env.arguments import accepted_parameters, reject_unknown
from mappa_env.coach import Coach, close_coach, make_coach
from mappa_env.envs import rewards, transcript, workspace
from mappa_env.envs.rewards import RewardMode, ScoreCalibration
from mappa_env.envs.transcript import render_messages
from mappa_env.records import CoachRequest, Finding, Outcome, RoleInfo, StepRecord, Verdict
from mappa_env.scorecard import Scorecard
from mappa_env.sandbox import DEFAULT_EXEC_TIMEOUT_S, Sandbox, check_sandbox, check_timeout, make_sandbox
from mappa_env.spaces import UnicodeText, text_observation_space
from mappa_env.tasks import find_task
from mappa_env.text import extract_python_blocks, strip_thinking, truncate_middle

__all__ = ["PipelineEnv", "Role", "check_engine_kwargs", "render_messages"]

RENDER_MODES = ("human", "ansi")


@dataclass(frozen=True)
class Role:
    """One agent of a team.

    Attributes:
        name: agent id, snake_case (``"data_engineer"``).
        title: human title used in prompts (``"Data Engineer"``).
        instructions: the role's system prompt: its job and exactly which files it reads and writes.
        consumes: workspace files it reads that another role must produce (or task inputs).
        produces: workspace files it must save for the agents after it.
        runs_code: its ```python blocks run in its sandbox; False: they are never run (every reply of the
            role is then code-less and ends its stage).
        max_actions: its action budget; None: the environment's ``max_actions_per_agent``.
        sees_tool_output: its opening prompt also shows the previous agent's last tool output (what its
            last code printed), beside that agent's last message.
        turn_prompt: what its opening prompt ends with, the last thing a model reads before replying (a
            small model follows a format it has just been shown); None: the engine's rules of the turn.
        reply_prefix: how the role's replies should open (``"The answer is \\boxed{"``), offered to policies
            as ``infos[agent]["reply_prefix"]``. A policy that can prefill its model's reply starts it with
            this text and the model writes the rest; its action is then the whole reply, prefix included.
            A hint, not a rule: a reply that opens otherwise is taken as it is.
    """

    name: str
    title: str
    instructions: str
    consumes: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    runs_code: bool = True
    max_actions: int | None = None
    sees_tool_output: bool = False
    turn_prompt: str | None = None
    reply_prefix: str = ""


class PipelineEnv(AECEnv):
    """AEC environment for a sequential team. Subclasses set :attr:`roles` and implement the hooks."""

    metadata = {"render_modes": list(RENDER_MODES), "name": "pipeline", "is_parallelizable": False}
    env_id = "pipeline"
    roles: tuple[Role, ...] = ()
    #: how the team is scored (task types, metrics, summary table): what trainers and evaluations read
    scorecard = Scorecard(task_types=())
    #: workspace files holding the team's result: an action that changes one is graded right away
    result_files: tuple[str, ...] = ()
    #: opening prompts list the workspace (False for a team whose work is not in files)
    shows_workspace = True

    def __init__(
        self,
        *,
        max_actions_per_agent: int = 4,
        reward_mode: RewardMode = "process",
        reward_scale: float = 0.1,
        outcome_weight: float = 0.5,
        coach: str | Coach = "receipts",
        coach_kwargs: Mapping[str, Any] | None = None,
        sandbox: Any = "local",
        sandbox_kwargs: Mapping[str, Any] | None = None,
        exec_timeout_s: float = DEFAULT_EXEC_TIMEOUT_S,
        max_output_chars: int = 2000,
        render_mode: str | None = None,
        max_cycles: int | None = None,
        reward_calibration: ScoreCalibration | None = None,
    ):
        super().__init__()
        _check(isinstance(max_actions_per_agent, int) and max_actions_per_agent >= 1,
               f"max_actions_per_agent must be an integer >= 1, got {max_actions_per_agent!r}")
        rewards.check_settings(reward_mode, reward_scale=reward_scale, outcome_weight=outcome_weight,
                               calibration=reward_calibration)
        _check(isinstance(max_output_chars, int) and max_output_chars >= 200,
               f"max_output_chars must be an integer >= 200, got {max_output_chars!r}")
        _check(render_mode is None or render_mode in RENDER_MODES,
               f"render_mode must be None or one of {RENDER_MODES}, got {render_mode!r}")
        _check(max_cycles is None or (isinstance(max_cycles, int) and max_cycles > 0),
               f"max_cycles must be None or a positive integer, got {max_cycles!r}")
        self.exec_timeout_s = check_timeout(exec_timeout_s)
        check_sandbox(sandbox, sandbox_kwargs or {})  # fail now, with the fix, rather than at the first reset

        self.max_actions_per_agent = max_actions_per_agent
        self.reward_mode: RewardMode = reward_mode
        self.reward_scale = float(reward_scale)
        self.outcome_weight = float(outcome_weight)
        self.coach = make_coach(coach, **dict(coach_kwargs or {}))
        self._owns_coach = isinstance(coach, str)  # built here from a name: closed here too
        self.sandbox_spec = sandbox
        self.sandbox_kwargs = dict(sandbox_kwargs or {})
        self.max_output_chars = max_output_chars
        self.render_mode = render_mode
        self.max_cycles = max_cycles
        self.reward_calibration = reward_calibration

        self.possible_agents = [r.name for r in self.roles]
        self._roles = {r.name: r for r in self.roles}
        self._team = tuple(RoleInfo(r.name, r.consumes, r.produces) for r in self.roles)
        text_space = UnicodeText()
        self.observation_spaces = {a: text_observation_space(text_space) for a in self.possible_agents}
        self.action_spaces = {a: text_space for a in self.possible_agents}

        self._rng = np.random.default_rng()
        self._hidden = self._hidden_paths()
        self._workspace: Path | None = None
        self._sandboxes: dict[str, Sandbox] = {}
        self._records: dict[str, list[StepRecord]] = {}
        self._requests: dict[str, list[CoachRequest]] = {}
        self._outcome: Outcome | None = None
        self.task: Any = None

    # ------------------------------------------------------------------ team hooks
    def _load_tasks(self) -> Sequence[Any]:
        """The tasks episodes are drawn from (:class:`mappa_env.tasks.Task` records)."""
        raise NotImplementedError

    def _prepare_workspace(self, task: Any, workspace: Path) -> None:
        """Put the task's public files into a fresh workspace."""
        raise NotImplementedError

    def _task_prompt(self, task: Any) -> str:
        """The task text every agent sees in its first user message."""
        return task.description

    def _hidden_paths(self) -> tuple[str, ...]:
        """Host paths the sandbox must hide although they lie in what it shows of the host (task sources)."""
        return ()

    def _grade(self, task: Any, workspace: Path, records: Sequence[StepRecord]) -> Mapping[str, Any]:
        """Grade the team's result on the host: ``valid``, ``reason``, ``metrics``, ``task_id``, ``task_type``
        (and any extra keys). ``records``: every action so far, in pipeline order, the latest last (a team
        whose result is an answer in a reply grades that; one whose result is a file grades the workspace)."""
        raise NotImplementedError

    def _grade_action(self, record: StepRecord) -> Outcome | None:
        """The team's result graded right after an action that wrote or changed it, else None.

        The default grades the workspace (:meth:`_grade`) when the action changed one of
        :attr:`result_files`, so that the quality of a submission is judged on the action that wrote it.
        """
        if not set(record.files_changed) & set(self.result_files):
            return None
        return Outcome.from_info(self._grade(self.task, self._workspace, (*self.step_records(), record)))

    def _check_outputs(self, record: StepRecord) -> tuple[Finding, ...]:
        """Faults in the files an action saved (:class:`~mappa_env.records.Finding`); the default checks nothing."""
        return ()

    def _outcome_score(self, outcome: Outcome) -> float:
        """The episode's outcome on the coach's 0–10 scale (used in ``outcome`` and ``mixed`` modes)."""
        return 10.0 if outcome.valid else 0.0

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str):
        return self.observation_spaces[agent]

    def action_space(self, agent: str):
        return self.action_spaces[agent]

    # ------------------------------------------------------------------ reset
    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._close_episode()
        tasks = self.tasks
        task_id = (options or {}).get("task_id")
        if task_id is not None:
            self.task = find_task(tasks, task_id, where=f"{self.env_id}'s split (options['task_id'])")
        else:
            self.task = tasks[int(self._rng.integers(len(tasks)))]

        self._workspace = Path(tempfile.mkdtemp(prefix="mappa-ws-"))
        self._prepare_workspace(self.task, self._workspace)

        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self._stage = 0
        self._num_steps = 0
        self._outcome = None
        self._records = {a: [] for a in self.agents}
        self._requests = {a: [] for a in self.agents}
        self._delivered: dict[str, float] = {a: 0.0 for a in self.agents}
        self._messages: dict[str, list[dict[str, str]]] = {}
        self.agent_selection = self.agents[0]
        self._start_stage(self.agent_selection)
        self.infos = {a: self._turn_info(a) for a in self.agents}

    @property
    def tasks(self) -> Sequence[Any]:
        if not hasattr(self, "_tasks"):
            self._tasks = list(self._load_tasks())
            if not self._tasks:
                raise ValueError(f"{self.env_id}: the selected suite/split has no tasks; choose another split or suite")
        return self._tasks

    # ------------------------------------------------------------------ observation
    def _turn_info(self, agent: str, **extra: Any) -> dict[str, Any]:
        """The info an agent reads before it acts: its chat messages and how its reply should open."""
        return {"messages": self._messages_for(agent), "reply_prefix": self._roles[agent].reply_prefix, **extra}

    def observe(self, agent: str) -> dict[str, str]:
        return {"text": render_messages(self._messages_for(agent))}

    def _messages_for(self, agent: str) -> list[dict[str, str]]:
        if agent not in self._messages:  # an agent whose stage has not started sees its opening prompt
            return self._opening_messages(agent)
        return self._messages[agent]

    def _opening_messages(self, agent: str) -> list[dict[str, str]]:
        role = self._roles[agent]
        index = self.possible_agents.index(agent)
        handoff = tool_output = None
        if index > 0:
            previous = self._roles[self.possible_agents[index - 1]]
            records = self._records.get(previous.name)
            if records:  # the previous agent's last message, thinking removed
                handoff = (previous.title, strip_thinking(records[-1].action).strip() or "(no message)")
                ran = [r for r in records if r.status != "no_code"]
                if role.sees_tool_output and ran:
                    tool_output = transcript.tool_output_text(ran[-1])
        return transcript.opening_messages(
            instructions=role.instructions, title=role.title, task_prompt=self._task_prompt(self.task),
            workspace=workspace.sizes(workspace.snapshot(self._workspace)) if self.shows_workspace else None,
            handoff=handoff, tool_output=tool_output, max_actions=self._max_actions(agent), runs_code=role.runs_code,
            persistent=self.sandbox_kwargs.get("persistent", True), turn_prompt=role.turn_prompt,
        )

    def _max_actions(self, agent: str) -> int:
        """The agent's action budget: its role's, else the environment's ``max_actions_per_agent``."""
        own = self._roles[agent].max_actions
        return self.max_actions_per_agent if own is None else own

    def _start_stage(self, agent: str) -> None:
        self._messages[agent] = self._opening_messages(agent)
        # Start this agent's sandbox and the next one's: each worker warms up (imports) while the
        # agents before it work, without paying for workers of stages an episode may never reach.
        index = self.possible_agents.index(agent)
        for name in self.possible_agents[index : index + 2]:
            self._sandbox(name)

    def _sandbox(self, agent: str) -> Sandbox:
        """The agent's sandbox for this episode, created on first use."""
        if agent not in self._sandboxes:
            options = dict(self.sandbox_kwargs)
            hidden = (*options.pop("hidden_paths", ()), *self._hidden)  # the user's and the team's
            self._sandboxes[agent] = make_sandbox(self.sandbox_spec, self._workspace, timeout_s=self.exec_timeout_s,
                                                  hidden_paths=hidden, **options)
        return self._sandboxes[agent]

    # ------------------------------------------------------------------ step
    def step(self, action: str | None) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        if not isinstance(action, str):
            raise TypeError(f"{self.env_id}: the action of a live agent must be the model's text (str), got {type(action).__name__}")
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        self._num_steps += 1

        request = self._act(agent, action)
        record = request.step
        ends_episode = record.ends_stage and self._stage == len(self.possible_agents) - 1
        if ends_episode:
            # the action that ends the episode may have been graded already (it wrote the result): grade once
            self._outcome = record.result or Outcome.from_info(self._grade(self.task, self._workspace,
                                                                           (*self.step_records(), record)))
            request = replace(request, outcome=self._outcome)
        record = record.with_verdict(self._coach_online(request))
        self._records[agent].append(record)
        self._requests[agent].append(request)
        immediate = rewards.immediate_reward(self.reward_mode, record.verdict.score, reward_scale=self.reward_scale,
                                             outcome_weight=self.outcome_weight)
        self.rewards[agent] = immediate
        self._delivered[agent] += immediate
        # A new list, never an in-place extend: prompts handed out earlier (a trainer may keep them
        # with the action taken) must not change afterwards.
        self._messages[agent] = [
            *self._messages[agent],
            {"role": "assistant", "content": action},
            {"role": "user", "content": transcript.result_message(record, max_actions=self._max_actions(agent))},
        ]
        self.infos[agent] = self._turn_info(agent, step=record.to_info())

        if ends_episode:
            self._finish_episode()
        elif record.ends_stage:
            self._stage += 1
            self.agent_selection = self.possible_agents[self._stage]
            self._start_stage(self.agent_selection)
            self.infos[self.agent_selection]["messages"] = self._messages[self.agent_selection]
        if self.max_cycles is not None and self._num_steps >= self.max_cycles and not ends_episode:
            self._outcome = Outcome(False, f"episode truncated after max_cycles={self.max_cycles} actions, before grading",
                                    task_id=self.task.id, task_type=self.task.task_type)
            self._finish_episode(truncated=True)
        self._accumulate_rewards()

    def _act(self, agent: str, action: str) -> CoachRequest:
        """Run the action's code; the coach request holding its record (the verdict still missing)."""
        # A role that runs no code has nothing extracted, so nothing of its reply can ever run.
        blocks = extract_python_blocks(action) if self._roles[agent].runs_code else []
        code = "\n\n".join(blocks)
        observation = self.observe(agent)["text"]
        before = workspace.snapshot(self._workspace)
        action_index = len(self._records[agent])
        ran = self._sandbox(agent).run(code) if code else None
        after = workspace.snapshot(self._workspace)
        record = StepRecord(
            agent=agent, action_index=action_index, action=action, code=code, num_code_blocks=len(blocks),
            stdout=truncate_middle(ran.stdout, self.max_output_chars) if ran else "",
            stderr=truncate_middle(ran.stderr, self.max_output_chars) if ran else "",
            error=ran.error if ran else "", status=ran.status if ran else "no_code",
            state_lost=ran.state_lost if ran else False, duration_s=ran.duration_s if ran else 0.0,
            files_changed=tuple(workspace.changed_paths(before, after)),  # deleted ones included
            workspace_before=workspace.sizes(before), workspace_after=workspace.sizes(after),
            ends_stage=not code or action_index + 1 >= self._max_actions(agent),
        )
        record = replace(record, result=self._grade_action(record), findings=self._check_outputs(record))
        upstream = self.possible_agents[: self.possible_agents.index(agent)]
        return CoachRequest(
            env_id=self.env_id, task_id=self.task.id, task_type=self.task.task_type, step=record,
            role_instructions=self._roles[agent].instructions, team=self._team,
            task_description=self._task_prompt(self.task), observation=observation,
            upstream=tuple(r for a in upstream for r in self._records[a]),  # the records themselves: frozen
            earlier=tuple(self._records[agent]),
        )

    def _coach_online(self, request: CoachRequest) -> Verdict:
        if self.coach.timing == "hindsight":
            return Verdict.pending(self.coach.name)
        return self._score(request)

    def _score(self, request: CoachRequest) -> Verdict:
        """The coach's verdict; a coach that crashes yields an unscored verdict with the reason, never a number."""
        try:
            return self.coach.score(request)
        except Exception as exc:  # coach failures are data (DESIGN: contracts)
            reason = f"coach error: {type(exc).__name__}: {exc}"
            return Verdict(None, reason, getattr(self.coach, "name", type(self.coach).__name__),
                           {"unscored_reason": "coach_error", "error": reason})

    # ------------------------------------------------------------------ end of episode
    def _finish_episode(self, *, truncated: bool = False) -> None:
        if self.coach.timing == "hindsight":
            self._coach_hindsight()
        outcome_score = self._outcome_score(self._outcome)
        for agent in self.agents:
            records = self._records[agent]
            step_rewards = [
                rewards.final_reward(self.reward_mode, self._calibrated(agent, r.verdict.score), outcome_score,
                                     reward_scale=self.reward_scale, outcome_weight=self.outcome_weight)
                for r in records
            ]
            total = sum(r for r in step_rewards if r is not None)
            self.rewards[agent] += total - self._delivered[agent]  # whatever was not delivered step by step
            self._delivered[agent] = total
            self.infos[agent] = {
                "messages": self._messages_for(agent),
                "step": records[-1].to_info() if records else None,
                "steps": [r.to_info() for r in records],
                "step_rewards": step_rewards,
                "outcome": self._outcome.to_info(),
            }
        if truncated:
            self.truncations = {a: True for a in self.agents}
        else:
            self.terminations = {a: True for a in self.agents}
        self._close_sandboxes()

    def _calibrated(self, agent: str, score: float | None) -> float | None:
        """The score the reward is computed from: the coach's, or its calibration (the record keeps the coach's)."""
        if self.reward_calibration is None or score is None:
            return score
        return self.reward_calibration(score, task_type=self.task.task_type, role=agent, success=self._outcome.valid)

    def _coach_hindsight(self) -> None:
        """Score every action with the whole episode in view; new records replace the pending ones."""
        trajectory = tuple(self.step_records())
        for agent in self.agents:
            self._records[agent] = [
                record.with_verdict(self._score(replace(request, outcome=self._outcome, trajectory=trajectory)))
                for record, request in zip(self._records[agent], self._requests[agent])
            ]

    def step_records(self) -> list[StepRecord]:
        """Every record of the current episode so far, in pipeline order (with their latest verdicts)."""
        return [record for agent in self.possible_agents for record in self._records.get(agent, [])]

    def coach_requests(self) -> list[CoachRequest]:
        """Every coach request of the current episode, in pipeline order: record them to coach again later
        (:func:`mappa_env.records.requests_to_json`)."""
        return [request for agent in self.possible_agents for request in self._requests.get(agent, [])]

    # ------------------------------------------------------------------ render / close
    def render(self) -> str | None:
        """``"ansi"``: the transcript so far, as a string; ``"human"``: the same, printed (returns None)."""
        if self.render_mode is None:
            warnings.warn("render() called without render_mode; create the env with render_mode='ansi' or 'human'",
                          stacklevel=2)
            return None
        text = transcript.render_transcript(self.env_id, self.task.id if self.task else "-", self.step_records(),
                                            self._outcome)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        """End the episode (sandboxes, workspace) and release the coach if this environment built it."""
        self._close_episode()
        if self._owns_coach:
            close_coach(self.coach)

    def _close_sandboxes(self) -> None:
        for sandbox in self._sandboxes.values():
            sandbox.close()
        self._sandboxes = {}

    def _close_episode(self) -> None:
        self._close_sandboxes()
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None

    def __del__(self) -> None:
        try:  # only what is this episode's: the coach's own finalizer looks after the coach, without blocking
            self._close_episode()
        except Exception:
            pass

    @property
    def workspace(self) -> Path | None:
        """The current episode's workspace directory on the host (None before reset / after close)."""
        return self._workspace


def check_engine_kwargs(env_id: str, kwargs: Mapping[str, Any], own: Sequence[str] = ()) -> None:
    """Raise ValueError for a keyword argument neither the engine nor the team (``own``) accepts."""
    reject_unknown(env_id, kwargs, [*own, *accepted_parameters(PipelineEnv.__init__)])


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
