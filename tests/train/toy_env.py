"""A toy text environment for the trainer's tests: two agents, one action each, rewarded for writing digits.

It speaks only the interface the trainer relies on (PettingZoo AEC, ``infos[agent]["messages"]``, and at
termination ``step_rewards``, ``steps`` and ``outcome``; ``unwrapped.tasks`` and ``unwrapped.task``), so a
run on it shows the trainer is not tied to dsbench-v0. Each action's reward is the share of its
characters that are digits: a character-level model starts near 10/100 and can learn to raise it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from text_aec import TextAECEnv

import mappa_env

ENV_ID = "toy-digits-v0"


@dataclass(frozen=True)
class ToyTask:
    id: str
    task_type: str


TASKS = [ToyTask("toy/count", "counting"), ToyTask("toy/phone", "phone"), ToyTask("toy/year", "year"),
         ToyTask("toy/price", "price")]


def digit_share(text: str) -> float:
    return sum(c.isdigit() for c in text) / len(text) if text else 0.0


class ToyDigitsEnv(TextAECEnv):
    metadata = {"name": ENV_ID, "is_parallelizable": False}

    def __init__(self, split: str = "train", coach: Any = None, reward_mode: str = "process",
                 sandbox: str = "local", exec_timeout_s: float = 60.0):
        super().__init__(["writer", "checker"])
        self.tasks = list(TASKS)
        self.task = self.tasks[0]

    def reset(self, seed=None, options=None):
        task_id = (options or {}).get("task_id")
        self.task = next((t for t in self.tasks if t.id == task_id), self.tasks[0])
        self._start_episode()
        prompt = f"Task {self.task.id}: write only digits."
        self.infos = {a: {"messages": [{"role": "user", "content": prompt}]} for a in self.agents}
        self._steps = {a: [] for a in self.agents}

    def observe(self, agent):
        return {"text": self.infos[agent]["messages"][-1]["content"]}

    def _act(self, agent, action):
        reward = digit_share(action)
        self._record(agent, action, 10 * reward, "digit share")
        self.rewards = {a: 0.0 for a in self.agents}
        self.rewards[agent] = reward
        self._cumulative_rewards[agent] = 0.0
        self._accumulate_rewards()
        index = self.agents.index(agent)
        if index + 1 < len(self.agents):
            self.agent_selection = self.agents[index + 1]
            return
        mean = sum(s["verdict"]["score"] for steps in self._steps.values() for s in steps) / 20
        outcome = {"valid": mean > 0.5, "reason": f"mean digit share {mean:.2f}", "metrics": {},
                   "task_id": self.task.id, "task_type": self.task.task_type}
        for a in self.agents:
            self.terminations[a] = True
            self.infos[a] = {**self.infos[a], "steps": self._steps[a],
                             "step_rewards": [s["verdict"]["score"] / 10 for s in self._steps[a]], "outcome": outcome}
        self.agent_selection = self.agents[0]


def register() -> None:
    mappa_env.register(ENV_ID, ToyDigitsEnv, description="test-only toy: write digits", override=True)
