"""The policy interface used by evaluation: a team of agents, one reply per call."""

from __future__ import annotations

from collections.abc import Mapping
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
