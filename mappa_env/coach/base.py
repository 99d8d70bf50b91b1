"""The coach seam: what a coach is given (:class:`CoachRequest`) and what it returns (:class:`Verdict`).

A coach judges one action of one agent with the evidence in hand, so that credit goes to the agent that
caused a failure, not to the one that tripped over it. Scores are on a 0–10 scale; the environment maps
them to rewards. A coach that cannot score (an API error, a malformed reply) returns ``score=None`` with
the reason: it never invents a number.

Coaches follow the contract of TRL's reward functions: plain records in, a score (or ``None``) out, a
``name`` for logging, and an async variant so many episodes can be coached concurrently. The records
themselves live in :mod:`mappa_env.records`; they are re-exported here because coaches are written
against them.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol, runtime_checkable

from mappa_env.records import CoachRequest, RoleInfo, StepRecord, Verdict

__all__ = ["Coach", "CoachRequest", "RoleInfo", "StepRecord", "SyncCoach", "Timing", "Verdict", "close_coach"]

Timing = Literal["online", "hindsight"]


@runtime_checkable
class Coach(Protocol):
    """Scores actions. ``timing`` says when: right after each action, or after the whole episode.

    A coach that holds resources (an HTTP client, a model, threads) also has ``close()``, which
    :func:`close_coach` calls: whoever built the coach from a name closes it, and a coach passed in as
    an instance is closed by whoever made it. ``close`` is not required, so a coach written as four
    members still is one.
    """

    name: str
    timing: Timing

    def score(self, request: CoachRequest) -> Verdict: ...

    async def ascore(self, request: CoachRequest) -> Verdict: ...


def close_coach(coach: Coach) -> None:
    """Release what ``coach`` holds, if it has a ``close()``."""
    close = getattr(coach, "close", None)
    if callable(close):
        close()


class SyncCoach:
    """Base for coaches whose scoring is a fast pure function: ``ascore`` runs ``score`` in a thread."""

    name = "coach"
    timing: Timing = "online"

    def score(self, request: CoachRequest) -> Verdict:
        raise NotImplementedError

    async def ascore(self, request: CoachRequest) -> Verdict:
        return await asyncio.to_thread(self.score, request)

    def close(self) -> None:
        """Nothing to release."""
