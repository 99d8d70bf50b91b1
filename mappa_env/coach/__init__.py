"""Coaches: per-action process rewards.

``make_coach(spec, **coach_kwargs)`` turns the ``coach`` argument every environment accepts into a
:class:`Coach`:

* ``"receipts"``: the deterministic rule-based coach (offline, no model; ``timing`` in ``coach_kwargs``);
* ``"openai:<model>"``: :class:`OpenAICoach` against any OpenAI-compatible endpoint (``base_url``,
  ``api_key``, ``max_retries``, ``timeout_s``, ``max_in_flight``, ``cache_dir``, ``timing``, ... in
  ``coach_kwargs``, or the ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` variables);
* ``"auto"``: ``OpenAICoach`` when an endpoint and a model are configured (``coach_kwargs`` ``base_url``
  and ``model``, or ``OPENAI_BASE_URL`` and ``MAPPA_COACH_MODEL``), else ``receipts``; it logs which;
* ``"hf:<path-or-id>"``: :class:`HFCoach`, a local transformers chat model (a directory, a hub id in the
  local cache, or a ``.gguf`` file), batched; needs torch and transformers;
* a :class:`Coach` instance, used as is.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mappa_env.arguments import accepted_parameters, reject_unknown
from mappa_env.coach.base import Coach, CoachRequest, RoleInfo, SyncCoach, Verdict, close_coach
from mappa_env.coach.receipts import ReceiptsCoach, quality_cap

__all__ = [
    "COACH_NAMES", "Coach", "CoachRequest", "HFCoach", "OpenAICoach", "ReceiptsCoach", "RoleInfo", "SyncCoach", "Verdict",
    "close_coach", "make_coach", "quality_cap",
]

logger = logging.getLogger(__name__)
COACH_NAMES = ("receipts", "auto", "openai:<model>", "hf:<path-or-id>")


def make_coach(spec: str | Coach, **kwargs: Any) -> Coach:
    """Build a coach from its name, or return ``spec`` unchanged when it already is a coach."""
    if not isinstance(spec, str):
        if isinstance(spec, Coach):
            if kwargs:
                raise ValueError("coach_kwargs only apply when coach is given by name, not as an instance")
            return spec
        missing = [m for m in ("name", "timing", "score", "ascore") if not hasattr(spec, m)]
        raise ValueError(f"coach must be a name ({', '.join(COACH_NAMES)}) or a Coach instance (name, timing, score, "
                         f"ascore; SyncCoach gives the last two), got {spec!r}, which lacks {', '.join(missing)}")
    if spec == "receipts":
        reject_unknown(f"coach {spec!r} (coach_kwargs)", kwargs, accepted_parameters(ReceiptsCoach))
        return ReceiptsCoach(**kwargs)
    if spec == "auto":
        return _auto(kwargs)
    if spec.startswith("openai:") and len(spec) > len("openai:"):
        from mappa_env.coach.openai_coach import OpenAICoach

        return _construct(OpenAICoach, spec, kwargs)
    if spec.startswith("hf:") and len(spec) > len("hf:"):
        from mappa_env.coach.hf_coach import HFCoach

        return _construct(HFCoach, spec, kwargs)
    raise ValueError(f"unknown coach {spec!r}; valid names: {', '.join(COACH_NAMES)}, or a Coach instance")


def _auto(kwargs: dict[str, Any]) -> Coach:
    kwargs = dict(kwargs)
    model = kwargs.pop("model", None) or os.environ.get("MAPPA_COACH_MODEL")
    base_url = kwargs.get("base_url") or os.environ.get("OPENAI_BASE_URL")
    if model and (base_url or os.environ.get("OPENAI_API_KEY")):
        from mappa_env.coach.openai_coach import OpenAICoach

        coach = _construct(OpenAICoach, f"openai:{model}", kwargs)
        logger.warning("coach='auto' picked %s at %s", coach.name, coach.base_url or "OpenAI")
        return coach
    logger.warning(
        "coach='auto' picked the 'receipts' coach: no LLM endpoint configured "
        "(set OPENAI_BASE_URL or OPENAI_API_KEY, and MAPPA_COACH_MODEL, to use an LLM coach)"
    )
    return ReceiptsCoach()


def _construct(cls: type, spec: str, kwargs: dict[str, Any]) -> Coach:
    """``cls(<name after the prefix>, **kwargs)``, refusing unknown options with the list of valid ones."""
    from mappa_env.coach.llm import SHARED_OPTIONS

    if "max_output_chars" in kwargs:
        raise ValueError("coach_kwargs['max_output_chars']: tool output is cut once, by the environment's max_output_chars "
                         "(the coach shows it as kept there); set that instead")
    own = accepted_parameters(cls, exclude=("self", "model", "path"))
    reject_unknown(f"coach {spec!r} (coach_kwargs)", kwargs, [*own, *SHARED_OPTIONS])
    return cls(spec.split(":", 1)[1], **kwargs)


def __getattr__(name: str) -> Any:  # the LLM coaches import openai / torch: load them only when asked for
    if name == "OpenAICoach":
        from mappa_env.coach.openai_coach import OpenAICoach

        return OpenAICoach
    if name == "HFCoach":
        from mappa_env.coach.hf_coach import HFCoach

        return HFCoach
    raise AttributeError(name)
