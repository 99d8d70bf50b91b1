"""Coaches: per-action process rewards.

``make_coach(spec, **kwargs)`` turns the ``coach`` argument every environment accepts into a
:class:`Coach`: a name (``"receipts"``, ``"auto"``) or an instance. LLM coaches (``openai:<model>``,
``hf:<path-or-id>``) are the subject of a later release; asking for one now raises a clear error.
"""

from __future__ import annotations

import logging
from typing import Any

from mappa_env.coach.base import Coach, CoachRequest, RoleInfo, SyncCoach, Verdict
from mappa_env.coach.receipts import ReceiptsCoach, quality_cap

__all__ = ["Coach", "CoachRequest", "ReceiptsCoach", "RoleInfo", "SyncCoach", "Verdict", "make_coach", "quality_cap"]

logger = logging.getLogger(__name__)
COACH_NAMES = ("receipts", "auto", "openai:<model>", "hf:<path-or-id>")


def make_coach(spec: str | Coach, **kwargs: Any) -> Coach:
    """Build a coach from its name, or return ``spec`` unchanged when it already is a coach."""
    if not isinstance(spec, str):
        if isinstance(spec, Coach):
            if kwargs:
                raise ValueError("coach_kwargs only apply when coach is given by name, not as an instance")
            return spec
        raise ValueError(f"coach must be a name ({', '.join(COACH_NAMES)}) or a Coach instance, got {spec!r}")
    if spec == "receipts":
        _reject_kwargs(spec, kwargs)
        return ReceiptsCoach()
    if spec == "auto":
        _reject_kwargs(spec, kwargs)
        logger.info("coach='auto': no LLM coach is available in this release; using the 'receipts' coach")
        return ReceiptsCoach()
    if spec.startswith(("openai:", "hf:")):
        raise ValueError(
            f"coach {spec!r}: LLM coaches are not part of this release yet; use coach='receipts' "
            "or pass your own Coach instance (see mappa_env.coach.Coach)"
        )
    raise ValueError(f"unknown coach {spec!r}; valid names: {', '.join(COACH_NAMES)}, or a Coach instance")


def _reject_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise ValueError(f"coach {name!r} takes no options, got coach_kwargs {sorted(kwargs)}")
