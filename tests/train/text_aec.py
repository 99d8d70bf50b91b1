"""What the trainer's test environments share: an AEC env whose agents see and answer plain text."""

from __future__ import annotations

from collections.abc import Sequence

from gymnasium import spaces
from pettingzoo import AECEnv

from mappa_env.records import StepRecord, Verdict


class TextAECEnv(AECEnv):
    """Agents observe ``{"text": str}`` and act with a ``str``; subclasses write the game."""

    def __init__(self, agents: Sequence[str]):
        super().__init__()
        self.possible_agents = list(agents)
        text = spaces.Text(max_length=10_000, charset=[chr(i) for i in range(32, 127)] + ["\n"], min_length=0)
        self.observation_spaces = {a: spaces.Dict({"text": text}) for a in self.possible_agents}
        self.action_spaces = {a: text for a in self.possible_agents}

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def _start_episode(self) -> None:
        """Every agent in, the first to act, no rewards yet, nobody done."""
        self.agents = list(self.possible_agents)
        self.agent_selection = self.agents[0]
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}

    def step(self, action):
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._act(agent, action)

    def _act(self, agent: str, action: str) -> None:
        """A live agent's action: the game's own rules."""
        raise NotImplementedError

    def _record(self, agent: str, action: str, score: float | None, why: str) -> None:
        """Keep the action's step record (``self._steps[agent]``), as mappa_env's engine writes them."""
        verdict = Verdict(score, why, self.metadata["name"])
        record = StepRecord(agent=agent, action_index=len(self._steps[agent]), action=action, stdout=action, verdict=verdict)
        self._steps[agent].append(record.to_info())
