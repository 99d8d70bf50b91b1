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
from collections.abc import Callable
from typing import Any

from mappa_env.sandbox.base import ExecResult, ExecStatus, Sandbox, SandboxError, SandboxUnavailableError
from mappa_env.sandbox.bwrap import bwrap_available
from mappa_env.sandbox.local import LocalSandbox

__all__ = ["BACKENDS", "DockerSandbox", "ExecResult", "ExecStatus", "LocalSandbox", "Sandbox", "SandboxError",
           "SandboxUnavailableError", "bwrap_available", "docker_available", "make_sandbox"]

BACKENDS = ("local", "unisolated", "docker")


def __getattr__(name: str) -> Any:
    # The docker backend is imported on first use (it never imports the SDK at import time either).
    if name in ("DockerSandbox", "docker_available"):
        from mappa_env.sandbox import docker_backend

        return getattr(docker_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_sandbox(name_or_factory: str | Callable[..., Sandbox], workspace: str | os.PathLike[str],
                 **kwargs: Any) -> Sandbox:
    """Create a sandbox for ``workspace`` by backend name or from a factory.

    Args:
        name_or_factory: ``"local"`` (bubblewrap, default), ``"docker"`` (a container per sandbox),
            ``"unisolated"`` (no isolation, warns), or a callable ``(workspace, **kwargs) -> Sandbox``.
        workspace: the directory the code works in.
        **kwargs: passed to the backend (``timeout_s``, ``memory_mb``, ...; ``DockerSandbox`` also takes
            ``image``, ``cpus`` and ``client``).

    Raises:
        ValueError: unknown backend name.
        SandboxUnavailableError: the backend cannot run here (no bubblewrap for ``"local"``; no Docker
            SDK, engine or image for ``"docker"``); the message says the fix.
    """
    if callable(name_or_factory):
        return name_or_factory(workspace, **kwargs)
    if name_or_factory == "local":
        return LocalSandbox(workspace, **kwargs)
    if name_or_factory == "docker":
        from mappa_env.sandbox.docker_backend import DockerSandbox

        return DockerSandbox(workspace, **kwargs)
    if name_or_factory == "unisolated":
        kwargs.setdefault("isolate", False)
        return LocalSandbox(workspace, **kwargs)
    raise ValueError(f"unknown sandbox backend {name_or_factory!r}; valid names: {', '.join(BACKENDS)}, "
                     "or pass a callable (workspace, **kwargs) -> Sandbox")
