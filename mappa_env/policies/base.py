"""The policy interface used by evaluation: a team of agents, one reply per call."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Policy(Protocol):
    """Acts for every agent of a team.

    ``act`` receives the acting agent's id, its observation (``{"text": ...}``) and its info (with
    ``"messages"``, the same prompt as chat messages) and returns the agent's full reply text.
    """

    name: str

    def act(self, agent: str, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str: ...


def num_previous_actions(info: Mapping[str, Any]) -> int:
    """How many times the agent has acted in this episode, read from its chat messages."""
    return sum(1 for m in info.get("messages", ()) if m["role"] == "assistant")


def last_tool_output(info: Mapping[str, Any]) -> str:
    """The content of the last user message (the tool output of the previous action)."""
    messages = info.get("messages", ())
    return messages[-1]["content"] if messages else ""


class ScriptedTeamBase:
    """A deterministic team for any pipeline: each agent's first action is code from a template
    (:meth:`code_for`), its second a code-less summary naming the files its role must produce.

    Args:
        roles: the team's roles (objects with ``name`` and ``produces``, as
            :class:`mappa_env.envs.pipeline.Role`), in pipeline order.
        name: the policy's name in results.
        fault: a team-specific fault to plant (see the subclass); ``"silent"``: no agent writes code.
    """

    def __init__(self, roles: Sequence[Any], name: str, *, fault: str | None = None):
        self.roles = {role.name: role for role in roles}
        self.name = name
        self.fault = fault

    def act(self, agent: str, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        if agent not in self.roles:
            raise ValueError(f"{self.name}: the team has no role {agent!r}; its roles are {', '.join(self.roles)}")
        if self.fault == "silent":
            return "I have nothing to add."
        if num_previous_actions(info) > 0:
            return self.closing_message(agent, info)
        return f"Here is my code.\n\n```python\n{self.code_for(agent, observation['text'])}```"

    def closing_message(self, agent: str, info: Mapping[str, Any]) -> str:
        """The code-less summary that ends a stage: which of the role's files are saved, truthfully (read from
        the workspace listing of the last tool output), and which are not."""
        listing = last_tool_output(info).rpartition("## Workspace")[2]
        present = set(re.findall(r"^- (\S+) \(", listing, re.M))
        produces = self.roles[agent].produces
        saved = [f for f in produces if f in present]
        missing = [f for f in produces if f not in present]
        if not missing:
            return f"Done. I saved {', '.join(saved)} in the workspace for the next agent."
        done = f"Done. I saved {', '.join(saved)}. " if saved else ""
        return f"{done}I could not save {', '.join(missing)}: my code did not produce it."

    def code_for(self, agent: str, text: str) -> str:
        """The Python of ``agent``'s first action, given the prompt it sees."""
        raise NotImplementedError
