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

* ``env.rewards[A]`` right after agent ``A`` stepped: that action's reward as known then. In
  ``reward_mode="process"`` it is the coach's score mapped by ``reward_scale``; in ``"outcome"`` it is 0;
  in ``"mixed"`` it is the process part, ``(1 - outcome_weight) * process``.
* ``env.infos[A]["step_rewards"]`` at termination: a list aligned with ``A``'s actions holding each
  action's final reward in the chosen mode (``None`` for an action the coach could not score). This is
  the canonical channel: it also carries rewards known only at the end (hindsight coaching, outcome
  rewards). At termination ``env.rewards[A]`` receives whatever part of ``sum(step_rewards)`` was not
  delivered yet, so ``last()``'s accumulated reward also adds up.
* ``env.infos[A]["step"]``: the record of ``A``'s latest action (code, stdout, stderr, status,
  duration, files changed, coach verdict); ``env.infos[A]["steps"]``: all of them, at termination.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pettingzoo import AECEnv

from mappa_env.envs.rewards import REWARD_MODES, RewardMode
from mappa_env.coach import Coach, CoachRequest, RoleInfo, Verdict, make_coach
from mappa_env.sandbox import BACKENDS, Sandbox, make_sandbox
from mappa_env.sandbox.bwrap import require_bwrap
from mappa_env.spaces import UnicodeText
from mappa_env.text import extract_python_blocks, format_size, strip_thinking, truncate_middle

MAX_INVENTORY_FILES = 2000  # a runaway program can create millions of files; list only this many


@dataclass(frozen=True)
class Role:
    """One agent of a team.

    Attributes:
        name: agent id, snake_case (``"data_engineer"``).
        title: human title used in prompts (``"Data Engineer"``).
        instructions: the role's system prompt: its job and exactly which files it reads and writes.
        consumes: workspace files it reads that another role must produce (or task inputs).
        produces: workspace files it must save for the agents after it.
    """

    name: str
    title: str
    instructions: str
    consumes: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()


class PipelineEnv(AECEnv):
    """AEC environment for a sequential team. Subclasses set :attr:`roles` and implement the hooks."""

    metadata = {"render_modes": ["ansi"], "name": "pipeline", "is_parallelizable": False}
    env_id = "pipeline"
    roles: tuple[Role, ...] = ()

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
        exec_timeout_s: float = 60.0,
        max_output_chars: int = 2000,
        render_mode: str | None = None,
        max_cycles: int | None = None,
    ):
        super().__init__()
        _check(isinstance(max_actions_per_agent, int) and max_actions_per_agent >= 1,
               f"max_actions_per_agent must be an integer >= 1, got {max_actions_per_agent!r}")
        _check(reward_mode in REWARD_MODES, f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        _check(isinstance(reward_scale, (int, float)) and reward_scale > 0,
               f"reward_scale must be a positive number (reward = coach score * reward_scale), got {reward_scale!r}")
        _check(isinstance(outcome_weight, (int, float)) and 0.0 <= outcome_weight <= 1.0,
               f"outcome_weight must be within [0, 1] (share of the outcome reward in 'mixed' mode), got {outcome_weight!r}")
        _check(isinstance(exec_timeout_s, (int, float)) and exec_timeout_s > 0,
               f"exec_timeout_s must be a positive number of seconds, got {exec_timeout_s!r}")
        _check(isinstance(max_output_chars, int) and max_output_chars >= 200,
               f"max_output_chars must be an integer >= 200, got {max_output_chars!r}")
        _check(render_mode in (None, "ansi"), f"render_mode must be None or 'ansi', got {render_mode!r}")
        _check(max_cycles is None or (isinstance(max_cycles, int) and max_cycles > 0),
               f"max_cycles must be None or a positive integer, got {max_cycles!r}")
        _check(sandbox in BACKENDS or callable(sandbox),
               f"sandbox must be a backend name {BACKENDS} or a factory (workspace, **kwargs) -> Sandbox, got {sandbox!r}")
        if isinstance(sandbox, str):
            _check_sandbox_kwargs(sandbox_kwargs or {}, sandbox)
        if sandbox == "local":
            require_bwrap()  # fail now, with the fix, rather than at the first reset

        self.max_actions_per_agent = max_actions_per_agent
        self.reward_mode: RewardMode = reward_mode
        self.reward_scale = float(reward_scale)
        self.outcome_weight = float(outcome_weight)
        self.coach = make_coach(coach, **dict(coach_kwargs or {}))
        self.sandbox_spec = sandbox
        self.sandbox_kwargs = dict(sandbox_kwargs or {})
        self.exec_timeout_s = float(exec_timeout_s)
        self.max_output_chars = max_output_chars
        self.render_mode = render_mode
        self.max_cycles = max_cycles

        self.possible_agents = [r.name for r in self.roles]
        self._roles = {r.name: r for r in self.roles}
        self._team = tuple(RoleInfo(r.name, r.consumes, r.produces) for r in self.roles)
        text_space = UnicodeText()
        self.observation_spaces = {a: _observation_space(text_space) for a in self.possible_agents}
        self.action_spaces = {a: text_space for a in self.possible_agents}

        self._rng = np.random.default_rng()
        self._hidden = self._hidden_paths()
        self._workspace: Path | None = None
        self._sandboxes: dict[str, Sandbox] = {}
        self.task: Any = None

    # ------------------------------------------------------------------ team hooks
    def _load_tasks(self) -> Sequence[Any]:
        """The tasks episodes are drawn from (objects with ``id`` and ``description``)."""
        raise NotImplementedError

    def _prepare_workspace(self, task: Any, workspace: Path) -> None:
        """Put the task's public files into a fresh workspace."""
        raise NotImplementedError

    def _task_prompt(self, task: Any) -> str:
        """The task text every agent sees in its first user message."""
        return task.description

    def _hidden_paths(self) -> tuple[str, ...]:
        """Host paths the ``local`` sandbox must cover although they lie in what it binds (task sources)."""
        return ()

    def _grade(self, task: Any, workspace: Path) -> dict[str, Any]:
        """Grade the finished workspace on the host: ``valid``, ``reason``, ``metrics``, ``task_id``, ``task_type``."""
        raise NotImplementedError

    def _outcome_score(self, outcome: Mapping[str, Any]) -> float:
        """The episode's outcome on the coach's 0–10 scale (used in ``outcome`` and ``mixed`` modes)."""
        return 10.0 if outcome.get("valid") else 0.0

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str):
        return self.observation_spaces[agent]

    def action_space(self, agent: str):
        return self.action_spaces[agent]

    # ------------------------------------------------------------------ reset
    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._close_episode(remove_workspace=True)
        tasks = self.tasks
        task_id = (options or {}).get("task_id")
        self.task = self._find_task(task_id) if task_id is not None else tasks[int(self._rng.integers(len(tasks)))]

        self._workspace = Path(tempfile.mkdtemp(prefix="mappa-ws-"))
        self._prepare_workspace(self.task, self._workspace)

        self.agents = list(self.possible_agents)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self._stage = 0
        self._num_steps = 0
        self._outcome: dict[str, Any] | None = None
        self._steps: dict[str, list[dict[str, Any]]] = {a: [] for a in self.agents}
        self._requests: dict[str, list[CoachRequest]] = {a: [] for a in self.agents}
        self._delivered: dict[str, float] = {a: 0.0 for a in self.agents}
        self._messages: dict[str, list[dict[str, str]]] = {}
        self.agent_selection = self.agents[0]
        self._start_stage(self.agent_selection)
        self.infos = {a: {"messages": self._messages_for(a)} for a in self.agents}

    @property
    def tasks(self) -> Sequence[Any]:
        if not hasattr(self, "_tasks"):
            self._tasks = list(self._load_tasks())
            if not self._tasks:
                raise ValueError(f"{self.env_id}: the selected suite/split has no tasks; choose another split or suite")
        return self._tasks

    def _find_task(self, task_id: str) -> Any:
        by_id = {t.id: t for t in self.tasks}
        by_short = {t.id.rsplit("/", 1)[-1]: t for t in self.tasks}
        task = by_id.get(task_id) or by_short.get(task_id)
        if task is None:
            import difflib

            close = difflib.get_close_matches(task_id, list(by_id) + list(by_short), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"options['task_id']={task_id!r} is not a task of this environment's split.{hint}")
        return task

    # ------------------------------------------------------------------ observation
    def observe(self, agent: str) -> dict[str, str]:
        return {"text": render_messages(self._messages_for(agent))}

    def _messages_for(self, agent: str) -> list[dict[str, str]]:
        if agent not in self._messages:  # an agent whose stage has not started sees its opening prompt
            return self._opening_messages(agent)
        return self._messages[agent]

    def _opening_messages(self, agent: str) -> list[dict[str, str]]:
        role = self._roles[agent]
        index = self.possible_agents.index(agent)
        parts = [self._task_prompt(self.task), "## Workspace\n" + self._inventory_text(self._snapshot())]
        if index > 0:
            previous = self.possible_agents[index - 1]
            handoff = self._last_message(previous)
            if handoff is not None:
                parts.append(f"## Message from the {self._roles[previous].title}\n{handoff}")
        memory = (
            "state persists between your replies"
            if self.sandbox_kwargs.get("persistent", True)
            else "a fresh process each time: only files persist between your replies"
        )
        parts.append(
            f"You are the {role.title}. You have at most {self.max_actions_per_agent} actions. "
            f"Each reply's ```python blocks run in your Python process ({memory}). "
            "Reply without a code block when your part is done."
        )
        return [{"role": "system", "content": role.instructions}, {"role": "user", "content": "\n\n".join(parts)}]

    def _last_message(self, agent: str) -> str | None:
        steps = self._steps.get(agent) or []
        if not steps:
            return None
        return strip_thinking(steps[-1]["action"]).strip() or "(no message)"

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
            kwargs = dict(self.sandbox_kwargs)
            if self.sandbox_spec in ("local", "unisolated"):
                kwargs["hidden_paths"] = (*kwargs.get("hidden_paths", ()), *self._hidden)
            self._sandboxes[agent] = make_sandbox(
                self.sandbox_spec, self._workspace, timeout_s=self.exec_timeout_s, **kwargs
            )
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

        record, request = self._act(agent, action)
        ends_episode = record["ends_stage"] and self._stage == len(self.possible_agents) - 1
        if ends_episode:
            self._outcome = self._grade(self.task, self._workspace)
            request = replace(request, outcome=self._outcome)
        verdict = self._coach_online(request)
        record["verdict"] = verdict.to_dict()
        self._steps[agent].append(record)
        self._requests[agent].append(request)
        process = self._scaled(verdict.score)
        immediate = 0.0
        if process is not None and self.reward_mode != "outcome":
            immediate = process * (1.0 - self.outcome_weight if self.reward_mode == "mixed" else 1.0)
        self.rewards[agent] = immediate
        self._delivered[agent] += immediate
        # A new list, never an in-place extend: prompts handed out earlier (a trainer may keep them
        # with the action taken) must not change afterwards.
        self._messages[agent] = [
            *self._messages[agent],
            {"role": "assistant", "content": action},
            {"role": "user", "content": self._result_message(record)},
        ]
        self.infos[agent] = {"messages": self._messages[agent], "step": record}

        if ends_episode:
            self._finish_episode()
        elif record["ends_stage"]:
            self._stage += 1
            self.agent_selection = self.possible_agents[self._stage]
            self._start_stage(self.agent_selection)
            self.infos[self.agent_selection]["messages"] = self._messages[self.agent_selection]
        if self.max_cycles is not None and self._num_steps >= self.max_cycles and not ends_episode:
            self._outcome = {
                "valid": False, "reason": f"episode truncated after max_cycles={self.max_cycles} actions, before grading",
                "metrics": {}, "task_id": self.task.id, "task_type": getattr(self.task, "task_type", ""),
            }
            self._finish_episode(truncated=True)
        self._accumulate_rewards()

    def _act(self, agent: str, action: str) -> tuple[dict[str, Any], CoachRequest]:
        """Run the action's code and build its step record and coach request (verdict still missing)."""
        blocks = extract_python_blocks(action)
        code = "\n\n".join(blocks)
        observation = self.observe(agent)["text"]
        before = self._snapshot()
        action_index = len(self._steps[agent])
        if code:
            result = self._sandbox(agent).run(code, timeout_s=self.exec_timeout_s)
            status, stdout, stderr, error = result.status, result.stdout, result.stderr, result.error
            duration, state_lost = result.duration_s, result.state_lost
        else:
            status, stdout, stderr, error, duration, state_lost = "no_code", "", "", "", 0.0, False
        after = self._snapshot()
        changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))  # incl. deleted
        ends_stage = not code or action_index + 1 >= self.max_actions_per_agent
        record = {
            "agent": agent,
            "action_index": action_index,
            "action": action,
            "code": code,
            "num_code_blocks": len(blocks),
            "stdout": truncate_middle(stdout, self.max_output_chars),
            "stderr": truncate_middle(stderr, self.max_output_chars),
            "error": error,
            "status": status,
            "state_lost": state_lost,
            "duration_s": duration,
            "files_changed": changed,
            "workspace": {p: size for p, (size, _) in after.items()},
            "ends_stage": ends_stage,
        }
        request = CoachRequest(
            env_id=self.env_id,
            task_id=self.task.id,
            task_type=getattr(self.task, "task_type", ""),
            role=agent,
            role_instructions=self._roles[agent].instructions,
            team=self._team,
            task_description=self._task_prompt(self.task),
            observation=observation,
            action=action,
            code=code,
            action_index=action_index,
            ends_stage=ends_stage,
            status=status,
            stdout=record["stdout"],
            stderr=record["stderr"],
            error=error,
            workspace_before={p: size for p, (size, _) in before.items()},
            workspace_after=record["workspace"],
            files_changed=tuple(changed),
            upstream_steps=tuple(self._upstream_records(agent)),
        )
        return record, request

    def _upstream_records(self, agent: str) -> list[dict[str, Any]]:
        upstream = self.possible_agents[: self.possible_agents.index(agent)]
        return [dict(step) for a in upstream for step in self._steps[a]]

    def _coach_online(self, request: CoachRequest) -> Verdict:
        if self.coach.timing == "hindsight":
            return Verdict(None, "pending: scored in hindsight when the episode ends", self.coach.name, {"pending": True})
        return self._score(request)

    def _score(self, request: CoachRequest) -> Verdict:
        """The coach's verdict; a coach that crashes yields an unscored verdict with the reason, never a number."""
        try:
            return self.coach.score(request)
        except Exception as exc:  # coach failures are data (DESIGN: contracts)
            reason = f"coach error: {type(exc).__name__}: {exc}"
            return Verdict(None, reason, getattr(self.coach, "name", type(self.coach).__name__), {"error": reason})

    def _scaled(self, score: float | None) -> float | None:
        return None if score is None else score * self.reward_scale

    def _result_message(self, record: Mapping[str, Any]) -> str:
        lines = [f"Execution status: {record['status']}"]
        if record["status"] == "no_code":
            lines = ["No code block: your stage is over."]
        if record["state_lost"]:
            lines.append("The Python process was restarted: variables from earlier actions are lost; files in the workspace remain.")
        if record["error"]:
            lines.append(f"Error: {record['error']}")
        if record["stdout"]:
            lines.append(f"stdout:\n{record['stdout']}")
        if record["stderr"]:
            lines.append(f"stderr:\n{record['stderr']}")
        if record["status"] != "no_code":
            lines.append("## Workspace\n" + self._inventory_text(_sizes_to_snapshot(record["workspace"])))
            left = self.max_actions_per_agent - record["action_index"] - 1
            lines.append("Your stage is over." if record["ends_stage"] else f"Actions left: {left}.")
        return "\n\n".join(lines)

    # ------------------------------------------------------------------ end of episode
    def _finish_episode(self, *, truncated: bool = False) -> None:
        outcome = dict(self._outcome or {})
        if self.coach.timing == "hindsight":
            self._coach_hindsight(outcome)
        outcome_reward = self._scaled(self._outcome_score(outcome))
        for agent in self.agents:
            step_rewards = [self._final_reward(step, outcome_reward) for step in self._steps[agent]]
            total = sum(r for r in step_rewards if r is not None)
            self.rewards[agent] += total - self._delivered[agent]  # whatever was not delivered step by step
            self._delivered[agent] = total
            self.infos[agent] = {
                "messages": self._messages_for(agent),
                "step": self._steps[agent][-1] if self._steps[agent] else None,
                "steps": list(self._steps[agent]),
                "step_rewards": step_rewards,
                "outcome": outcome,
            }
        if truncated:
            self.truncations = {a: True for a in self.agents}
        else:
            self.terminations = {a: True for a in self.agents}
        self._close_sandboxes()

    def _final_reward(self, step: Mapping[str, Any], outcome_reward: float | None) -> float | None:
        process = self._scaled(step["verdict"]["score"])
        if self.reward_mode == "process":
            return process
        if self.reward_mode == "outcome":
            return outcome_reward
        if process is None:
            return None
        return (1.0 - self.outcome_weight) * process + self.outcome_weight * outcome_reward

    def _coach_hindsight(self, outcome: Mapping[str, Any]) -> None:
        trajectory = tuple(dict(s) for a in self.possible_agents for s in self._steps[a])
        for agent in self.agents:
            for step, request in zip(self._steps[agent], self._requests[agent]):
                verdict = self._score(replace(request, outcome=outcome, trajectory=trajectory))
                step["verdict"] = verdict.to_dict()

    def coach_requests(self) -> list[CoachRequest]:
        """Every coach request of the current episode, in pipeline order: record them to coach again later."""
        return [request for agent in self.possible_agents for request in self._requests.get(agent, [])]

    # ------------------------------------------------------------------ workspace
    def _snapshot(self) -> dict[str, tuple[int, int]]:
        """Workspace path → (size, mtime_ns), relative paths, hidden files included, bounded in count."""
        snapshot: dict[str, tuple[int, int]] = {}
        if self._workspace is None:
            return snapshot
        stack = [self._workspace]
        while stack and len(snapshot) < MAX_INVENTORY_FILES:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in sorted(entries, key=lambda e: e.name):
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                snapshot[os.path.relpath(entry.path, self._workspace)] = (st.st_size, st.st_mtime_ns)
        return snapshot

    @staticmethod
    def _inventory_text(snapshot: Mapping[str, tuple[int, int]]) -> str:
        if not snapshot:
            return "(empty)"
        return "\n".join(f"- {path} ({format_size(size)})" for path, (size, _) in sorted(snapshot.items()))

    # ------------------------------------------------------------------ render / close
    def render(self) -> str | None:
        if self.render_mode is None:
            import warnings

            warnings.warn("render() called without render_mode; create the env with render_mode='ansi'", stacklevel=2)
            return None
        return render_transcript(self)

    def close(self) -> None:
        self._close_episode(remove_workspace=True)

    def _close_sandboxes(self) -> None:
        for sandbox in self._sandboxes.values():
            sandbox.close()
        self._sandboxes = {}

    def _close_episode(self, *, remove_workspace: bool) -> None:
        self._close_sandboxes()
        if remove_workspace and self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def workspace(self) -> Path | None:
        """The current episode's workspace directory on the host (None before reset / after close)."""
        return self._workspace


def render_messages(messages: Sequence[Mapping[str, str]]) -> str:
    """The text view of chat messages: each message under a ``### role`` header, ending with the cue for the reply."""
    body = "\n\n".join(f"### {m['role']}\n{m['content']}" for m in messages)
    return f"{body}\n\n### assistant\n"


def render_transcript(env: PipelineEnv) -> str:
    """A readable transcript of the episode so far: every action, its status, output and verdict."""
    lines = [f"=== {env.env_id} · task {env.task.id} ==="]
    for agent in env.possible_agents:
        for step in env._steps.get(agent, []):
            verdict = step["verdict"]
            score = "unscored" if verdict["score"] is None else f"{verdict['score']:.1f}/10"
            lines.append(f"--- {agent} · action {step['action_index'] + 1} · {step['status']} · coach {score}: {verdict['rationale']}")
            if step["code"]:
                lines.append(truncate_middle(step["code"], 1500))
            for stream in ("stdout", "stderr"):
                if step[stream]:
                    lines.append(f"[{stream}] {truncate_middle(step[stream], 600)}")
    if env._outcome is not None:
        lines.append(f"=== outcome: {'valid' if env._outcome.get('valid') else 'invalid'} · {env._outcome.get('reason', '')} · {env._outcome.get('metrics', {})}")
    return "\n".join(lines)


def _observation_space(text_space: UnicodeText):
    from gymnasium.spaces import Dict

    return Dict({"text": text_space})


def _sizes_to_snapshot(sizes: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    return {p: (s, 0) for p, s in sizes.items()}


def check_engine_kwargs(env_id: str, kwargs: Mapping[str, Any], own: Sequence[str] = ()) -> None:
    """Raise ValueError for a keyword argument neither the engine nor the team (``own``) accepts."""
    import inspect

    from mappa_env.arguments import reject_unknown as reject_unknown_kwargs

    engine = [p for p in inspect.signature(PipelineEnv.__init__).parameters if p != "self"]
    reject_unknown_kwargs(env_id, kwargs, [*own, *engine])


def _check_sandbox_kwargs(kwargs: Mapping[str, Any], backend: str = "local") -> None:
    """Reject sandbox options the named backend does not take, and a ``docker`` backend that cannot run
    here, at construction rather than at reset."""
    import inspect

    from mappa_env.arguments import reject_unknown as reject_unknown_kwargs
    from mappa_env.sandbox import LocalSandbox

    if "timeout_s" in kwargs:
        raise ValueError("sandbox_kwargs: set the per-execution limit with the environment's exec_timeout_s, not timeout_s")
    backend_class: Any = LocalSandbox
    if backend == "docker":
        from mappa_env.sandbox import docker_backend

        backend_class = docker_backend.DockerSandbox
    accepted = [p for p in inspect.signature(backend_class.__init__).parameters if p not in ("self", "workspace", "timeout_s")]
    reject_unknown_kwargs(f"sandbox_kwargs (sandbox={backend!r})", kwargs, accepted)
    if backend == "docker":  # no SDK, engine or image: fail now, with the fix (as require_bwrap does for local)
        docker_backend.require_docker(kwargs.get("image", docker_backend.DEFAULT_IMAGE), kwargs.get("client"))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
