"""Reference and model-backed teams for evaluation: ``make_policy("scripted")``, ``make_policy("openai:gpt-4.1-mini")``."""

from __future__ import annotations

from typing import Any

from mappa_env.policies.base import Policy
from mappa_env.policies.chat import HFChatTeam, OpenAIChatTeam, PolicyError
from mappa_env.policies.math_scripted import MATH_FAULTS, MathScriptedTeam
from mappa_env.policies.scripted import FAULTS, ScriptedTeam

__all__ = ["POLICY_NAMES", "HFChatTeam", "MathScriptedTeam", "OpenAIChatTeam", "Policy", "PolicyError", "ScriptedTeam",
           "bind_to", "make_policy"]

POLICY_NAMES = ("scripted", *FAULTS, *MATH_FAULTS, "openai:<model>", "hf:<path-or-id>")


def make_policy(name: str | Policy, *, env_id: str = "dsbench-v0", **kwargs: Any) -> Policy:
    """Build a team policy by name; a :class:`Policy` instance is returned unchanged.

    ``"scripted"`` is the reference team of ``env_id``'s team (``mathchat-v0``'s must then be bound to
    the environment: :func:`bind_to`, which :func:`mappa_env.evaluation.evaluate` does).
    """
    if not isinstance(name, str):
        return name
    if kwargs and (name == "scripted" or name in FAULTS or name in MATH_FAULTS):
        raise ValueError(f"policy {name!r} takes no options, got {sorted(kwargs)}; options are for openai:/hf: teams")
    if name == "scripted":
        return MathScriptedTeam() if env_id == "mathchat-v0" else ScriptedTeam()
    if name in FAULTS:
        return ScriptedTeam(name, fault=FAULTS[name])
    if name in MATH_FAULTS:
        return MathScriptedTeam(name=name, fault=MATH_FAULTS[name])
    if name.startswith("openai:") and len(name) > len("openai:"):
        return OpenAIChatTeam(name.split(":", 1)[1], **kwargs)
    if name.startswith("hf:") and len(name) > len("hf:"):
        return HFChatTeam(name.split(":", 1)[1], **kwargs)
    raise ValueError(f"unknown policy {name!r}; valid: {', '.join(POLICY_NAMES)}")


def bind_to(team: Policy, env: Any) -> Policy:
    """``team``, ready to play ``env``: a reference team that reads the answers of the environment's tasks
    (one with a ``bind`` method, such as :class:`MathScriptedTeam`) learns them; any other is returned as it is."""
    if callable(getattr(team, "bind", None)):
        team.bind(env)
    return team
