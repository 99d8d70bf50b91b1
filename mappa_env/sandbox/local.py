"""The ``local`` sandbox: a persistent Python worker per agent, isolated with bubblewrap.

Each :class:`LocalSandbox` runs one worker process (:mod:`mappa_env.sandbox.worker`) that has numpy,
pandas and scikit-learn preloaded and keeps its variables between executions, like a notebook kernel.
The host sends code over a pipe and drains the worker's stdout/stderr pipes while the code runs.

What is isolated (``isolate=True``, the default, via bubblewrap):

- File system: only read-only ``/usr`` (and ``/bin``/``/lib`` links), the Python installation's own
  directories, a private tmpfs ``/tmp`` and ``/dev/shm`` (size-limited), and the workspace, read-write at
  ``/workspace`` (the working directory). The host's home, the project tree, ``~/.cache/mappa`` (hidden
  labels), ``/etc`` and other workspaces are not there.
- Network: a fresh network namespace with only ``lo``; nothing on the host or outside is reachable.
- Processes: a private pid namespace; killing the worker kills everything it started. No capabilities.
- Environment: cleared (no API keys or tokens leak in); ``HOME=/tmp``.
- Resources: address space (``memory_mb``, so a blow-up is a ``MemoryError``), a lifetime CPU cap, a
  1 GiB file-size cap, a wall-clock timeout per execution, and a head+tail cap on captured output.

What is *not* isolated: there are no cgroups, so CPU share, the total size of files written to the
workspace (each file is capped, not their number), and the number of processes (fork bombs) are not
limited; the kernel is shared (this is not a VM: a kernel exploit escapes). Output of a process the code
left running in the background shows up in later executions.

``isolate=False`` runs the same worker as a plain subprocess of the host: rlimits, timeouts and output
caps still apply, but the code sees and can change everything the host user can. Use it only for code
you trust.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import functools
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings
import weakref
from pathlib import Path

from mappa_env.sandbox import bwrap
from mappa_env.sandbox.base import ExecResult, SandboxError

_HEADER = struct.Struct("<I")
_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_PIPE_BYTES = 1 << 20  # bigger pipes: fewer wake-ups while a flood of output is drained
_FSIZE_BYTES = 1 << 30  # per-file cap; generous because model files land in the workspace too


# The project tree (maybe an editable install) is not visible in the sandbox, so the worker's source
# travels through a pipe; this stub reads and runs it. (On the command line it would bloat `ps`.)
_BOOTSTRAP = ("import os, sys\nwith os.fdopen(int(sys.argv.pop(1)), 'rb') as f:\n    src = f.read()\n"
              "exec(compile(src, '<mappa-sandbox-worker>', 'exec'))")


@functools.lru_cache(maxsize=1)
def _worker_source() -> bytes:
    return Path(__file__).with_name("worker.py").read_bytes()


def _source_pipe() -> int:
    """A pipe's read end that yields the worker source then EOF."""
    src = _worker_source()
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, max(len(src), 4096))  # the whole source fits: no blocking
    except (OSError, AttributeError):
        pass
    try:
        _write_all(w, src)
    finally:
        os.close(w)
    return r


class _HeadTail:
    """Keeps the first and last ``limit // 2`` bytes of a stream of any length."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        if not self.tail:
            return head
        tail = self.tail.decode("utf-8", "replace")
        if not self.truncated:
            return (self.head + self.tail).decode("utf-8", "replace")
        dropped = self.total - len(self.head) - len(self.tail)
        return f"{head}\n... [{dropped} bytes truncated] ...\n{tail}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_SIGNAL_HINTS = {
    "SIGKILL": "the memory limit, the host's OOM killer or an external kill",
    "SIGXCPU": "the worker's lifetime CPU-time limit",
    "SIGSEGV": "a crash in native code",
    "SIGABRT": "an abort in native code",
}


class _Worker:
    """One worker process: spawn, ready handshake, one execution at a time, kill."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None, cwd: Path, isolated: bool,
                 pass_fds: tuple[int, ...], resp_r: int) -> None:
        self.isolated = isolated
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=pass_fds, env=env, cwd=cwd,
                                     start_new_session=True)  # host Ctrl-C must not hit the worker
        self.resp = resp_r
        self.req = self.proc.stdin.fileno()
        self.out, self.err = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        for fd in (self.resp, self.out, self.err):
            os.set_blocking(fd, False)
        for fd in (self.out, self.err):
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
            except (OSError, AttributeError):  # F_SETPIPE_SZ is Linux-only
                pass  # a small pipe only costs more wake-ups
        self.pidfd = None
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)  # readable when the process exits
        except (AttributeError, OSError):
            pass
        self.poller = select.poll()
        for fd in (self.resp, self.out, self.err, self.pidfd):
            if fd is not None:
                self.poller.register(fd, select.POLLIN)
        self.buf = bytearray()
        self.ready: dict | None = None
        self.dead = False
        self.startup_stderr = _HeadTail(8192)

    # -- reading -------------------------------------------------------------------------------

    def _message(self) -> dict | None:
        """Pop one complete message from the buffer, if there is one."""
        if len(self.buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self.buf)
        if size > _MAX_RESPONSE_BYTES:
            raise ValueError(f"response of {size} bytes")
        if len(self.buf) < _HEADER.size + size:
            return None
        body = bytes(self.buf[_HEADER.size: _HEADER.size + size])
        del self.buf[: _HEADER.size + size]
        message = json.loads(body)
        if not isinstance(message, dict):
            raise ValueError(f"unexpected message {body[:80]!r}")
        return message

    def _drain(self, fd: int, sink: _HeadTail, max_reads: int = 64) -> None:
        """Read what is in a pipe now (bounded: a background writer must not keep us here)."""
        for _ in range(max_reads):
            try:
                data = os.read(fd, _PIPE_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._unregister(fd)
                return
            sink.feed(data)

    def _unregister(self, fd: int | None) -> None:
        try:
            self.poller.unregister(fd)
        except (KeyError, ValueError):
            pass

    def _wait(self, deadline: float, out: _HeadTail, err: _HeadTail) -> tuple[dict | None, str]:
        """The next message, or None and why not ("timeout" or "dead")."""
        while True:
            message = self._message()
            if message is not None:
                return message, ""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, "timeout"
            for fd, _ in self.poller.poll(math.ceil(remaining * 1000)):
                if fd == self.resp:
                    try:
                        data = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not data:  # every holder of the write end is gone: the worker died
                        self._unregister(fd)
                        self.dead = True
                    self.buf += data
                elif fd == self.out:
                    self._drain(fd, out)
                elif fd == self.err:
                    self._drain(fd, err)
                elif fd == self.pidfd:
                    self._unregister(fd)
                    self.dead = True
            if self.dead:
                self._drain_resp()
                message = self._message()
                return (message, "") if message is not None else (None, "dead")

    def _drain_resp(self) -> None:
        while True:
            try:
                data = os.read(self.resp, 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.buf += data

    # -- lifecycle -----------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the worker finished its imports; raise :class:`SandboxError` if it cannot start."""
        if self.ready is not None:
            return
        discard = _HeadTail(8192)  # import-time chatter (warnings) is not any execution's output
        try:
            message, why = self._wait(time.monotonic() + timeout_s, discard, self.startup_stderr)
        except ValueError as exc:
            message, why = None, f"protocol error ({exc})"
        if message is None or not message.get("ready"):
            self.kill()
            self._drain(self.err, self.startup_stderr)
            detail = self.startup_stderr.text().strip() or "no output"
            if why == "timeout":
                what = f"did not start within {timeout_s:g} s (startup_timeout_s)"
            elif why == "dead":
                what = f"exited during start-up (exit code {self.proc.returncode})"
            else:
                what = f"sent an invalid start-up message: {why}"
            raise SandboxError(f"The sandbox worker {what}. Its stderr: {detail}")
        self._drain(self.out, discard)
        self._drain(self.err, self.startup_stderr)
        self.ready = message

    def execute(self, code: str, timeout_s: float, max_output_bytes: int) -> ExecResult:
        out, err = _HeadTail(max_output_bytes), _HeadTail(max_output_bytes)
        body = json.dumps({"code": code}).encode()  # ASCII: non-ASCII characters are escaped
        started = time.monotonic()
        try:
            _write_all(self.req, _HEADER.pack(len(body)) + body)
            message, why = self._wait(started + timeout_s, out, err)
        except BrokenPipeError:
            message, why = None, "dead"
        except ValueError as exc:  # garbage on the protocol pipe (user code can write to it)
            message, why = None, f"protocol:{exc}"
        duration = time.monotonic() - started
        if message is None:
            if why == "dead":
                try:  # let it finish dying first, so its exit status (not our SIGKILL) is reported
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
            self.kill()  # timeout, death or garbage: in every case this worker is finished
        self._drain(self.out, out)
        self._drain(self.err, err)
        stderr = err.text()
        truncated = out.truncated or err.truncated
        if message is not None:
            stderr += message.get("traceback", "")
            return ExecResult(status="ok" if message.get("status") == "ok" else "error", stdout=out.text(),
                              stderr=stderr, duration_s=duration, error=message.get("error", ""),
                              output_truncated=truncated)
        status, error = self._failure(why, timeout_s)
        if status == "ok":  # os._exit(0): a clean exit, but the state is gone; say so where it is read
            stderr, error = stderr + f"[sandbox] {error}\n", ""
        return ExecResult(status=status, stdout=out.text(), stderr=stderr, duration_s=duration, error=error,
                          state_lost=True, output_truncated=truncated)

    def _failure(self, why: str, timeout_s: float) -> tuple[str, str]:
        """Status and error text for an execution that got no answer."""
        lost = "in-memory state (variables, imports) was lost; files in the workspace remain"
        if why == "timeout":
            return "timeout", f"Timeout: execution exceeded {timeout_s:g} s and was killed; {lost}"
        if why.startswith("protocol:"):
            return "error", (f"SandboxProtocolError: the worker sent an invalid message ({why[9:]}), "
                             f"so it was killed; {lost}")
        code = self.proc.returncode
        # bwrap reports a child killed by signal N as exit code 128 + N.
        signum = -code if code < 0 else (code - 128 if self.isolated and 128 < code < 160 else 0)
        if signum:
            name = _signal_name(signum)
            hint = _SIGNAL_HINTS.get(name, "a signal")
            return "killed", f"Killed: the worker died from {name} ({hint}); {lost}"
        status = "ok" if code == 0 else "error"
        return status, f"WorkerExit: the worker process exited with code {code}; {lost}"

    def exited(self) -> bool:
        return self.dead or self.proc.poll() is not None

    def kill(self) -> None:
        """Kill the worker and everything it started, reap it and close our ends. Idempotent."""
        self.dead = True
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the worker and its children
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not take this long
            pass
        # EOF on the protocol pipe means every process holding it (bwrap's init too) is gone.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                ready = select.select([self.resp], [], [], max(0.0, deadline - time.monotonic()))[0]
                if not ready or not os.read(self.resp, 1 << 16):
                    break
            except (OSError, ValueError, TypeError):  # TypeError: fds already closed
                break

    def close_fds(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        for fd in (self.resp, self.pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.resp = self.pidfd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_LIVE: weakref.WeakSet[LocalSandbox] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sandbox in list(_LIVE):
        sandbox.close()


class LocalSandbox:
    """A persistent Python worker for one agent, isolated with bubblewrap (see the module docstring).

    The worker starts in ``__init__`` without waiting for its imports (about 2 s of CPU for numpy, pandas
    and scikit-learn), so several sandboxes created together warm up in parallel; the first :meth:`run`
    waits for it (``startup_timeout_s``, not counted in the execution timeout). Calls on one sandbox are
    serialised by a lock; different sandboxes may be used from different threads at the same time.

    Args:
        workspace: directory bound read-write at ``/workspace`` and used as working directory. Must exist.
        isolate: run under bubblewrap (default). ``False`` runs an unisolated subprocess and warns.
        persistent: keep variables between :meth:`run` calls (one long-lived worker). ``False`` runs every
            execution in a fresh worker (started in the background after the previous run).
        timeout_s: default wall-clock limit per execution; :meth:`run` may override it.
        memory_mb: address-space limit of the worker (and each process it starts), in MiB.
        max_output_bytes: cap per stream; beyond it the middle is dropped and head and tail kept.
        python: interpreter that runs the worker; its installation is bound read-only into the sandbox.
        extra_ro_binds: more host directories to expose read-only, at the same path.
        tmp_mb: size of the sandbox's private ``/tmp`` and ``/dev/shm`` (each; memory-backed), in MiB.
        cpu_limit_s: lifetime CPU-time limit of one worker (catches a runaway the host somehow missed).
        startup_timeout_s: how long the first run waits for the worker's imports (not counted in the
            execution timeout).
        preload: modules the worker imports at start (default: numpy, pandas and common sklearn parts).

    Raises:
        SandboxUnavailableError: ``isolate=True`` but bubblewrap cannot run here (the message says how to
            fix it).
        ValueError: bad arguments, e.g. a missing workspace.
    """

    def __init__(self, workspace: str | os.PathLike[str], *, isolate: bool = True, persistent: bool = True,
                 timeout_s: float = 60.0, memory_mb: int = 4096, max_output_bytes: int = 64 * 1024,
                 python: str = sys.executable, extra_ro_binds: tuple[str, ...] = (), tmp_mb: int = 512,
                 cpu_limit_s: float = 3600.0, startup_timeout_s: float = 120.0,
                 preload: tuple[str, ...] | None = None) -> None:
        self.workspace = Path(workspace).resolve()
        if not self.workspace.is_dir():
            raise ValueError(f"workspace {str(workspace)!r} is not an existing directory; create it first")
        if timeout_s <= 0 or memory_mb <= 0 or max_output_bytes < 2 or tmp_mb <= 0:
            raise ValueError("timeout_s, memory_mb, tmp_mb and max_output_bytes must be positive")
        self.isolate, self.persistent = isolate, persistent
        self.timeout_s, self.memory_mb, self.max_output_bytes = float(timeout_s), memory_mb, max_output_bytes
        self.python, self.startup_timeout_s = python, startup_timeout_s
        self.extra_ro_binds = tuple(os.path.realpath(p) for p in extra_ro_binds)
        self.tag = f"mappa-sandbox-{uuid.uuid4().hex[:12]}"  # in the worker's argv: findable in `ps`
        self._config = {"memory_bytes": memory_mb << 20, "cpu_s": int(cpu_limit_s),
                        "fsize_bytes": _FSIZE_BYTES, "max_error_chars": max_output_bytes, "tag": self.tag}
        if preload is not None:
            self._config["preload"] = list(preload)
        self._tmp_bytes = tmp_mb << 20
        self._bwrap = bwrap.require_bwrap() if isolate else None
        if isolate:
            bwrap.python_dirs(python)  # a bad interpreter fails here (ValueError), not at the first run
        if not isolate:
            warnings.warn("LocalSandbox(isolate=False) runs agent code UNISOLATED, with the host user's "
                          "full access to files, network and processes; use it only for trusted code.",
                          UserWarning, stacklevel=2)
        self._lock = threading.Lock()
        self._closed = False
        self._worker: _Worker | None = None
        self._worker = self._spawn()  # eager: imports run while the caller does other things
        _LIVE.add(self)

    def _spawn(self) -> _Worker:
        resp_r, resp_w = os.pipe()
        src_r = _source_pipe()
        config = json.dumps({**self._config, "resp_fd": resp_w})
        argv = [self.python, "-c", _BOOTSTRAP, str(src_r), config]
        if self._bwrap is not None:
            argv = bwrap.command(self._bwrap, workspace=self.workspace, python=self.python,
                                 tmp_bytes=self._tmp_bytes, extra_ro_binds=self.extra_ro_binds, argv=argv)
            env = {}  # bwrap --clearenv sets the sandbox's whole environment itself
        else:
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
        try:
            return _Worker(argv, env=env, cwd=self.workspace, isolated=self._bwrap is not None,
                           pass_fds=(resp_w, src_r), resp_r=resp_r)
        except OSError as exc:
            os.close(resp_r)
            raise SandboxError(f"could not start the sandbox worker ({argv[0]}): {exc}") from exc
        finally:
            os.close(resp_w)  # the child has its own copies; ours would hide the worker's death
            os.close(src_r)

    def run(self, code: str, *, timeout_s: float | None = None) -> ExecResult:
        """Execute ``code`` in the worker; failures of the code are data in the result, never raised.

        Raises:
            SandboxError: the sandbox is closed, or its worker cannot start (broken infrastructure).
        """
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if not timeout > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        with self._lock:
            if self._closed:
                raise SandboxError("run() on a closed LocalSandbox; create a new sandbox")
            restarted = False
            if self._worker is not None and self._worker.ready is not None and self._worker.exited():
                # It died between runs (e.g. a background thread called os._exit): start over.
                self._discard()
                restarted = True
            if self._worker is None:
                self._worker = self._spawn()
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
                    self._worker = self._spawn()  # warm the next fresh worker while the caller thinks
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

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down modules
            pass

    def __repr__(self) -> str:
        mode = "bwrap" if self.isolate else "unisolated"
        state = "closed" if self._closed else ("persistent" if self.persistent else "fresh-per-run")
        return f"LocalSandbox({str(self.workspace)!r}, {mode}, {state})"
