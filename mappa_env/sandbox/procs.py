"""The processes of a sandbox, seen from the host through ``/proc`` (Linux).

A bubblewrap sandbox is a process tree: bwrap on the host, its child that is pid 1 of the sandbox's pid
namespace, the worker, and whatever the agent's code started. Orphans (a double fork, a ``setsid``
daemon) are re-parented to that pid 1, so they stay in the tree: walking it from the bwrap process finds
every process the sandbox holds, nested namespaces included. The kernel offers no reliable "children"
file here (``CONFIG_PROC_CHILDREN`` is often off), so the tree is built from each process's parent pid.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(path: str) -> list[bytes] | None:
    """The fields of a ``stat`` file after the command name (state first), or None if it is gone."""
    try:
        with open(path, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    return stat[stat.rindex(b")") + 2:].split()


def _parent(pid: int | str, proc: str = "/proc") -> int | None:
    """The parent of a live process; None for a zombie (dead, waiting to be reaped) or a vanished one."""
    fields = _stat_fields(f"{proc}/{pid}/stat")
    return None if fields is None or fields[0] in (b"Z", b"X") else int(fields[1])


def descendants(root: int) -> list[int]:
    """Pids of every live process below ``root`` (not ``root`` itself), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    for kids in children.values():
        kids.sort()
    found, frontier = [], [root]
    while frontier:
        kids = [k for pid in frontier for k in children.get(pid, ())]
        found.extend(kids)
        frontier = kids
    return found


def namespace_pids(init: int) -> set[int] | None:
    """Pids of the live processes in the pid namespace whose pid 1 is host pid ``init``, as numbered there.

    Read from the ``/proc`` mounted inside the sandbox (through ``/proc/<init>/root``): a small
    directory, so much cheaper than walking the host's whole process table. None if it cannot be read.
    """
    proc = f"/proc/{init}/root/proc"
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    return {int(e) for e in entries if e.isdigit() and _parent(e, proc) is not None}


def namespace_pid(pid: int) -> int | None:
    """The pid of a host process inside its innermost pid namespace (``NSpid``'s last field)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def signal_all(pids: Iterable[int], signum: int = signal.SIGKILL) -> int:
    """Send ``signum`` to each pid that still exists; how many were signalled."""
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, signum)
            sent += 1
        except (ProcessLookupError, PermissionError):
            pass
    return sent


def kill_strays(root: int, keep: Iterable[int], *, deadline_s: float = 5.0) -> int | None:
    """SIGKILL every process below ``root`` except those in ``keep``, until none is left.

    A process may fork while it is being killed, and a killed one takes a moment to die, so the tree is
    walked again until a walk finds nothing alive to kill. Returns how many processes were killed, or
    None when the tree was still not empty after ``deadline_s`` (tear the whole sandbox down then).
    """
    keep = set(keep)
    killed: set[int] = set()
    deadline = time.monotonic() + deadline_s
    while True:
        strays = [pid for pid in descendants(root) if pid not in keep]
        if not strays:
            return len(killed)
        if time.monotonic() > deadline:
            return None
        if killed.issuperset(strays):
            time.sleep(0.002)  # all already killed: let them die
        signal_all(strays)
        killed.update(strays)


def stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (or the process is gone: it runs nothing either)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for task in tasks:
        fields = _stat_fields(f"/proc/{pid}/task/{task}/stat")  # None: a thread that just ended
        if fields is not None and fields[0] not in (b"T", b"t", b"Z", b"X"):
            return False
    return True


def freeze(worker: int, root: int, keep: Iterable[int], *, deadline_s: float = 5.0) -> int | None:
    """Stop ``worker`` (SIGSTOP) and kill every other process below ``root`` but ``keep``, until a walk
    finds none left while the worker is seen stopped; how many were killed, or None past ``deadline_s``.

    One SIGSTOP and one sweep are not enough: a stray of the worker's uid may send the worker SIGCONT
    while it is being killed, and the woken worker may start another. Once a sweep finds nothing and
    the worker is still stopped, no process is left that could wake it.
    """
    keep = set(keep) | {worker}
    deadline = time.monotonic() + deadline_s
    killed = 0
    while True:
        signal_all([worker], signal.SIGSTOP)  # first, so that it cannot start anything more
        done = kill_strays(root, keep=keep, deadline_s=max(deadline - time.monotonic(), 0.0))
        if done is None:
            return None
        killed += done
        # The strays are gone, but one may have woken the worker just before it died: stop it again and
        # wait until every thread has stopped (asynchronous), then look once more for what it started.
        signal_all([worker], signal.SIGSTOP)
        while not stopped(worker):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0005)
        if not [pid for pid in descendants(root) if pid not in keep]:
            return killed


def memory_bytes(pids: Iterable[int]) -> int:
    """Memory the processes use together: the sum of their proportional set sizes (PSS).

    PSS divides each shared page among the processes that map it, so forty forked workers that share
    the parent's preloaded pandas count it once, as the kernel's memory does. Where ``smaps_rollup`` is
    unreadable, the resident set size stands in (it over-counts shared pages).
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                for line in f:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
            continue
        except (OSError, ValueError):
            pass
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total
