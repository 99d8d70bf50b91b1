"""The `Sandbox` interface and its result record.

A sandbox runs Python code for one agent of one episode, with the episode workspace as working
directory. Failures of the code (exceptions, timeouts, memory blow-ups, garbage) are *data* in the
returned :class:`ExecResult`; a sandbox raises only when the infrastructure itself is broken (for example
bubblewrap cannot start), with a message that says how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from mappa_env.error import Error

ExecStatus = Literal["ok", "error", "timeout", "killed"]

#: Wall-clock seconds one execution may take unless the environment (``exec_timeout_s``) says otherwise.
DEFAULT_EXEC_TIMEOUT_S = 60.0


def check_timeout(value: object, name: str = "exec_timeout_s") -> float:
    """``value`` as a positive number of seconds, or ``ValueError`` naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ExecResult:
    """What one execution produced.

    Attributes:
        status: ``"ok"`` (ran to the end), ``"error"`` (raised an exception or exited non-zero),
            ``"timeout"`` (wall-clock limit hit; the worker was killed) or ``"killed"`` (died from a
            signal, e.g. the memory limit).
        stdout: captured standard output, truncated head+tail to the sandbox's output cap.
        stderr: captured standard error plus the traceback of an uncaught exception, truncated likewise.
        duration_s: wall-clock seconds the execution took, as seen by the host.
        error: ``"ExceptionType: message"`` for an uncaught exception, a short reason for
            timeouts/kills, else ``""``.
        state_lost: True when the persistent worker had to be restarted during or after this run, so
            variables defined by earlier executions are gone.
        output_truncated: True when stdout or stderr was cut to the cap.
    """

    status: ExecStatus
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    error: str = ""
    state_lost: bool = False
    output_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SandboxError(Error, RuntimeError):
    """The sandbox infrastructure is broken (a worker cannot start) or was misused (run after close)."""


class SandboxUnavailableError(SandboxError):
    """The requested sandbox backend cannot run on this machine; the message says how to fix it."""


@runtime_checkable
class Sandbox(Protocol):
    """Runs code for one agent in one workspace. Create one per agent per episode; close it after."""

    workspace: Path

    def run(self, code: str, *, timeout_s: float | None = None) -> ExecResult:
        """Execute ``code`` with the workspace as working directory and return what happened.

        The limit is the ``timeout_s`` the sandbox was made with (environments pass their
        ``exec_timeout_s`` there, once); ``timeout_s`` here overrides it for one call.
        """
        ...

    def close(self) -> None:
        """Kill every process this sandbox started. Idempotent."""
        ...
