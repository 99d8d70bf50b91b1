"""Checking names against the valid ones, with a "did you mean" for typos: one rule for the whole toolkit.

Environments, sandboxes, coaches, task suites and the trainer's configuration all refuse an unknown
name (a keyword argument, an environment id, a task id, a config field) the same way: the message names
the closest valid one and lists them all, so a typo is fixed from the message alone.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

__all__ = ["accepted_parameters", "did_you_mean", "reject_unknown"]


def did_you_mean(name: str, valid: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """``" Did you mean 'x'?"`` (or ``'x', 'y'`` for ``n > 1``) for the closest valid names, else ``""``."""
    close = difflib.get_close_matches(str(name), list(valid), n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""


def accepted_parameters(function: Callable[..., Any], *, exclude: Collection[str] = ("self",)) -> list[str]:
    """The names ``function`` accepts as keyword arguments, in signature order (``*args``/``**kwargs`` left out)."""
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        name for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind in keyword_kinds and name not in exclude
    ]


def reject_unknown(what: str, kwargs: Mapping[str, Any], accepted: Collection[str]) -> None:
    """Raise ``ValueError`` for the first keyword of ``kwargs`` not in ``accepted``, naming the closest one.

    ``what`` names the receiver as the user knows it (``"dsbench-v0"``, ``"sandbox_kwargs (sandbox='docker')"``).
    """
    for name in kwargs:
        if name not in accepted:
            raise ValueError(
                f"{what} has no argument {name!r}.{did_you_mean(name, accepted)} "
                f"Accepted arguments: {', '.join(accepted)}."
            )
