"""The program Docker's init starts in a ``docker`` sandbox: it starts the worker and keeps it in check.

The host runs it as a script from the control directory (``python3 /mappa/supervisor.py /mappa uid:gid
config``), so ``sys.path[0]`` is that read-only directory, never the workspace: a workspace file named
``json.py`` cannot take its place. It runs as root with no capability but KILL, SETUID and SETGID (the
worker spends the last two once; the supervisor keeps them, running no code but its own) and:

1. forks the worker, which becomes the sandbox's unprivileged uid for good, opens the protocol's FIFOs
   onto the descriptors it expects (stderr first, so that any later failure reaches the host) and runs
   ``worker.py`` (the same program as the ``local`` backend's);
2. answers the host, one JSON line per command line, on its own stdin and stdout, which are Docker's
   attach stream: only the engine reaches them (a process of the sandbox's uid can neither open a root
   process's descriptors nor trace it, nor send it a signal but SIGCONT (same session; harmless), so
   agent code cannot forge a command or an answer). ``cont`` lets the worker go on (SIGCONT) before an action;
   ``settle``, after it, stops the worker (SIGSTOP) and kills every other process below init until a
   walk finds none while the worker is still stopped (:func:`procs.freeze`; orphans are re-parented to
   init, so that tree holds all of them) and answers ``{"killed": n}``. No process is then left that
   could wake the worker before the next ``cont``: nothing of the sandbox runs between actions;
3. exits as the worker did (128 + N when signal N killed it), which docker-init passes on as the
   container's exit code; when the host's stream ends (the host is gone), kills the worker and exits.

Only the standard library and ``procs`` (copied next to this file) are imported: the image holds no
project code.
"""

import json
import os
import signal
import sys
import threading

import procs

STRAY_DEADLINE_S = 5.0  # kill_strays gives up after this; the host then tears the container down


def start_worker(control: str, uid: int, gid: int, config: str) -> int:
    """Fork the worker; return its pid. The child never returns."""
    pid = os.fork()
    if pid:
        return pid
    try:
        if (os.getuid(), os.getgid()) != (uid, gid):
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)  # real, effective and saved: no way back, and no capability left
        for name, fd, mode in (("err", 2, os.O_WRONLY), ("out", 1, os.O_WRONLY), ("req", 0, os.O_RDONLY),
                               ("resp", 3, os.O_WRONLY)):
            opened = os.open(os.path.join(control, name), mode)
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
        with open(os.path.join(control, "worker.py"), "rb") as f:
            source = f.read()
        del sys.modules["procs"]  # the worker's user code must not find the supervisor's
        sys.path[0] = ""  # as under `python -c`: the worker guards its imports, then lets user code import
        sys.argv = ["<mappa-sandbox-worker>", config]
        exec(compile(source, "<mappa-sandbox-worker>", "exec"), {"__name__": "__main__"})
        code = 0
    except SystemExit as exc:  # as the interpreter does: None is 0, any other object is printed and 1
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - whatever it is, it is reported on the FIFO stderr if open
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_with(worker: int) -> None:
    """Wait for the worker and exit as it did (the container's exit code)."""
    _, status = os.waitpid(worker, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


def answer(command: str, worker: int, init: int) -> dict:
    """What the host asked for, done."""
    if command == "cont":
        procs.signal_all([worker], signal.SIGCONT)
        return {"ok": True}
    if command == "settle":
        killed = procs.freeze(worker, init, keep=[os.getpid()], deadline_s=STRAY_DEADLINE_S)
        if killed is None:
            return {"error": f"processes were still being started after {STRAY_DEADLINE_S:g} s of killing"}
        return {"killed": killed}
    return {"error": f"unknown command {command!r}"}


def serve(worker: int) -> None:
    """Answer the host's commands until its stream ends, then kill the worker."""
    init = os.getppid()  # docker-init: every process of the sandbox is below it
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        sys.stdout.write(json.dumps(answer(line.strip(), worker, init)) + "\n")
        sys.stdout.flush()
    procs.signal_all([worker], signal.SIGKILL)  # a stopped process dies of it too


def main(argv: list[str]) -> None:
    control, ids, config = argv[1], argv[2], argv[3]
    uid, gid = (int(x) for x in ids.split(":"))
    worker = start_worker(control, uid, gid, config)
    waiter = threading.Thread(target=exit_with, args=(worker,), daemon=True)  # the process ends there
    waiter.start()
    serve(worker)
    waiter.join()


if __name__ == "__main__":
    main(sys.argv)
