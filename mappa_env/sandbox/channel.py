"""The host's end of the persistent-worker protocol, shared by every backend that runs the worker.

A backend starts :mod:`mappa_env.sandbox.worker` somewhere (a bubblewrap sandbox, a container) and hands
this module four descriptors (requests to the worker, its answers, its stdout, its stderr) plus a
:class:`WorkerProcess`, the backend's handle on where the worker runs. :class:`WorkerChannel` then does
the rest: wait for the ready message, send code, drain output while it runs (head and tail kept), watch
the backend's limits, settle what the code left behind, and turn every way a run can end into an
:class:`~mappa_env.sandbox.base.ExecResult`.

Protocol: every message is a 4-byte little-endian length followed by that many bytes of UTF-8 JSON
(see :mod:`mappa_env.sandbox.worker`).
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import struct
import time
from typing import Protocol

from mappa_env.sandbox.base import ExecResult, SandboxError

HEADER = struct.Struct("<I")
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
PIPE_BYTES = 1 << 20  # bigger pipes: fewer wake-ups while a flood of output is drained
CHECK_INTERVAL_S = 0.25  # how often a running execution's limits (memory, disk) are measured
LOST = "in-memory state (variables, imports) was lost; files in the workspace remain"


class WorkerProcess(Protocol):
    """Where a worker runs, as the channel needs to see it (a process tree, a container)."""

    #: True when an exit code 128 + N means "killed by signal N" (bwrap, Docker).
    signal_exit_codes: bool
    #: A descriptor that becomes readable when the worker has exited (a pidfd), or None.
    exit_fd: int | None

    def poll(self) -> int | None:
        """The exit code once the worker has exited (negative: killed by that signal), else None."""
        ...

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the exit; the exit code or None."""
        ...

    def kill(self) -> None:
        """Kill the worker and everything it started, and reap them. Idempotent."""
        ...

    def resume(self) -> None:
        """Before a run: let the worker (frozen between runs) go on."""
        ...

    def settle(self) -> int | None:
        """After a run: kill every process the run left behind and freeze the worker until the next.

        Returns how many processes were killed, or None when that failed (the channel then kills
        the worker).
        """
        ...

    def check(self) -> str | None:
        """While code runs, every :data:`CHECK_INTERVAL_S`: why it must be stopped now, if it must."""
        ...


class HeadTail:
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


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def enlarge_pipe(fd: int, size: int = PIPE_BYTES) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, AttributeError, ImportError):  # F_SETPIPE_SZ is Linux-only
        pass  # a small pipe only costs more wake-ups


class WorkerChannel:
    """Talks to one worker: ready handshake, one execution at a time, kill.

    Owns the four descriptors it is given and closes them in :meth:`close_fds`.
    """

    def __init__(self, process: WorkerProcess, *, req: int, resp: int, out: int, err: int) -> None:
        self.process = process
        self.req, self.resp, self.out, self.err = req, resp, out, err
        for fd in (self.resp, self.out, self.err):
            os.set_blocking(fd, False)
        for fd in (self.out, self.err):
            enlarge_pipe(fd)
        self.poller = select.poll()
        for fd in (self.resp, self.out, self.err, process.exit_fd):
            if fd is not None:
                self.poller.register(fd, select.POLLIN)
        self.buf = bytearray()
        self.ready: dict | None = None
        self.dead = False
        self.startup_stderr = HeadTail(8192)

    # -- reading -------------------------------------------------------------------------------

    def _message(self) -> dict | None:
        """Pop one complete message from the buffer, if there is one."""
        if len(self.buf) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self.buf)
        if size > MAX_RESPONSE_BYTES:
            raise ValueError(f"response of {size} bytes")
        if len(self.buf) < HEADER.size + size:
            return None
        body = bytes(self.buf[HEADER.size: HEADER.size + size])
        del self.buf[: HEADER.size + size]
        message = json.loads(body)
        if not isinstance(message, dict):
            raise ValueError(f"unexpected message {body[:80]!r}")
        return message

    def _drain(self, fd: int, sink: HeadTail, max_reads: int = 64) -> None:
        """Read what is in a pipe now (bounded: a background writer must not keep us here)."""
        for _ in range(max_reads):
            try:
                data = os.read(fd, PIPE_BYTES)
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

    def _wait(self, deadline: float, out: HeadTail, err: HeadTail, *,
              checked: bool = False) -> tuple[dict | None, str]:
        """The next message, or None and why not ("timeout", "dead" or "limit:<reason>").

        With ``checked``, the process's limits are measured every :data:`CHECK_INTERVAL_S`.
        """
        next_check = time.monotonic() + CHECK_INTERVAL_S
        while True:
            message = self._message()
            if message is not None:
                return message, ""
            now = time.monotonic()
            if now >= deadline:
                return None, "timeout"
            if checked and now >= next_check:
                broken = self.process.check()
                if broken:
                    return None, f"limit:{broken}"
                next_check = now + CHECK_INTERVAL_S
            wake = min(deadline, next_check) if checked else deadline
            for fd, _ in self.poller.poll(max(1, math.ceil((wake - now) * 1000))):
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
                elif fd == self.process.exit_fd:
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
        discard = HeadTail(8192)  # import-time chatter (warnings) is not any execution's output
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
                what = f"exited during start-up (exit code {self.process.poll()})"
            else:
                what = f"sent an invalid start-up message: {why}"
            raise SandboxError(f"The sandbox worker {what}. Its stderr: {detail}")
        self._drain(self.out, discard)
        self._drain(self.err, self.startup_stderr)
        if self.process.settle() is None:  # start-up leaves nothing behind; this freezes the worker
            self.kill()
            raise SandboxError("The sandbox worker could not be frozen after start-up (its processes kept "
                               "multiplying); this is a bug or a hostile preload module")
        self.ready = message

    def execute(self, code: str, timeout_s: float, max_output_bytes: int) -> ExecResult:
        out, err = HeadTail(max_output_bytes), HeadTail(max_output_bytes)
        body = json.dumps({"code": code}).encode()  # ASCII: non-ASCII characters are escaped
        started = time.monotonic()
        self.process.resume()
        try:
            write_all(self.req, HEADER.pack(len(body)) + body)
            message, why = self._wait(started + timeout_s, out, err, checked=True)
        except BrokenPipeError:
            message, why = None, "dead"
        except ValueError as exc:  # garbage on the protocol pipe (user code can write to it)
            message, why = None, f"protocol:{exc}"
        duration = time.monotonic() - started
        notes = ""
        if message is not None:
            stopped = self.process.settle()
            if stopped is None:
                self.kill()
                notes = ("[sandbox] processes this action started kept multiplying and could not be stopped; "
                         f"the worker was killed and its {LOST}\n")
            elif stopped:
                were = "processes left running by this action were" if stopped > 1 else \
                    "process left running by this action was"
                notes = f"[sandbox] {stopped} {were} stopped: nothing outlives an action\n"
        else:
            if why == "dead":
                try:  # let it finish dying first, so its exit status (not our SIGKILL) is reported
                    self.process.wait(timeout=2)
                except Exception:  # noqa: BLE001 - a backend's wait may raise its own timeout error
                    pass
            self.kill()  # timeout, death, a broken limit or garbage: in every case this worker is finished
        self._drain(self.out, out)
        self._drain(self.err, err)
        stderr = err.text() + notes
        truncated = out.truncated or err.truncated
        if message is not None:
            stderr += message.get("traceback", "")
            return ExecResult(status="ok" if message.get("status") == "ok" else "error", stdout=out.text(),
                              stderr=stderr, duration_s=duration, error=message.get("error", ""),
                              state_lost=self.dead, output_truncated=truncated)
        status, error = self._failure(why, timeout_s)
        if status == "ok":  # os._exit(0): a clean exit, but the state is gone; say so where it is read
            stderr, error = stderr + f"[sandbox] {error}\n", ""
        return ExecResult(status=status, stdout=out.text(), stderr=stderr, duration_s=duration, error=error,
                          state_lost=True, output_truncated=truncated)

    def _failure(self, why: str, timeout_s: float) -> tuple[str, str]:
        """Status and error text for an execution that got no answer."""
        if why == "timeout":
            return "timeout", f"Timeout: execution exceeded {timeout_s:g} s and was killed; {LOST}"
        if why.startswith("limit:"):
            return "killed", f"Killed: {why[6:]}; {LOST}"
        if why.startswith("protocol:"):
            return "error", (f"SandboxProtocolError: the worker sent an invalid message ({why[9:]}), "
                             f"so it was killed; {LOST}")
        code = self.process.poll()
        code = -signal.SIGKILL if code is None else code
        signum = -code if code < 0 else (code - 128 if self.process.signal_exit_codes and 128 < code < 160 else 0)
        if signum:
            name = _signal_name(signum)
            hint = _SIGNAL_HINTS.get(name, "a signal")
            return "killed", f"Killed: the worker died from {name} ({hint}); {LOST}"
        status = "ok" if code == 0 else "error"
        return status, f"WorkerExit: the worker process exited with code {code}; {LOST}"

    def exited(self) -> bool:
        return self.dead or self.process.poll() is not None

    def kill(self) -> None:
        """Kill the worker and everything it started, and wait for the protocol pipe to close."""
        self.dead = True
        self.process.kill()
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
        for fd in (self.req, self.resp, self.out, self.err):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.req = self.resp = self.out = self.err = None
