"""A scripted AEC environment whose per-action rewards are known in advance, and a team that plays it.

``LedgerEnv`` pays every action exactly the amount its text names (``"pay 0.137"``), leaves an action
unscored (reward ``None``) when its text says ``"unscored"``, and ends an agent's turn when its text
says ``"last"``. Like dsbench-v0, it reports the rewards only at termination, in
``infos[agent]["step_rewards"]`` (one per action of that agent, ``None`` for an unscored one), with the
step records in ``infos[agent]["steps"]`` (each record's ``stdout`` echoes its action), and its
observations name the task, the agent and the action number.

``LedgerTeam`` stands in for :class:`mappa_train.policy.TeamModel` in :func:`mappa_train.rollout.collect`:
it reads the prompt and replies with a distinct amount for every action, so a reward that lands on the
wrong action, or a ``None`` replaced by a number, shows in the samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from text_aec import TextAECEnv

from mappa_train.policy import Generation

ENV_ID = "ledger-v0"
AGENTS = ("scout", "builder", "closer")
PLANS = {  # actions per agent, per task: several actions per agent, and an agent that acts once
    "ledger/a": {"scout": 3, "builder": 2, "closer": 1},
    "ledger/b": {"scout": 1, "builder": 3, "closer": 3},
}
UNSCORED = {("ledger/a", "scout", 1), ("ledger/b", "builder", 0), ("ledger/b", "closer", 1)}


@dataclass(frozen=True)
class LedgerTask:
    id: str
    task_type: str


def amount(task_id: str, agent: str, action_index: int) -> float:
    """The distinct reward ``LedgerTeam`` asks for on this action."""
    return round(0.1 * (1 + sorted(PLANS).index(task_id)) + 0.01 * (1 + AGENTS.index(agent)) + 0.001 * (1 + action_index), 3)


def expected_reward(text: str) -> float | None:
    """What the environment pays for an action with this text (``None``: unscored)."""
    if "unscored" in text:
        return None
    return float(re.search(r"pay (\d+\.\d+)", text).group(1))


class LedgerEnv(TextAECEnv):
    metadata = {"name": ENV_ID, "is_parallelizable": False}

    def __init__(self, split: str = "train", coach: Any = None, reward_mode: str = "process", sandbox: str = "local",
                 exec_timeout_s: float = 60.0):
        super().__init__(AGENTS)
        self.tasks = [LedgerTask("ledger/a", "classification"), LedgerTask("ledger/b", "regression")]
        self.task = self.tasks[0]

    def reset(self, seed=None, options=None):
        task_id = (options or {}).get("task_id")
        self.task = next(t for t in self.tasks if t.id == task_id)
        self._start_episode()
        self._steps = {a: [] for a in self.agents}
        self._rewards = {a: [] for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self._prompt(self.agent_selection)

    def _prompt(self, agent):
        content = f"task={self.task.id} agent={agent} action={len(self._steps[agent])}"
        self.infos[agent] = {"messages": [{"role": "user", "content": content}]}

    def observe(self, agent):
        return {"text": self.infos[agent].get("messages", [{"content": ""}])[-1]["content"]}

    def _act(self, agent, action):
        reward = expected_reward(action)
        self._record(agent, action, None if reward is None else 10 * reward, "ledger")
        self._rewards[agent].append(reward)
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards[agent] = 0.0
        if "last" not in action:
            self._prompt(agent)
            return
        index = self.agents.index(agent)
        if index + 1 < len(self.agents):
            self.agent_selection = self.agents[index + 1]
            self._prompt(self.agent_selection)
            return
        outcome = {"valid": True, "reason": "ok", "metrics": {}, "task_id": self.task.id, "task_type": self.task.task_type}
        for a in self.agents:
            self.terminations[a] = True
            self.infos[a] = {"steps": self._steps[a], "step_rewards": self._rewards[a], "outcome": outcome}
        self.agent_selection = self.agents[0]


class LedgerTeam:
    """Plays ``LedgerEnv``: asks for :func:`amount` on every action, per the task's plan."""

    def __init__(self):
        self.calls: list[int] = []  # batch size of each generate call
        self.temperatures: list[float] = []  # and its sampling temperature

    def encode_prompt(self, messages, reply_prefix="", *, agent=None):
        return [ord(c) for c in messages[-1]["content"]]

    def generate(self, requests, *, temperature, top_p=1.0, seed=None):
        self.calls.append(len(requests))
        self.temperatures.append(temperature)
        out = []
        for agent, prompt_ids in requests:
            fields = dict(part.split("=") for part in "".join(map(chr, prompt_ids)).split())
            task_id, index = fields["task"], int(fields["action"])
            assert fields["agent"] == agent, "the rollout asked for one agent's action with another agent's prompt"
            text = "unscored" if (task_id, agent, index) in UNSCORED else f"pay {amount(task_id, agent, index):.3f}"
            if index + 1 == PLANS[task_id][agent]:
                text += " last"
            text += f" ({agent} #{index} on {task_id})"
            out.append(Generation(agent=agent, prompt_ids=list(prompt_ids), completion_ids=[1 + index] * (index + 1),
                                  sampling_logprobs=[-1.0] * (index + 1), truncated=False, text=text, from_policy=True))
        return out


def register() -> None:
    import mappa_env

    mappa_env.register(ENV_ID, LedgerEnv, description="test-only: pays each action what it asks for", override=True)
