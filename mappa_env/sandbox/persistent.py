"""What every backend that runs the persistent worker shares: one worker at a time, restarted when it
dies, serialised calls, closing on exit. A backend only says how to start a worker (:meth:`_start`).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

from mappa_env.sandbox.base import ExecResult, SandboxError, check_timeout
from mappa_env.sandbox.channel import WorkerChannel
from mappa_env.sandbox.quota import Usage

FSIZE_BYTES = 1 << 30  # per-file cap; generous because model files land in the workspace too

_LIVE: weakref.WeakSet[WorkerSandbox] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sandbox in list(_LIVE):
        sandbox.close()


def worker_config(*, memory_mb: int, cpu_limit_s: float, max_output_bytes: int, tag: str,
                  preload: tuple[str, ...] | None, **extra: Any) -> dict[str, Any]:
    """The worker's JSON config (see :mod:`mappa_env.sandbox.worker`); ``extra`` adds backend entries."""
    config = {"memory_bytes": memory_mb << 20, "cpu_s": int(cpu_limit_s), "fsize_bytes": FSIZE_BYTES,
              "max_error_chars": max_output_bytes, "tag": tag, **extra}
    if preload is not None:
        config["preload"] = list(preload)
    return config


class WorkerSandbox:
    """Base of the ``local`` and ``docker`` backends (see :class:`~mappa_env.sandbox.base.Sandbox`).

    Subclasses set their own attributes, then call :meth:`_open`, which starts the first worker without
    waiting for its imports (several sandboxes created together warm up in parallel); the first
    :meth:`run` waits for it (``startup_timeout_s``, not counted in the execution timeout).
    """

    workspace: Path

    def __init__(self, workspace: str | os.PathLike[str], *, persistent: bool, timeout_s: float,
                 max_output_bytes: int, startup_timeout_s: float, memory_mb: int, tmp_mb: int,
                 max_processes: int, disk_mb: int, max_files: int) -> None:
        self.workspace = Path(workspace).resolve()
        if not self.workspace.is_dir():
            raise ValueError(f"workspace {str(workspace)!r} is not an existing directory; create it first")
        if max_output_bytes < 2:
            raise ValueError(f"max_output_bytes must be at least 2, got {max_output_bytes!r}")
        if min(memory_mb, tmp_mb, max_processes, disk_mb, max_files) <= 0:
            raise ValueError("memory_mb, tmp_mb, max_processes, disk_mb and max_files must be positive")
        self.persistent = persistent
        self.timeout_s, self.max_output_bytes = check_timeout(timeout_s, "timeout_s"), max_output_bytes
        self.startup_timeout_s = startup_timeout_s
        self.memory_mb, self.tmp_mb, self.max_processes = memory_mb, tmp_mb, max_processes
        self.quota = Usage(disk_mb << 20, max_files)
        self.tag = f"mappa-sandbox-{uuid.uuid4().hex[:12]}"  # in the worker's argv: findable in `ps`
        self._lock = threading.Lock()
        self._closed = False
        self._worker: WorkerChannel | None = None

    def _start(self) -> WorkerChannel:
        """Start a worker (without waiting for it to be ready)."""
        raise NotImplementedError

    def _open(self) -> None:
        self._worker = self._start()  # eager: imports run while the caller does other things
        _LIVE.add(self)

    def run(self, code: str, *, timeout_s: float | None = None) -> ExecResult:
        """Execute ``code`` in the worker; failures of the code are data in the result, never raised.

        Raises:
            SandboxError: the sandbox is closed, or its worker cannot start (broken infrastructure).
        """
        timeout = self.timeout_s if timeout_s is None else check_timeout(timeout_s, "timeout_s")
        with self._lock:
            if self._closed:
                raise SandboxError(f"run() on a closed {type(self).__name__}; create a new sandbox")
            restarted = False
            if self._worker is not None and self._worker.ready is not None and self._worker.exited():
                # It died between runs (killed from outside, say): start over.
                self._discard()
                restarted = True
            if self._worker is None:
                self._worker = self._start()
            worker = self._worker
            try:
                worker.wait_ready(self.startup_timeout_s)
            except SandboxError:
                self._discard()  # the next run tries a fresh worker instead of waiting on a dead one
                raise
            result = worker.execute(code, timeout, self.max_output_bytes)
            if worker.dead or not self.persistent:
                self._discard()
                if not self.persistent:
                    self._worker = self._start()  # warm the next fresh worker while the caller thinks
            if restarted and not result.state_lost:
                result = dataclasses.replace(result, state_lost=True)
            return result

    def _discard(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()
            worker.close_fds()

    @property
    def worker_info(self) -> dict | None:
        """The ready message of the current worker (pid inside the sandbox, start-up seconds), if ready."""
        return None if self._worker is None else self._worker.ready

    def close(self) -> None:
        """Kill the worker and every process it started. Idempotent; the sandbox cannot run afterwards."""
        worker = self._worker
        if worker is not None:
            worker.kill()  # outside the lock: also stops a run that another thread is waiting on
        with self._lock:
            self._closed = True
            self._discard()
        _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down modules
            pass
