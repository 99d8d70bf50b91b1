"""The ``local`` sandbox: a persistent Python worker per agent, isolated with bubblewrap.

Each :class:`LocalSandbox` runs one worker process (:mod:`mappa_env.sandbox.worker`) that has numpy,
pandas and scikit-learn preloaded and keeps its variables between executions, like a notebook kernel.
The host sends code over a pipe and drains the worker's stdout/stderr pipes while the code runs.

What is isolated (``isolate=True``, the default, via bubblewrap; docs/sandbox.md lists each attack the
test suite tries and how it ends):

- File system: only read-only ``/usr`` (and ``/bin``/``/lib`` links), the Python installation's own
  directories, a private tmpfs ``/tmp`` and ``/dev/shm`` (size-limited), and the workspace, read-write at
  ``/workspace`` (the working directory). The host's home, the project tree, ``~/.cache/mappa`` (hidden
  labels), ``/etc`` and other workspaces are not there; ``hidden_paths`` (the data directories of the
  packages the builtin tasks come from) are covered by empty directories.
- Network: a fresh network namespace with only ``lo``; nothing on the host or outside is reachable.
- Processes: a private pid namespace and session, no capabilities, and (when the host runs as root) an
  unprivileged uid of the workspace's own. Between executions the worker is frozen (``SIGSTOP``) and every
  other process of the sandbox is killed: nothing an action starts outlives it.
- Environment: cleared (no API keys or tokens leak in); ``HOME=/tmp``; no descriptor but the protocol's.
- Resources: per process an address space (``memory_mb``: a blow-up is a ``MemoryError``), a lifetime CPU
  cap and a 1 GiB file-size cap; for the sandbox as a whole ``max_processes`` processes and threads,
  ``memory_mb`` of memory together (measured by the host every 0.25 s), a workspace quota
  (``disk_mb``, ``max_files``, measured likewise), a wall-clock timeout per execution, and a head+tail
  cap on captured output.

What is *not* isolated: the kernel is shared (this is not a VM: a kernel exploit escapes); the CPU share
while an execution runs is not limited (no cgroups), only its duration and its process count; the
host's memory and disk checks sample every 0.25 s, so a fast burst can overshoot them briefly.

``isolate=False`` runs the same worker as a plain subprocess of the host: rlimits, timeouts and output
caps still apply, but the code sees and can change everything the host user can, and processes it
detaches from its session escape. Use it only for code you trust.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

from mappa_env.sandbox import bwrap, procs
from mappa_env.sandbox.base import DEFAULT_EXEC_TIMEOUT_S, SandboxError
from mappa_env.sandbox.channel import WorkerChannel, write_all
from mappa_env.sandbox.persistent import WorkerSandbox, worker_config
from mappa_env.sandbox.quota import WorkspaceQuota

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
        write_all(w, src)
    finally:
        os.close(w)
    return r


#: Unprivileged uids handed to workspaces when the host runs as root ("setuid" mode): far above any
#: account or container subuid range, one per workspace, so that each episode's process count is its own.
UID_BASE, UID_SPAN = 2_000_000_000, 100_000_000
_UID_LOCK = threading.Lock()


def workspace_uid(workspace: Path) -> int:
    """The sandbox uid of a workspace: its owner if that is already one, else a fresh one it is given.

    The whole tree is handed over (``lchown``, links not followed), so every agent of an episode may
    read, replace and delete what the task and the agents before it wrote.
    """
    with _UID_LOCK:
        owner = workspace.stat().st_uid
        if UID_BASE <= owner < UID_BASE + UID_SPAN:
            return owner
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        os.lchown(workspace, uid, uid)
        for parent, dirs, files in os.walk(workspace):
            for name in (*dirs, *files):
                os.lchown(os.path.join(parent, name), uid, uid)
        return uid


class _LocalProcess:
    """A worker started with ``Popen`` (under bwrap, or not), and the host's guards around it.

    Implements :class:`~mappa_env.sandbox.channel.WorkerProcess`. Under bwrap the tree is: bwrap (our
    child) -> pid 1 of the sandbox -> the worker -> whatever the code started; orphans re-parent to pid 1.
    """

    def __init__(self, argv: list[str], *, env: dict[str, str] | None, cwd: Path, isolated: bool,
                 pass_fds: tuple[int, ...], stdio: tuple[int, int, int], memory_bytes: int,
                 quota: WorkspaceQuota) -> None:
        self.isolated = self.signal_exit_codes = isolated
        self.proc = subprocess.Popen(argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], pass_fds=pass_fds,
                                     env=env, cwd=cwd, start_new_session=True)  # host Ctrl-C must not hit it
        self.exit_fd = None
        try:
            self.exit_fd = os.pidfd_open(self.proc.pid)  # readable when the process exits
        except (AttributeError, OSError):
            pass
        self.memory_bytes, self.quota = memory_bytes, quota
        self.keep: tuple[int, ...] | None = None  # bwrap, pid 1 and the worker: found at the first settle
        self.worker_ns_pid: int | None = None  # the worker's pid inside the sandbox
        self.frozen = False

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def worker_pid(self) -> int | None:
        return None if not self.keep else self.keep[-1]

    def _tree(self) -> list[int]:
        return procs.descendants(self.proc.pid)

    def kill(self) -> None:
        if self.proc.returncode is None:
            # Under bwrap the sandbox's pid 1 dies with them, and the kernel kills the rest of its pid
            # namespace; unisolated, this reaches the children that left the worker's session.
            procs.signal_all(self._tree())
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: unisolated children too
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
        if self.exit_fd is not None:
            os.close(self.exit_fd)
            self.exit_fd = None

    def resume(self) -> None:
        self.quota.start()
        if self.frozen and self.worker_pid is not None:
            procs.signal_all([self.worker_pid], signal.SIGCONT)
            self.frozen = False

    def settle(self) -> int | None:
        if self.keep is None:
            self.keep = self._find_worker()
            if self.keep is None:
                return None
        worker = self.worker_pid
        procs.signal_all([worker], signal.SIGSTOP)  # first, so that it cannot start anything more
        self.frozen = True
        if self.isolated and procs.namespace_pids(self.keep[1]) == {1, self.worker_ns_pid}:
            return 0  # the common case, seen cheaply from inside: only pid 1 and the worker live there
        root = self.keep[0] if self.isolated else worker
        return procs.freeze(worker, root, keep=self.keep)  # a stray may wake the worker while it dies

    def _find_worker(self) -> tuple[int, ...] | None:
        """(bwrap, pid 1, worker) under bwrap, (worker,) without; right after start-up, nothing else runs."""
        if not self.isolated:
            return (self.proc.pid,)
        tree = self._tree()
        if len(tree) < 2:
            return None
        init, worker = tree[0], tree[1]  # parents before children: pid 1, then its first child
        self.worker_ns_pid = procs.namespace_pid(worker)
        return (self.proc.pid, init, worker)

    def check(self) -> str | None:
        used = procs.memory_bytes(self._tree() if self.isolated else [self.proc.pid, *self._tree()])
        if used > self.memory_bytes:
            return (f"the sandbox's processes used {used / 2**20:.0f} MiB together, over the sandbox's "
                    f"memory_mb={self.memory_bytes >> 20}")
        return self.quota.check()


class LocalSandbox(WorkerSandbox):
    """A persistent Python worker for one agent, isolated with bubblewrap (see the module docstring).

    The worker starts in ``__init__`` without waiting for its imports (about 2 s of CPU for numpy, pandas
    and scikit-learn), so several sandboxes created together warm up in parallel; the first :meth:`run`
    waits for it (``startup_timeout_s``, not counted in the execution timeout). Calls on one sandbox are
    serialised by a lock; different sandboxes may be used from different threads at the same time.

    When the host runs as root, the workspace is handed to an unprivileged uid of its own (see
    :func:`workspace_uid`) and the worker runs as that uid.

    Args:
        workspace: directory bound read-write at ``/workspace`` and used as working directory. Must exist.
        isolate: run under bubblewrap (default). ``False`` runs an unisolated subprocess and warns.
        persistent: keep variables between :meth:`run` calls (one long-lived worker). ``False`` runs every
            execution in a fresh worker (started in the background after the previous run).
        timeout_s: default wall-clock limit per execution; :meth:`run` may override it.
        memory_mb: memory limit in MiB, both of each process's address space and of all the sandbox's
            processes together (their proportional set size, measured by the host while code runs).
        max_output_bytes: cap per stream; beyond it the middle is dropped and head and tail kept.
        python: interpreter that runs the worker; its installation is bound read-only into the sandbox.
        extra_ro_binds: more host directories to expose read-only, at the same path.
        hidden_paths: files or directories inside the bound ones to cover with empty read-only ones
            (``dsbench-v0`` passes the data directories its builtin tasks were built from).
        tmp_mb: size of the sandbox's private ``/tmp`` and ``/dev/shm`` (each; memory-backed), in MiB.
        cpu_limit_s: lifetime CPU-time limit of one worker (catches a runaway the host somehow missed).
        max_processes: processes and threads the sandbox may hold at once (``RLIMIT_NPROC``).
        disk_mb: disk quota of the workspace in MiB (task files included), checked by the host.
        max_files: how many files and directories the workspace may hold, checked likewise.
        startup_timeout_s: how long the first run waits for the worker's imports (not counted in the
            execution timeout).
        preload: modules the worker imports at start (default: numpy, pandas and common sklearn parts).

    Raises:
        SandboxUnavailableError: ``isolate=True`` but bubblewrap cannot run here (the message says how to
            fix it).
        ValueError: bad arguments, e.g. a missing workspace.
    """

    def __init__(self, workspace: str | os.PathLike[str], *, isolate: bool = True, persistent: bool = True,
                 timeout_s: float = DEFAULT_EXEC_TIMEOUT_S, memory_mb: int = 4096, max_output_bytes: int = 64 * 1024,
                 python: str = sys.executable, extra_ro_binds: tuple[str, ...] = (),
                 hidden_paths: tuple[str, ...] = (), tmp_mb: int = 512, cpu_limit_s: float = 3600.0,
                 max_processes: int = 256, disk_mb: int = 4096, max_files: int = 20_000,
                 startup_timeout_s: float = 120.0, preload: tuple[str, ...] | None = None) -> None:
        super().__init__(workspace, persistent=persistent, timeout_s=timeout_s,
                         max_output_bytes=max_output_bytes, startup_timeout_s=startup_timeout_s,
                         memory_mb=memory_mb, tmp_mb=tmp_mb, max_processes=max_processes, disk_mb=disk_mb,
                         max_files=max_files)
        self.isolate, self.python = isolate, python
        self.extra_ro_binds = tuple(os.path.realpath(p) for p in extra_ro_binds)
        self.hidden_paths = tuple(os.path.realpath(p) for p in hidden_paths)
        self._config = worker_config(memory_mb=memory_mb, cpu_limit_s=cpu_limit_s,
                                     max_output_bytes=max_output_bytes, tag=self.tag, preload=preload,
                                     nproc=max_processes)
        self._bwrap = bwrap.require_bwrap() if isolate else None
        if isolate:
            bwrap.python_dirs(python)  # a bad interpreter fails here (ValueError), not at the first run
            self._config["chdir"] = bwrap.WORKSPACE
            if self._bwrap.mode == "setuid":
                self._config["uid"] = workspace_uid(self.workspace)
        if not isolate:
            warnings.warn("LocalSandbox(isolate=False) runs agent code UNISOLATED, with the host user's "
                          "full access to files, network and processes; use it only for trusted code.",
                          UserWarning, stacklevel=2)
        self._open()

    def _start(self) -> WorkerChannel:
        resp_r, resp_w = os.pipe()
        req_r, req_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        src_r = _source_pipe()
        config = json.dumps({**self._config, "resp_fd": resp_w})
        argv = [self.python, "-c", _BOOTSTRAP, str(src_r), config]
        if self._bwrap is not None:
            argv = bwrap.command(self._bwrap, workspace=self.workspace, python=self.python,
                                 tmp_bytes=self.tmp_mb << 20, extra_ro_binds=self.extra_ro_binds,
                                 hidden=self.hidden_paths, argv=argv)
            env = {}  # bwrap --clearenv sets the sandbox's whole environment itself
        else:
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
        try:
            process = _LocalProcess(argv, env=env, cwd=self.workspace, isolated=self._bwrap is not None,
                                    pass_fds=(resp_w, src_r), stdio=(req_r, out_w, err_w),
                                    memory_bytes=self.memory_mb << 20,
                                    quota=WorkspaceQuota(self.workspace, self.quota))
        except OSError as exc:
            for fd in (resp_r, req_w, out_r, err_r):
                os.close(fd)
            raise SandboxError(f"could not start the sandbox worker ({argv[0]}): {exc}") from exc
        finally:
            for fd in (resp_w, req_r, out_w, err_w, src_r):  # the child's ends: ours would hide its death
                os.close(fd)
        return WorkerChannel(process, req=req_w, resp=resp_r, out=out_r, err=err_r)

    def __repr__(self) -> str:
        mode = "bwrap" if self.isolate else "unisolated"
        state = "closed" if self._closed else ("persistent" if self.persistent else "fresh-per-run")
        return f"LocalSandbox({str(self.workspace)!r}, {mode}, {state})"
