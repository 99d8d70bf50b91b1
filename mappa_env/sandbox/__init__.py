"""Sandboxes that run agent code: the :class:`Sandbox` interface and the ``local`` backend.

    from mappa_env.sandbox import make_sandbox
    with make_sandbox("local", workspace) as sb:      # bubblewrap + persistent worker
        result = sb.run("import pandas as pd; print(pd.__version__)")

Backends by name: ``"local"`` (bubblewrap-isolated :class:`LocalSandbox`, the default), ``"docker"``
(the same worker in a container per sandbox, :class:`~mappa_env.sandbox.docker_backend.DockerSandbox`)
and ``"unisolated"`` (the same worker as a plain subprocess; only for trusted code). Any callable
``(workspace, **kwargs) -> Sandbox`` may be passed instead of a name.

Importing this package is light: numpy and pandas are imported only inside sandbox workers, and the
Docker SDK only when a ``"docker"`` sandbox is made or probed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from mappa_env.arguments import accepted_parameters, reject_unknown
from mappa_env.sandbox.base import (
    DEFAULT_EXEC_TIMEOUT_S, ExecResult, ExecStatus, Sandbox, SandboxError, SandboxUnavailableError, check_timeout,
)
from mappa_env.sandbox.bwrap import bwrap_available, require_bwrap
from mappa_env.sandbox.local import LocalSandbox

__all__ = ["BACKENDS", "DEFAULT_EXEC_TIMEOUT_S", "DockerSandbox", "ExecResult", "ExecStatus", "LocalSandbox", "Sandbox", "SandboxError",
           "SandboxUnavailableError", "bwrap_available", "check_sandbox", "check_timeout", "docker_available",
           "make_sandbox"]

BACKENDS = ("local", "unisolated", "docker")


def __getattr__(name: str) -> Any:
    # The docker backend is imported on first use (it never imports the SDK at import time either).
    if name in ("DockerSandbox", "docker_available"):
        from mappa_env.sandbox import docker_backend

        return getattr(docker_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_sandbox(backend: str | Callable[..., Sandbox], kwargs: Mapping[str, Any]) -> None:
    """Check a backend and its options now, before any episode, with the fix in the message.

    Names the closest option for a typo (each backend's options are its constructor's), refuses
    ``timeout_s`` (the per-execution limit is the environment's ``exec_timeout_s``), and probes the
    backend: bubblewrap for ``"local"``; the Docker SDK, engine and image for ``"docker"``. A factory
    is the caller's own: only its being callable is checked.

    Raises:
        ValueError: unknown backend or option.
        SandboxUnavailableError: the backend cannot run here.
    """
    if callable(backend):
        return
    if backend not in BACKENDS:
        raise ValueError(f"sandbox must be a backend name ({', '.join(BACKENDS)}) or a factory "
                         f"(workspace, **kwargs) -> Sandbox, got {backend!r}")
    if "timeout_s" in kwargs:
        raise ValueError("sandbox_kwargs: set the per-execution limit with the environment's exec_timeout_s, not timeout_s")
    reject_unknown(f"sandbox_kwargs (sandbox={backend!r})", kwargs, _options(backend))
    if backend == "local":
        require_bwrap()
    elif backend == "docker":
        from mappa_env.sandbox import docker_backend

        docker_backend.require_docker(kwargs.get("image", docker_backend.DEFAULT_IMAGE), kwargs.get("client"))


def make_sandbox(name_or_factory: str | Callable[..., Sandbox], workspace: str | os.PathLike[str], *,
                 timeout_s: float = DEFAULT_EXEC_TIMEOUT_S, hidden_paths: tuple[str, ...] = (),
                 **kwargs: Any) -> Sandbox:
    """Create a sandbox for ``workspace`` by backend name or from a factory.

    Args:
        name_or_factory: ``"local"`` (bubblewrap, default), ``"docker"`` (a container per sandbox),
            ``"unisolated"`` (no isolation, warns), or a callable ``(workspace, **kwargs) -> Sandbox``.
        workspace: the directory the code works in.
        timeout_s: wall-clock limit of each execution.
        hidden_paths: host paths the code must not see although they lie in what the backend shows of
            the host (the ``local`` backends bind the interpreter's directories; a container shows only
            the workspace, so ``docker`` and factories need none).
        **kwargs: the backend's options (``memory_mb``, ...; ``DockerSandbox`` also takes ``image``,
            ``cpus`` and ``client``).

    Raises:
        ValueError: unknown backend name.
        SandboxUnavailableError: the backend cannot run here (no bubblewrap for ``"local"``; no Docker
            SDK, engine or image for ``"docker"``); the message says the fix.
    """
    if callable(name_or_factory):
        return name_or_factory(workspace, timeout_s=timeout_s, **kwargs)
    if name_or_factory in ("local", "unisolated"):
        if name_or_factory == "unisolated":
            kwargs.setdefault("isolate", False)
        return LocalSandbox(workspace, timeout_s=timeout_s, hidden_paths=hidden_paths, **kwargs)
    if name_or_factory == "docker":
        from mappa_env.sandbox.docker_backend import DockerSandbox

        return DockerSandbox(workspace, timeout_s=timeout_s, **kwargs)
    raise ValueError(f"unknown sandbox backend {name_or_factory!r}; valid names: {', '.join(BACKENDS)}, "
                     "or pass a callable (workspace, **kwargs) -> Sandbox")


def _options(backend: str) -> list[str]:
    """The options a named backend takes in ``sandbox_kwargs``: its constructor's, but the ones the
    environment sets itself."""
    if backend == "docker":
        from mappa_env.sandbox.docker_backend import DockerSandbox as backend_class
    else:
        backend_class = LocalSandbox
    return accepted_parameters(backend_class.__init__, exclude=("self", "workspace", "timeout_s"))
