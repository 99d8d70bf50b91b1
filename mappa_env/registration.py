"""Environment ids → factories, Gymnasium style.

A registered :class:`EnvSpec` names its factory as a ``"module:attr"`` string that is imported only when
the environment is made, so ``import mappa_env`` stays light. :func:`make` overlays the caller's keyword
arguments on the registered defaults. Ids are versioned ``name-vN``; the version is bumped whenever rewards,
observations or turn rules change.

Every id is also registered in PettingZoo's own registry as ``mappa/<id>``, so
``pettingzoo.make("aec", "mappa/dsbench-v0")`` works too.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mappa_env.arguments import accepted_parameters, did_you_mean, reject_unknown
from mappa_env.error import RegistrationError, UnregisteredEnv

_ID_RE = re.compile(r"^[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*-v\d+$")
PETTINGZOO_NAMESPACE = "mappa"


@dataclass(frozen=True)
class EnvSpec:
    """A registered environment.

    Attributes:
        id: versioned id such as ``"dsbench-v0"``.
        entry_point: ``"module:attr"`` of a factory returning a PettingZoo ``AECEnv``, or the factory.
        kwargs: default keyword arguments, overridden by those given to :func:`make`.
        description: one line shown by ``python -m mappa_env list``.
    """

    id: str
    entry_point: str | Callable[..., Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def load(self) -> Callable[..., Any]:
        """Import and return the factory."""
        if callable(self.entry_point):
            return self.entry_point
        module_name, _, attr = self.entry_point.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def make(self, **kwargs: Any) -> Any:
        """Create the environment with the registered defaults overlaid by ``kwargs``."""
        factory = self.load()
        merged = {**self.kwargs, **kwargs}
        _check_kwargs(self.id, factory, merged)
        return factory(**merged)


_registry: dict[str, EnvSpec] = {}
#: Read-only view of every registered :class:`EnvSpec`, by id.
registry: Mapping[str, EnvSpec] = MappingProxyType(_registry)


def register(
    id: str,
    entry_point: str | Callable[..., Any],
    *,
    kwargs: Mapping[str, Any] | None = None,
    description: str = "",
    override: bool = False,
) -> EnvSpec:
    """Register an environment factory under a versioned id (``name-vN``).

    Raises:
        RegistrationError: malformed id, or an id registered already (pass ``override=True`` to replace it).
    """
    if not _ID_RE.match(id):
        raise RegistrationError(
            f"environment id {id!r} is malformed: use lowercase 'name-vN', for example 'mytask-v0'"
        )
    if id in _registry and not override:
        raise RegistrationError(f"environment id {id!r} is already registered; pass override=True to replace it")
    spec = EnvSpec(id=id, entry_point=entry_point, kwargs=dict(kwargs or {}), description=description)
    _registry[id] = spec
    _register_with_pettingzoo(spec)
    return spec


def spec(env_id: str) -> EnvSpec:
    """Return the :class:`EnvSpec` of ``env_id``; unknown ids raise :class:`UnregisteredEnv` naming close ids."""
    env_id = env_id.removeprefix(PETTINGZOO_NAMESPACE + "/")
    try:
        return _registry[env_id]
    except KeyError:
        hint = did_you_mean(env_id, _registry, n=3, cutoff=0.4)
        raise UnregisteredEnv(
            f"no environment registered as {env_id!r}.{hint} Registered ids: {', '.join(sorted(_registry))}."
        ) from None


def make(env_id: str, **kwargs: Any) -> Any:
    """Create a registered environment: ``mappa_env.make("dsbench-v0", split="heldout")``.

    Keyword arguments override the registered defaults. Unknown arguments raise :class:`ValueError`
    naming the accepted ones; bad values raise :class:`ValueError` from the environment itself.
    """
    return spec(env_id).make(**kwargs)


def _check_kwargs(env_id: str, factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    """Reject keyword arguments the factory does not accept, before any heavy work."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins or C callables: let the call itself complain
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the factory validates its own **kwargs (see PipelineEnv's check_engine_kwargs)
    reject_unknown(env_id, kwargs, accepted_parameters(factory, exclude=()))


def _register_with_pettingzoo(spec: EnvSpec) -> None:
    import pettingzoo

    pz_id = f"{PETTINGZOO_NAMESPACE}/{spec.id}"
    if pz_id in pettingzoo.aec_registry:  # our own re-registration with override=True
        del pettingzoo.aec_registry[pz_id]
    pettingzoo.register("aec", pz_id, entry_point=spec.entry_point, kwargs=dict(spec.kwargs))
