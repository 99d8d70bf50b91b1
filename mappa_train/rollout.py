"""Collecting experience: many PettingZoo AEC episodes in flight, generation batched across them.

The environments are driven through the standard AEC API only (``reset``, ``agent_iter``-style
``agent_selection``/``last``/``step``) plus the per-action reward channel environments document:
``infos[agent]["step_rewards"]`` at termination, one reward (or ``None``: not scored) per action of
that agent, and ``infos[agent]["steps"]``, the step records.

Each environment steps in a worker thread (its sandbox and its coach are slow, I/O-bound work), while
the main thread generates. Episodes waiting for an action get them from one :meth:`TeamModel.generate`
call (one batched ``generate`` per parameter group); an episode still stepping gets a grace period of
half a generation call to join that batch, after which generation starts without it and it keeps
stepping meanwhile.

An episode has two sides: :class:`EnvSlot`, the environment's, which takes specs and reply texts and
answers with :class:`Turn` (plain data: the next request, or the final infos and outcome), and the
driver's, which keeps the sampled tokens and pairs them with the rewards at the end. Only plain data
crosses between them, so the environment side can run in another process (``mappa_train.ray_rollout``).

An environment side that lives in another process can lose it (:class:`WorkerLost`). The episode that was
on it is played again from its start on another slot, once; lost a second time (or with no slot left),
it is returned as failed (:attr:`EpisodeResult.lost`, no actions, an invalid outcome with the reason), so
every episode asked for comes back and the losses are counted (:attr:`RolloutTimes.episodes_lost`).
"""

from __future__ import annotations

import concurrent.futures as futures
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mappa_train import seeding
from mappa_train.policy import Generation, TeamModel

FIRST_GRACE_S = 5.0  # how long the first batch of a rollout waits for episodes still resetting
RETRIES_AFTER_LOSS = 1  # times an episode lost with its worker is played again


class WorkerLost(RuntimeError):
    """The process holding an environment side died; the episode in flight on it is gone (not the run)."""


@dataclass
class ActionSample:
    """One action, with everything the update needs and what logging wants.

    ``reward`` is the environment's reward for this action (``None`` when the coach could not score
    it: such actions are left out of the update and counted, never given a made-up number).
    """

    agent: str
    episode: int
    task_id: str
    task_type: str
    action_index: int
    generation: Generation
    reward: float | None = None
    step: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class EpisodeResult:
    """A finished episode: its actions in the order they were taken, and the graded outcome.

    ``lost`` marks an episode whose worker died on every try: it has no actions and a failed outcome
    whose ``reason`` says so.
    """

    episode: int
    task_id: str
    task_type: str
    seed: int
    outcome: Mapping[str, Any]
    samples: list[ActionSample]
    lost: bool = False


@dataclass
class RolloutTimes:
    """Seconds spent per phase (environment time is summed over worker threads)."""

    generation_s: float = 0.0
    environment_s: float = 0.0
    wall_s: float = 0.0
    generate_calls: int = 0
    actions: int = 0
    episodes_retried: int = 0  # played again after their worker died
    episodes_lost: int = 0  # lost on every try: returned as failed


@dataclass
class EpisodeSpec:
    """Which episode to play: a task id and a seed."""

    task_id: str
    seed: int


@dataclass
class Turn:
    """Where an environment stands after a reset or a step, as plain data (it can cross a process boundary).

    ``request`` is ``(agent, messages, reply_prefix)`` while an agent waits for an action, else ``None``;
    ``final`` holds each agent's final info once the episode is over (``step_rewards``, step records
    without their workspaces) and ``outcome`` the graded outcome.
    """

    task_id: str
    task_type: str
    request: tuple[str, list[dict[str, str]], str] | None = None
    final: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    outcome: Mapping[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.request is None


class EnvSlot:
    """The environment's side of an episode: reset, step, and say what the next agent needs, nothing more.

    It keeps no model output but the reply text it steps with, so what it returns is all the driver
    needs to pair actions with rewards; a worker process can hold several of these.
    """

    def __init__(self, env: Any):
        self.env = env
        self.name = type(env.unwrapped).__name__
        self.final: dict[str, Mapping[str, Any]] = {}  # each finished agent's last info, this episode's

    def start(self, spec: EpisodeSpec) -> Turn:
        self.final = {}  # nothing of the slot's previous episode carries over
        self.env.reset(seed=spec.seed, options={"task_id": spec.task_id})
        return self._advance()

    def step(self, reply: str) -> Turn:
        """Step the waiting agent with ``reply`` (its prefix already included)."""
        self.env.step(reply)
        return self._advance()

    def _advance(self) -> Turn:
        """Step past finished agents until an agent needs an action or the episode is over."""
        from mappa_env.evaluation import episode_outcome

        env, task = self.env, self.env.unwrapped.task
        while env.agents:
            agent = env.agent_selection
            _, _, termination, truncation, info = env.last()
            if termination or truncation:
                self.final[agent] = info
                env.step(None)
                continue
            return Turn(task.id, task.task_type, request=(agent, list(info["messages"]), info.get("reply_prefix") or ""))
        final = {agent: {**info, "steps": [{k: v for k, v in step.items() if k != "workspace"}
                                           for step in info.get("steps", [])]}
                 for agent, info in self.final.items()}
        return Turn(task.id, task.task_type, final=final, outcome=episode_outcome(self.final, task))


class _Episode:
    """The driver's side of one episode: the actions taken (with their tokens) and the turn it is at."""

    def __init__(self, slot: EnvSlot, number: int, spec: EpisodeSpec):
        self.slot, self.number, self.spec = slot, number, spec
        self.samples: list[ActionSample] = []
        self.turn: Turn | None = None

    @property
    def request(self) -> tuple[str, list[dict[str, str]], str] | None:
        return None if self.turn is None else self.turn.request

    def start(self) -> _Episode:
        self.turn = self.slot.start(self.spec)
        return self

    def act(self, generation: Generation) -> _Episode:
        agent, _, prefix = self.turn.request
        self.samples.append(ActionSample(
            agent=agent, episode=self.number, task_id=self.turn.task_id, task_type=self.turn.task_type,
            action_index=sum(s.agent == agent for s in self.samples), generation=generation,
        ))
        self.turn = self.slot.step(prefix + generation.text)  # the prefix was prefilled: the reply is both
        return self

    @property
    def done(self) -> bool:
        return self.turn is not None and self.turn.done

    def result(self) -> EpisodeResult:
        turn = self.turn
        for agent in {s.agent for s in self.samples}:
            mine = [s for s in self.samples if s.agent == agent]
            info = turn.final.get(agent, {})
            rewards, steps = list(info.get("step_rewards", [])), list(info.get("steps", []))
            if len(rewards) != len(mine) or len(steps) != len(mine):
                raise RuntimeError(
                    f"environment {self.slot.name} reported {len(rewards)} step rewards and "
                    f"{len(steps)} step records for {agent}'s {len(mine)} actions; the per-action reward channel "
                    "(infos[agent]['step_rewards'] at termination) must hold one entry per action"
                )
            for sample, reward, step in zip(mine, rewards, steps):
                sample.reward = None if reward is None else float(reward)
                sample.step = step
        return EpisodeResult(self.number, turn.task_id, turn.task_type, self.spec.seed, turn.outcome, self.samples)


def collect(
    team: TeamModel,
    envs: Sequence[Any],
    episodes: Sequence[EpisodeSpec],
    *,
    temperature: float,
    top_p: float = 1.0,
    seed: int = 0,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    on_generate: Callable[[RolloutTimes], None] | None = None,
) -> tuple[list[EpisodeResult], RolloutTimes]:
    """Play ``episodes`` on ``envs`` (one episode per environment at a time) and return them in order.

    ``envs`` are AEC environments of the same team, or slots holding them elsewhere (an environment side with
    :class:`EnvSlot`'s ``start``/``step``/``name``, e.g. :class:`mappa_train.ray_rollout.RemoteSlot`); their
    number is the number of episodes in flight.
    ``on_episode`` is called (in the main thread) as each episode finishes, e.g. to advance a progress bar,
    and ``on_generate`` after each batched generation call with the running times (actions so far).
    ``seed`` is the root of the generation calls' seeds (the n-th call gets ``derive(seed, GENERATE_CALL, n)``):
    with one environment the actions depend on nothing else; with several, which episodes share a call
    depends on how fast each steps (thread timing), and so do the sampled actions.
    A slot raising :class:`WorkerLost` takes no more episodes in this call; its episode is retried once
    on another slot, then returned as lost (see the module docstring).
    """
    if not envs:
        raise ValueError("collect needs at least one environment")
    times = RolloutTimes()
    started = time.perf_counter()
    queue = list(enumerate(episodes))
    free = [env if _is_slot(env) else EnvSlot(env) for env in envs]
    finished: dict[int, EpisodeResult] = {}
    busy: dict[futures.Future, _Episode] = {}
    ready: list[_Episode] = []
    calls = 0
    tries: dict[int, int] = {}  # retries after a lost worker, per episode number
    lost_to: dict[int, str] = {}  # the last loss of each episode that had one
    task_types: dict[int, str] = {}  # what a lost episode's turns said of its task

    def lose(number: int, spec: EpisodeSpec, reason: str) -> None:
        task_type = task_types.get(number, "unknown")
        outcome = {"valid": False, "reason": f"lost with its worker: {reason}", "metrics": {},
                   "task_id": spec.task_id, "task_type": task_type}
        finished[number] = result = EpisodeResult(number, spec.task_id, task_type, spec.seed, outcome, [], lost=True)
        times.episodes_lost += 1
        if on_episode:
            on_episode(result)

    def timed(function: Callable[[], _Episode]) -> Callable[[], tuple[_Episode, float]]:
        def run() -> tuple[_Episode, float]:
            begin = time.perf_counter()
            episode = function()
            return episode, time.perf_counter() - begin
        return run

    with futures.ThreadPoolExecutor(max_workers=len(envs), thread_name_prefix="env") as pool:
        while queue or busy or ready:
            if queue and not (free or busy or ready):  # every slot lost its worker: nothing can play the rest
                for number, spec in queue:
                    lose(number, spec, lost_to.get(number, "no environment left: every worker of this rollout died"))
                queue = []
                break
            while queue and free:
                number, spec = queue.pop(0)
                episode = _Episode(free.pop(), number, spec)
                busy[pool.submit(timed(episode.start))] = episode
            # gather finished steps; once some episodes wait, give the others a grace period of half a
            # generation call to join the batch, then generate while the slow ones keep stepping (before the
            # first call, FIRST_GRACE_S: episodes starting together should make the first batch together)
            while busy:
                grace = 0.5 * times.generation_s / times.generate_calls if times.generate_calls else FIRST_GRACE_S
                done, _ = futures.wait(list(busy), timeout=grace if ready else None, return_when=futures.FIRST_COMPLETED)
                if not done:
                    break
                for future in done:
                    episode = busy.pop(future)
                    try:
                        episode, seconds = future.result()  # an environment that raises is broken infrastructure
                    except WorkerLost as error:  # ... unless its process died: the slot sits out this rollout
                        lost_to[episode.number] = str(error)
                        if episode.turn is not None:
                            task_types[episode.number] = episode.turn.task_type
                        if tries.get(episode.number, 0) < RETRIES_AFTER_LOSS:
                            tries[episode.number] = tries.get(episode.number, 0) + 1
                            queue.insert(0, (episode.number, episode.spec))  # played again from its start
                            times.episodes_retried += 1
                        else:
                            lose(episode.number, episode.spec, str(error))
                        continue
                    times.environment_s += seconds
                    if episode.done:
                        result = episode.result()
                        finished[result.episode] = result
                        free.append(episode.slot)
                        if on_episode:
                            on_episode(result)
                    else:
                        ready.append(episode)
                if queue and free:
                    break  # start the next episodes before generating
            if not ready:
                continue
            requests = [(ep.request[0], team.encode_prompt(ep.request[1], ep.request[2], agent=ep.request[0])) for ep in ready]
            begin = time.perf_counter()
            generations = team.generate(requests, temperature=temperature, top_p=top_p,
                                        seed=seeding.derive(seed, seeding.GENERATE_CALL, calls))
            times.generation_s += time.perf_counter() - begin
            times.generate_calls += 1
            calls += 1
            for episode, generation in zip(ready, generations):
                busy[pool.submit(timed(lambda ep=episode, g=generation: ep.act(g)))] = episode
            times.actions += len(ready)
            ready = []
            if on_generate:
                on_generate(times)
    times.wall_s = time.perf_counter() - started
    return [finished[i] for i in range(len(episodes))], times


def _is_slot(env: Any) -> bool:
    """An environment side already (local or remote), not an AEC environment to wrap: AEC has no ``start``."""
    return isinstance(env, EnvSlot) or (callable(getattr(env, "start", None)) and hasattr(env, "name"))
