"""The program that runs *inside* a sandbox: a persistent Python worker.

The host starts it with a small ``python -c`` stub that reads this file's source from a pipe (the project
tree need not be visible inside the sandbox, so this module imports only the standard library), followed
by one argument, the JSON config. It then:

1. drops to the workspace's unprivileged uid when the host asked for it (the host runs as root), sets
   resource limits (address space, lifetime CPU time, processes, file size, no core dumps), one BLAS/OpenMP
   thread, and preloads numpy, pandas and scikit-learn so that an action pays no import cost;
2. sends a ``ready`` message, then loops: read a request, ``exec`` its code in one persistent namespace
   (a fresh module registered as ``__main__``, so pickling user classes works), answer with the status.

Protocol: every message is a 4-byte little-endian length followed by that many bytes of UTF-8 JSON.
Requests arrive on fd 0 (moved to a private descriptor at start; user code sees ``/dev/null`` as stdin)
and are ``{"code": str}``. Answers go to the descriptor named in the config and are
``{"status": "ok" | "error", "error": str, "traceback": str, "exit_code": int | None}``.

Output is not part of the protocol: fds 1 and 2 are pipes the host drains while the code runs, so
``print``, ``os.write(1, ...)`` and child processes are all captured, and the host keeps only the head and
tail of a flood. Whatever was written before a timeout kill is therefore still seen by the host.
"""

import sys

# Keep the workspace (cwd, sys.path[0] == "" under -c) out of sys.path while the worker imports its own
# modules, so a user file named json.py or numpy.py cannot hijack the worker. It is put back before user
# code runs, so user code can import modules it wrote into the workspace.
_CWD_ENTRY = sys.path.pop(0) if sys.path and sys.path[0] in ("", ".") else None

import json  # noqa: E402
import linecache  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

_HEADER = struct.Struct("<I")
_MAX_REQUEST_BYTES = 256 * 1024 * 1024

DEFAULT_PRELOAD = (
    "numpy",
    "pandas",
    "sklearn",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.preprocessing",
    "sklearn.model_selection",
    "sklearn.metrics",
)
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS")


def _read_exact(fd, n):
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(fd):
    """The next request, or None when the host closed the channel (it is gone: exit)."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > _MAX_REQUEST_BYTES:
        return None
    body = _read_exact(fd, size)
    return None if body is None else json.loads(body)


def _send(fd, message):
    body = json.dumps(message).encode("utf-8", "replace")
    view = memoryview(_HEADER.pack(len(body)) + body)
    while view:
        view = view[os.write(fd, view):]


def _set_limits(config):
    """Apply rlimits before any user code runs. Each is lowered only, never raised above the hard cap."""
    def lower(which, soft, hard=None):
        cur_soft, cur_hard = resource.getrlimit(which)
        hard = soft if hard is None else hard
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(which, (soft, hard))

    if config.get("memory_bytes"):
        # MemoryError in user code instead of the host's OOM killer picking a victim.
        lower(resource.RLIMIT_AS, config["memory_bytes"])
    if config.get("cpu_s"):
        # A lifetime cap (SIGXCPU at soft, SIGKILL at hard): catches runaway workers the host forgot.
        lower(resource.RLIMIT_CPU, config["cpu_s"], config["cpu_s"] + 5)
    if config.get("nproc"):
        # Processes and threads of the sandbox (a fork bomb stops here). The kernel counts them per uid
        # and user namespace, which is why the host never lets a sandbox run as uid 0.
        lower(resource.RLIMIT_NPROC, config["nproc"])
    if config.get("fsize_bytes"):
        # Python ignores SIGXFSZ, so an oversized write raises OSError(EFBIG) instead of killing us.
        lower(resource.RLIMIT_FSIZE, config["fsize_bytes"])
    lower(resource.RLIMIT_CORE, 0)  # a segfault must not drop a core file into the workspace


def _drop_privileges(config):
    """Become the workspace's unprivileged uid, with no capability left ("setuid" mode; see bwrap.py).

    Runs before anything but this file's own code; exits rather than run user code as root.
    """
    uid = config.get("uid")
    if uid is None:
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from uid 0 to another uid: the kernel clears every capability
    with open("/proc/self/status") as status:
        caps = [line.split()[1] for line in status if line.startswith(("CapEff:", "CapPrm:"))]
    if os.getresuid() != (uid, uid, uid) or any(int(c, 16) for c in caps):
        sys.stderr.write(f"mappa sandbox: could not drop privileges (uids {os.getresuid()}, caps {caps})\n")
        os._exit(70)
    try:  # changing uid made us non-dumpable: /proc/self would be root's; give it back to the code
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
    except (OSError, AttributeError):
        pass


def _preload(modules):
    errors = []
    for name in modules:
        try:
            __import__(name)
        except BaseException as exc:  # noqa: BLE001 - a missing library must not stop the worker
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return errors


def _clip(text, limit):
    # Not mappa_env.text.truncate_middle: this file runs in a bare interpreter in the sandbox and imports
    # nothing of mappa_env. It only bounds what crosses the pipe; the environment then cuts the output to
    # its max_output_chars with the one rule that agents and coaches see.
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half} chars truncated] ...\n{text[-half:]}"


def _describe(exc):
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - a user __str__ may raise anything
        message = "<unprintable>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _format_traceback(exc):
    """The traceback without the worker's own frames (they are noise to whoever reads it)."""
    tb = exc.__traceback__
    own = _execute.__code__.co_filename
    while tb is not None and tb.tb_frame.f_code.co_filename == own:
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # noqa: BLE001
        return _describe(exc) + "\n"


def _flush_std_streams():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - user code may have closed or replaced them
            pass


class _Worker:
    def __init__(self, config):
        self.config = config
        self.count = 0
        self.pid = os.getpid()
        self.max_text = int(config.get("max_error_chars", 65536))
        # Private copies of the protocol and output descriptors, invisible to child processes.
        self.req_fd = os.dup(0)
        self.resp_fd = int(config["resp_fd"])
        self.out_fd = os.dup(1)
        self.err_fd = os.dup(2)
        for fd in (self.req_fd, self.resp_fd, self.out_fd, self.err_fd):
            os.set_inheritable(fd, False)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # input() gets EOF instead of swallowing protocol bytes
        os.close(devnull)
        # Line buffering: output printed just before a hang or a kill has already reached the host.
        sys.stdout.reconfigure(line_buffering=True)
        self.main = types.ModuleType("__main__")
        self.main.__dict__["__builtins__"] = __builtins__
        self.stdout, self.stderr = sys.stdout, sys.stderr

    def serve(self):
        sys.modules["__main__"] = self.main
        sys.argv = ["-c"]
        if _CWD_ENTRY is not None:
            sys.path.insert(0, _CWD_ENTRY)
        while True:
            request = _recv(self.req_fd)
            if request is None:
                return
            _send(self.resp_fd, _execute(self, request.get("code", "")))

    def reset_std_streams(self):
        # Undo redirections a previous execution left behind, so each run starts captured.
        os.dup2(self.out_fd, 1)
        os.dup2(self.err_fd, 2)
        if sys.stdout is not self.stdout:
            sys.stdout = self.stdout
        if sys.stderr is not self.stderr:
            sys.stderr = self.stderr


def _execute(worker, code):
    worker.reset_std_streams()
    worker.count += 1
    filename = f"<action-{worker.count}>"
    # Register the source so tracebacks show the offending lines (as IPython does for cells).
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    status, error, tb_text, exit_code = "ok", "", "", None
    try:
        exec(compile(code, filename, "exec"), worker.main.__dict__)
    except SystemExit as exc:
        exit_code = exc.code
        if exc.code not in (None, 0):
            status, error = "error", f"SystemExit: {exc.code}"
    except BaseException as exc:  # noqa: BLE001 - every failure of user code is data for the host
        status, error, tb_text = "error", _describe(exc), _format_traceback(exc)
        del exc  # drop frames (and the arrays they hold) now, not at the next exception
    _flush_std_streams()
    if os.getpid() != worker.pid:
        # A child made by a bare os.fork() in user code came back here: it must not answer the host
        # or read the next request. (multiprocessing's children exit on their own.)
        os._exit(0 if status == "ok" else 1)
    if not isinstance(exit_code, (int, type(None))):
        exit_code = 1
    return {"status": status, "error": _clean(_clip(error, 2000)),
            "traceback": _clean(_clip(tb_text, worker.max_text)), "exit_code": exit_code}


def _clean(text):
    # Lone surrogates (from undecodable names or messages) would survive JSON and break the host later.
    return text.encode("utf-8", "replace").decode("utf-8")


def main(argv):
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    started = time.perf_counter()
    _drop_privileges(config)
    if config.get("chdir"):
        os.chdir(config["chdir"])
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")  # 2-core machines run several workers at once
    _set_limits(config)
    worker = _Worker(config)
    errors = _preload(config.get("preload", DEFAULT_PRELOAD))
    _send(worker.resp_fd, {"ready": True, "pid": os.getpid(), "python": sys.version.split()[0],
                           "startup_s": time.perf_counter() - started, "preload_errors": errors})
    worker.serve()


if __name__ == "__main__":
    main(sys.argv)
