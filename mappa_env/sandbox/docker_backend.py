"""The ``docker`` sandbox: the same persistent worker as ``local``, one container per agent per episode.

Each :class:`DockerSandbox` runs :mod:`mappa_env.sandbox.worker` in a container made from a small image
(Python, numpy, pandas and scikit-learn; build it with ``python -m mappa_env sandbox build-image``) and
talks to it with the protocol of :mod:`mappa_env.sandbox.channel`. Docker cannot hand a container extra
descriptors, so the four streams of the protocol are named pipes (FIFOs) in a host control directory,
bind-mounted read-only at ``/mappa`` with a copy of the worker's source; a short bootstrap opens them
in the container and then runs the worker. The container specification is :func:`container_spec`.

What is isolated:

- File system: the image's root file system, read-only; a private size-limited tmpfs ``/tmp`` and
  ``/dev/shm`` (memory-backed); the workspace read-write at ``/workspace`` (the working directory); the
  control directory read-only at ``/mappa``. Nothing else of the host is there; the image holds no project
  code and no dataset packages, so there is nothing of the tasks' sources to hide.
- Network: ``network_mode="none"``: only ``lo``.
- Processes: the container's own pid namespace with Docker's init as pid 1, root's but with no capability
  but SETUID/SETGID; the worker and everything it starts run as an unprivileged uid (the workspace's owner,
  or the per-workspace uid of :func:`~mappa_env.sandbox.local.workspace_uid` when the host runs as root;
  never root), which the bootstrap takes before anything else runs, with no capability left,
  ``no-new-privileges``. So the code can neither signal init nor change its limits. Between executions
  every process but init and the worker is killed and the container is paused (cgroup freezer).
- Environment: the same scrubbed one as bubblewrap's (:func:`~mappa_env.sandbox.bwrap.sandbox_env`):
  no API key or token of the host leaks in.
- Resources, enforced by the kernel through Docker: ``memory_mb`` for the whole container with no swap
  (tmpfs pages count; an OOM kill ends the execution as ``"killed"``), ``max_processes`` processes and
  threads (pids cgroup), ``cpus`` CPUs' worth of time, a 1 GiB file-size cap and no core dumps. In the
  worker as with ``local``: an address-space limit of ``memory_mb`` (a blow-up is a ``MemoryError``) and a
  lifetime CPU-time cap. From the host: the workspace quota (``disk_mb``, ``max_files``, measured every
  0.25 s), the wall-clock timeout of each execution and the head+tail cap on captured output.

What is *not* isolated: the kernel is shared (a container is not a VM: a kernel exploit escapes; run the
engine with a gVisor or Kata runtime for more). The engine must run on this machine with the same view
of its files (bind mounts and FIFOs): a remote ``DOCKER_HOST``, Docker Desktop's VM, rootless Docker and
``userns-remap`` are not supported, and the control directory is made under ``TMPDIR`` (point it at a
directory the engine sees when the engine's ``/tmp`` is private, as with the snap package). A thread that
an action leaves running inside the worker can start a process in the milliseconds between the sweep and
the freeze; it stays frozen and is killed at the end of the next action. The containers of a host
process killed with SIGKILL may be left behind; ``docker rm -f $(docker ps -aq --filter
label=org.mappa.sandbox)`` removes them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from mappa_env.sandbox.base import DEFAULT_EXEC_TIMEOUT_S, SandboxError, SandboxUnavailableError
from mappa_env.sandbox.bwrap import WORKSPACE, sandbox_env
from mappa_env.sandbox.channel import WorkerChannel, enlarge_pipe
from mappa_env.sandbox.persistent import FSIZE_BYTES, WorkerSandbox, worker_config
from mappa_env.sandbox.quota import WorkspaceQuota

#: Bump when the Dockerfile changes, so that an old image is never taken for the new one.
IMAGE_VERSION = 3
DEFAULT_IMAGE = f"mappa-sandbox:{IMAGE_VERSION}"
IMAGE_DIR = Path(__file__).with_name("image")  # the Dockerfile, and strip.py that the build runs
CONTROL = "/mappa"  # where the control directory appears in the container
IMAGE_PYTHON = "python3"  # found on the container's PATH (/usr/local/bin in the official images)
LABEL = "org.mappa.sandbox"
RESP_FD = 3  # the worker's answers; requests, output and errors are fds 0, 1 and 2
_POOL_SIZE = 256  # each live sandbox holds one connection waiting for its container's exit

OR_LOCAL = "or use the bubblewrap backend with sandbox=\"local\""

# Runs in the container (and in tests, in a plain subprocess): open the FIFOs onto the descriptors the
# worker expects, then run its source. stderr first, so that any later failure reaches the host. Only
# `os` and `sys` are imported: they are loaded before sys.path is read, so a workspace file cannot
# hijack them (the worker guards its own imports).
#
# Docker's init (pid 1) runs as root, with no capability but SETUID and SETGID, which the bootstrap spends at
# once to become the sandbox's uid for good (argv: "uid:gid"): an init of the sandbox's own uid would take
# the code's SIGTERM and forward it to the worker, and let the code change init's limits.
BOOTSTRAP = (
    "import os, sys\n"
    "d = sys.argv.pop(1)\n"
    "uid, gid = (int(x) for x in sys.argv.pop(1).split(':'))\n"
    "if (os.getuid(), os.getgid()) != (uid, gid):\n"
    "    os.setgroups([])\n"
    "    os.setgid(gid)\n"
    "    os.setuid(uid)\n"
    f"for name, fd, mode in (('err', 2, os.O_WRONLY), ('out', 1, os.O_WRONLY), ('req', 0, os.O_RDONLY),"
    f" ('resp', {RESP_FD}, os.O_WRONLY)):\n"
    "    f = os.open(d + '/' + name, mode)\n"
    "    if f != fd:\n"
    "        os.dup2(f, fd)\n"
    "        os.close(f)\n"
    "with open(d + '/worker.py', 'rb') as f:\n"
    "    src = f.read()\n"
    "exec(compile(src, '<mappa-sandbox-worker>', 'exec'))"
)

# Runs in the container after each execution, as the sandbox's uid (with every capability dropped, even
# root could not signal another uid's processes): stop the worker, kill every other process below init
# until none is left (mappa_env.sandbox.procs, copied into the control directory), let the worker go on.
# argv: control directory, init's pid, the worker's pid (0 at the first call: init's only child).
SETTLE = (
    "import json, signal, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "import procs\n"
    "root, worker = int(sys.argv[2]), int(sys.argv[3])\n"
    "if not worker:\n"
    "    tree = procs.descendants(root)\n"
    "    if not tree:\n"
    "        sys.exit(3)\n"
    "    worker = tree[0]\n"
    "procs.signal_all([worker], signal.SIGSTOP)\n"
    "killed = procs.kill_strays(root, keep=[worker])\n"
    "procs.signal_all([worker], signal.SIGCONT)\n"
    "print(json.dumps({'worker': worker, 'killed': killed}))\n"
    "sys.exit(0 if killed is not None else 4)"
)


# -- the engine -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _probe() -> Any:
    """A client of a reachable engine, or the reason there is none (a str). Probed once per process."""
    try:
        import docker
    except ImportError as exc:
        return (f"the Docker SDK for Python is not installed ({exc}): install it with `pip install docker` "
                "(or `pip install 'mappa[docker]'`)")
    where = _engine_address()
    try:
        client = docker.from_env(max_pool_size=_POOL_SIZE)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, connection errors, bad DOCKER_HOST values
        return (f"no Docker engine is reachable at {where} ({type(exc).__name__}: {exc}): start the engine "
                "(e.g. `sudo systemctl start docker`) or set DOCKER_HOST to a running engine on this machine")
    return client


def _engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"


def docker_available() -> tuple[bool, str]:
    """Whether a Docker engine is reachable (probed once per process), with its address or the reason."""
    client = _probe()
    if isinstance(client, str):
        return False, client
    return True, f"Docker engine at {_engine_address()}"


def require_docker(image: str | None = None, client: Any = None) -> Any:
    """A docker client (``client`` if given), and ``image`` present in its engine; else
    :class:`SandboxUnavailableError` saying why and how to fix it."""
    if client is None:
        client = _probe()
        if isinstance(client, str):
            raise SandboxUnavailableError(f"The 'docker' sandbox cannot run here: {client}; {OR_LOCAL}.")
    if image is not None:
        try:
            client.images.get(image)
        except Exception as exc:  # noqa: BLE001 - ImageNotFound (404) or an engine error
            missing = _status(exc) == 404
            what = "is not in the Docker engine" if missing else f"could not be looked up ({exc})"
            raise SandboxUnavailableError(
                f"The 'docker' sandbox image {image!r} {what}. Build it with `python -m mappa_env sandbox "
                f"build-image` (`--tag {image}` for another tag) or pass image=<an image with Python, numpy, "
                f"pandas and scikit-learn>; {OR_LOCAL}."
            ) from exc
    return client


def sandbox_containers(client: Any = None) -> list[str]:
    """Names of the sandbox containers in the engine, running or stopped (every container this backend
    starts carries :data:`LABEL`); for finding what a killed host process left behind."""
    client = require_docker(client=client)
    return sorted(c.name for c in client.containers.list(all=True, filters={"label": LABEL}))


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a docker SDK error (404: no such container or image), without importing it."""
    return getattr(exc, "status_code", None)


#: The base image when none is given: a public Python image, for users whose engine reaches a registry.
DEFAULT_BASE = "python:3.12-slim"
#: What the image installs, at the versions the host has (``pip download`` of those, for the base's Python).
IMAGE_PACKAGES = ("numpy", "pandas", "scikit-learn")
# Prints the base image's Python version and the wheel platforms its interpreter accepts, most specific first.
_BASE_PROBE = (
    "import platform, sys, sysconfig\n"
    "arch = platform.machine()\n"
    "glibc = platform.libc_ver()\n"
    "tags = []\n"
    "if glibc[0] == 'glibc':\n"
    "    major, minor = (int(x) for x in glibc[1].split('.')[:2])\n"
    "    tags = [f'manylinux_{major}_{m}_{arch}' for m in range(minor, 16, -1)] + [f'manylinux2014_{arch}']\n"
    "print(f'{sys.version_info[0]}.{sys.version_info[1]}', *tags)"
)


def build_image(tag: str = DEFAULT_IMAGE, *, base: str = DEFAULT_BASE, client: Any = None, nocache: bool = False,
                pull: bool = False, log=print) -> str:
    """Build the sandbox image on ``base`` from the Dockerfile shipped in ``mappa_env/sandbox/image``; return ``tag``.

    The build needs no network of its own: the host downloads (``pip download``) the wheels of numpy, pandas
    and scikit-learn at the versions it has itself, for the base image's Python and platform (read by
    running it), and pip installs them inside from the build context. ``base`` is any image with ``python3``
    and pip on a glibc system: the default public image (pulled when missing, so it needs a registry), or
    one made offline (``debootstrap --variant=minbase``, then ``docker import``; docs/sandbox.md). ``log``
    receives each line of progress.

    Raises:
        SandboxUnavailableError: no engine (the message says how to fix it).
        SandboxError: the base cannot be read, the wheels cannot be downloaded, or the build failed.
    """
    client = require_docker(client=client)
    python, platforms = _base_python(client, base, pull=pull, log=log)
    with tempfile.TemporaryDirectory(prefix="mappa-image-") as context:
        shutil.copyfile(IMAGE_DIR / "Dockerfile", Path(context) / "Dockerfile")
        _download_wheels(Path(context) / "wheels", python=python, platforms=platforms, log=log)
        shutil.copyfile(IMAGE_DIR / "strip.py", Path(context) / "wheels" / "strip.py")
        stream = client.api.build(path=context, tag=tag, rm=True, forcerm=True, nocache=nocache, pull=False,
                                  decode=True, labels={LABEL: "image"}, buildargs={"BASE": base})
        for chunk in stream:
            if "error" in chunk:
                raise SandboxError(f"building the sandbox image {tag!r} failed: {str(chunk['error']).strip()}")
            text = chunk.get("stream") or chunk.get("status") or ""
            if text.strip():
                log(text.rstrip())
    return tag


def host_versions() -> dict[str, str]:
    """The versions of :data:`IMAGE_PACKAGES` installed on the host, which the image gets too."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in IMAGE_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError as exc:
            raise SandboxError(f"{name} is not installed on this machine, so its version for the sandbox image is "
                               f"unknown: install mappa's dependencies (`pip install mappa`) first") from exc
    return versions


def _base_python(client: Any, base: str, *, pull: bool, log) -> tuple[str, list[str]]:
    """The base image's Python version (``3.12``) and the wheel platforms it accepts, by running it."""
    try:
        if pull:
            log(f"pulling {base}")
            client.images.pull(base)
        else:
            _image_or_pull(client, base, log)
        output = client.containers.run(base, ["python3", "-c", _BASE_PROBE], remove=True, network_mode="none",
                                       labels={LABEL: "probe"})
    except SandboxError:
        raise
    except Exception as exc:  # noqa: BLE001 - ImageNotFound, an unreachable registry, no python3 in the base
        raise SandboxError(f"could not run python3 in the base image {base!r} ({exc}): give --base an image with "
                           f"python3 and pip that this engine has (`docker images`); one can be made offline with "
                           f"debootstrap and `docker import` (docs/sandbox.md)") from exc
    python, *platforms = output.decode("utf-8", "replace").split()
    if not platforms:
        raise SandboxError(f"the base image {base!r} is not a glibc Linux system, for which pip has no "
                           f"manylinux wheels: use a Debian- or Ubuntu-based image")
    log(f"base {base}: Python {python}, wheels for {platforms[0]} and older")
    return python, platforms


def _image_or_pull(client: Any, base: str, log) -> None:
    try:
        client.images.get(base)
    except Exception as exc:  # noqa: BLE001 - ImageNotFound (404): pull it
        if _status(exc) != 404:
            raise
        log(f"{base} is not in the engine: pulling it")
        client.images.pull(base)


def _download_wheels(wheels: Path, *, python: str, platforms: list[str], log) -> None:
    """``pip download`` the host's versions of :data:`IMAGE_PACKAGES` (with their dependencies) for the base
    image's Python into ``wheels``, with a ``requirements.txt`` the Dockerfile installs from."""
    import subprocess
    import sys

    from mappa_env.tasks.builtin import source_data_subdirs

    pins = [f"{name}=={v}" for name, v in host_versions().items()]
    wheels.mkdir()
    (wheels / "requirements.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    # the builtin tasks' source datasets that these packages ship (scikit-learn's iris...): left out of the image,
    # as the local backend covers them, so that agent code cannot reload a source and match the hidden labels
    (wheels / "strip.txt").write_text("".join(f"{m} {d}\n" for m, d in source_data_subdirs()), encoding="utf-8")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
               *(arg for platform in platforms for arg in ("--platform", platform)), "--dest", str(wheels), *pins]
    log(f"downloading wheels for Python {python}: {' '.join(pins)}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(f"pip could not download the sandbox image's wheels ({' '.join(pins)} for Python "
                           f"{python}): {done.stderr.strip()[-600:]}")


# -- the container ----------------------------------------------------------------------------------


def container_env() -> dict[str, str]:
    """The container's whole environment: bubblewrap's scrubbed one, with the image's PATH."""
    return {**sandbox_env(f"/usr/local/bin/{IMAGE_PYTHON}"), "PATH": "/usr/local/bin:/usr/bin:/bin"}


def container_spec(workspace: str | os.PathLike[str], control_dir: str | os.PathLike[str], *,
                   command: list[str], image: str = DEFAULT_IMAGE, memory_mb: int = 4096, cpus: float = 1.0,
                   max_processes: int = 256, tmp_mb: int = 512, uid: int, gid: int,
                   name: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.create(...)``: the whole security profile of a sandbox.

    Pure (no engine needed), so every property is checked by the tests.

    Raises:
        ValueError: ``uid`` or ``gid`` is 0 (a sandbox never runs as root), or a limit is not positive.
    """
    if uid == 0 or gid == 0:
        raise ValueError("a docker sandbox never runs as root: pass an unprivileged uid and gid")
    if min(memory_mb, max_processes, tmp_mb) <= 0 or not cpus > 0:
        raise ValueError("memory_mb, cpus, max_processes and tmp_mb must be positive")
    tmpfs = f"rw,nosuid,nodev,size={tmp_mb}m,mode=1777"  # world-writable and sticky, like the host's /tmp
    return {
        "image": image,
        "command": command,
        "name": name,
        "user": "0:0",  # Docker's init only: the bootstrap becomes uid:gid before anything else runs
        "working_dir": WORKSPACE,
        "environment": container_env(),
        "volumes": {os.fspath(workspace): {"bind": WORKSPACE, "mode": "rw"},
                    os.fspath(control_dir): {"bind": CONTROL, "mode": "ro"}},  # FIFOs stay writable on ro
        "tmpfs": {"/tmp": tmpfs, "/dev/shm": tmpfs},
        "read_only": True,
        "network_mode": "none",
        "mem_limit": memory_mb << 20,
        "memswap_limit": memory_mb << 20,  # equal to mem_limit: no swap
        "pids_limit": max_processes,
        "nano_cpus": int(cpus * 1e9),
        "cap_drop": ["ALL"],
        "cap_add": ["SETUID", "SETGID"],  # for the bootstrap's one change of uid; gone from every process after it
        "security_opt": ["no-new-privileges"],
        "privileged": False,
        "init": True,  # reaps orphans; exit code 128 + N when the worker dies from signal N
        "ulimits": [{"Name": "core", "Soft": 0, "Hard": 0},
                    {"Name": "fsize", "Soft": FSIZE_BYTES, "Hard": FSIZE_BYTES}],
        "ipc_mode": "private",
        "hostname": "sandbox",
        "labels": {LABEL: "1", f"{LABEL}.workspace": os.fspath(workspace), f"{LABEL}.host-pid": str(os.getpid())},
        "restart_policy": {"Name": "no"},
        "auto_remove": False,  # the exit code must stay readable after the worker dies
        "stdin_open": False,
        "tty": False,
    }


class ControlDir:
    """A host directory holding the protocol's FIFOs (``req``, ``resp``, ``out``, ``err``) and the worker's
    source, owned by the sandbox's uid and mounted read-only into its container."""

    FIFOS = ("req", "resp", "out", "err")

    def __init__(self, uid: int, gid: int) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="mappa-docker-"))
        try:
            os.chmod(self.path, 0o755)  # the container's uid must reach its FIFOs
            here = Path(__file__).parent
            for module in ("worker.py", "procs.py"):
                shutil.copyfile(here / module, self.path / module)
                os.chmod(self.path / module, 0o644)
            for name in self.FIFOS:
                os.mkfifo(self.path / name, 0o600)
                if os.geteuid() == 0:
                    os.chown(self.path / name, uid, gid)
        except BaseException:
            self.remove()
            raise

    def open_host_ends(self) -> dict[str, int]:
        """The host's descriptors, opened without blocking although no container has opened the other ends.

        ``resp``/``out``/``err`` are non-blocking read ends: until a writer connects, poll() reports nothing
        on them (no POLLHUP before a first writer), so a container still starting is not taken for a dead
        one. ``req`` is opened read-write, which never blocks on Linux (see :meth:`_ContainerProcess.resume`).
        """
        fds: dict[str, int] = {}
        try:
            for name in ("resp", "out", "err"):
                fds[name] = os.open(self.path / name, os.O_RDONLY | os.O_NONBLOCK)
            fds["req"] = os.open(self.path / "req", os.O_RDWR)
            enlarge_pipe(fds["req"])
        except OSError:
            for fd in fds.values():
                os.close(fd)
            raise
        return fds

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _writer_only(fd: int, path: Path) -> None:
    """Make ``fd`` (req, opened read-write) a plain write end, now that the worker holds the read end.

    While the host also reads from req, a write to a dead worker would never fail and, once the FIFO is
    full, would block forever; as a plain writer it gets EPIPE (``BrokenPipeError``: "dead").
    """
    try:
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # never blocks: fd itself is still a reader
    except OSError:
        return
    os.set_blocking(writer, True)
    os.dup2(writer, fd, inheritable=False)  # same number: the channel's descriptor stays valid
    os.close(writer)


class _ContainerProcess:
    """A worker running in a container; implements :class:`~mappa_env.sandbox.channel.WorkerProcess`.

    A thread waits on the engine for the container's exit and then closes a pipe, :attr:`exit_fd`: the
    channel notices a death even before the worker opened its FIFOs.
    """

    signal_exit_codes = True  # docker-init exits with 128 + N when the worker dies from signal N

    def __init__(self, container: Any, control: ControlDir, quota: WorkspaceQuota, req_fd: int, user: str) -> None:
        self.container, self.control, self.quota = container, control, quota
        self.user = user  # "uid:gid" of the worker: the settle step runs as it (init is root's)
        self.req_fd = req_fd
        self.req_swapped = False
        self.worker_pid = 0  # in the container's pid namespace; found at the first settle
        self.paused = False
        self.broken: str | None = None  # why the running execution must stop (the engine failed us)
        self.removed = False
        self.exit_code: int | None = None
        self.exited = threading.Event()
        self.exit_fd: int | None = None
        self._exit_w: int | None = None

    def watch(self) -> None:
        """Start the exit watcher (after the container started: a created one counts as not running)."""
        self.exit_fd, self._exit_w = os.pipe()
        threading.Thread(target=self._watch, name=f"mappa-docker-wait-{self.container.name}", daemon=True).start()

    def _watch(self) -> None:
        code = None
        while code is None:
            try:
                code = int(self.container.wait().get("StatusCode", -signal.SIGKILL))
            except Exception as exc:  # noqa: BLE001 - removed (404), or the connection broke: look again
                if self.removed or _status(exc) == 404:
                    code = -signal.SIGKILL  # removed: by us, or from outside
                else:
                    time.sleep(1.0)
        self.exit_code = code
        self.exited.set()
        os.close(self._exit_w)  # the read end becomes readable (EOF)

    def poll(self) -> int | None:
        return self.exit_code if self.exited.is_set() else None

    def wait(self, timeout: float) -> int | None:
        self.exited.wait(timeout)
        return self.poll()

    def kill(self) -> None:
        if not self.removed:
            self.removed = True
            try:
                self.container.remove(force=True)  # kills every process of the container
            except Exception as exc:  # noqa: BLE001
                if _status(exc) != 404:
                    warnings.warn(f"could not remove sandbox container {self.container.name}: {exc}; remove it "
                                  f"with `docker rm -f {self.container.name}`", RuntimeWarning, stacklevel=2)
            self.control.remove()  # open descriptors keep working; the names go
        fd, self.exit_fd = self.exit_fd, None  # taken first: close() and a run may kill at the same time
        if fd is not None:
            self.exited.wait(5.0)  # the watcher sees the removal at once; then poll() has the exit code
            os.close(fd)

    def resume(self) -> None:
        if self.paused:
            try:
                self.container.unpause()
                self.paused = False
            except Exception as exc:  # noqa: BLE001 - dead, or a broken engine: the run stops at the first check
                self.broken = f"the Docker engine could not unpause the sandbox container ({exc})"
        if not self.req_swapped:  # the worker has opened req (it answered "ready")
            _writer_only(self.req_fd, self.control.path / "req")
            self.req_swapped = True
        self.quota.start()

    def settle(self) -> int | None:
        command = [IMAGE_PYTHON, "-I", "-c", SETTLE, CONTROL, "1", str(self.worker_pid)]
        try:
            code, output = self.container.exec_run(command, workdir="/", user=self.user)
            if code != 0:
                return None
            result = json.loads(output.decode("utf-8", "replace").strip().splitlines()[-1])
            self.worker_pid = int(result["worker"])
            self.container.pause()  # nothing runs between actions, like the local backend's SIGSTOP
            self.paused = True
            return int(result["killed"])
        except Exception:  # noqa: BLE001 - the channel kills the worker when this fails
            return None

    def check(self) -> str | None:
        return self.broken or self.quota.check()


# -- the sandbox ------------------------------------------------------------------------------------


def _sandbox_ids(workspace: Path) -> tuple[int, int]:
    """The container's uid and gid: the workspace's own uid when the host runs as root, else ours."""
    if os.geteuid() == 0:
        from mappa_env.sandbox.local import workspace_uid

        uid = workspace_uid(workspace)
        return uid, uid
    return os.getuid(), os.getgid() or os.getuid()


class DockerSandbox(WorkerSandbox):
    """A persistent Python worker for one agent in its own container (see the module docstring).

    Like :class:`~mappa_env.sandbox.local.LocalSandbox`: the container starts in ``__init__`` and the
    first :meth:`run` waits for the worker's imports; calls are serialised; :meth:`close` removes the
    container.

    Args:
        workspace: directory bound read-write at ``/workspace`` and used as working directory. Must exist.
        persistent: keep variables between :meth:`run` calls. ``False`` starts a fresh container per run.
        timeout_s: default wall-clock limit per execution; :meth:`run` may override it.
        memory_mb: memory of the whole container (no swap), and each process's address space, in MiB.
        max_output_bytes: cap per stream; beyond it the middle is dropped and head and tail kept.
        tmp_mb: size of the container's ``/tmp`` and ``/dev/shm`` (each; they count as memory), in MiB.
        cpu_limit_s: lifetime CPU-time limit of one worker.
        max_processes: processes and threads the container may hold at once (``pids_limit``).
        disk_mb: disk quota of the workspace in MiB (task files included), checked by the host.
        max_files: how many files and directories the workspace may hold, checked likewise.
        startup_timeout_s: how long the first run waits for the container and the worker's imports.
        preload: modules the worker imports at start (default: numpy, pandas and common sklearn parts).
        image: the image to run (default :data:`DEFAULT_IMAGE`, built by ``python -m mappa_env sandbox
            build-image``); another must have ``python3`` on ``/usr/local/bin:/usr/bin:/bin``.
        cpus: CPUs' worth of time the container may use (``nano_cpus``).
        client: a ``docker.DockerClient`` to use (default: one from the environment, ``DOCKER_HOST``).

    Raises:
        SandboxUnavailableError: no Docker SDK, no reachable engine, or no such image (the message says
            how to fix it).
        ValueError: bad arguments, e.g. a missing workspace.
    """

    def __init__(self, workspace: str | os.PathLike[str], *, persistent: bool = True, timeout_s: float = DEFAULT_EXEC_TIMEOUT_S,
                 memory_mb: int = 4096, max_output_bytes: int = 64 * 1024, tmp_mb: int = 512,
                 cpu_limit_s: float = 3600.0, max_processes: int = 256, disk_mb: int = 4096,
                 max_files: int = 20_000, startup_timeout_s: float = 120.0,
                 preload: tuple[str, ...] | None = None, image: str = DEFAULT_IMAGE, cpus: float = 1.0,
                 client: Any = None) -> None:
        super().__init__(workspace, persistent=persistent, timeout_s=timeout_s,
                         max_output_bytes=max_output_bytes, startup_timeout_s=startup_timeout_s,
                         memory_mb=memory_mb, tmp_mb=tmp_mb, max_processes=max_processes, disk_mb=disk_mb,
                         max_files=max_files)
        if not cpus > 0:
            raise ValueError("cpus must be positive")
        self.client = require_docker(image, client)  # before anything is changed on disk
        self.image, self.cpus = image, cpus
        self.uid, self.gid = _sandbox_ids(self.workspace)
        # No "nproc": the kernel counts RLIMIT_NPROC per uid across every container and host process of
        # that uid; the container's pids limit does this job for the container alone.
        self._config = worker_config(memory_mb=memory_mb, cpu_limit_s=cpu_limit_s,
                                     max_output_bytes=max_output_bytes, tag=self.tag, preload=preload,
                                     resp_fd=RESP_FD)
        self.container: Any = None
        self._open()

    def _start(self) -> WorkerChannel:
        control = ControlDir(self.uid, self.gid)
        try:
            fds = control.open_host_ends()
        except OSError as exc:
            control.remove()
            raise SandboxError(f"could not open the sandbox's FIFOs in {control.path}: {exc}") from exc
        command = [IMAGE_PYTHON, "-c", BOOTSTRAP, CONTROL, f"{self.uid}:{self.gid}", json.dumps(self._config)]
        spec = container_spec(self.workspace, control.path, command=command, image=self.image,
                              memory_mb=self.memory_mb, cpus=self.cpus, max_processes=self.max_processes,
                              tmp_mb=self.tmp_mb, uid=self.uid, gid=self.gid,
                              name=f"{self.tag}-{uuid.uuid4().hex[:6]}")
        process = None
        try:
            self.container = self.client.containers.create(**spec)
            process = _ContainerProcess(self.container, control, WorkspaceQuota(self.workspace, self.quota),
                                        fds["req"], f"{self.uid}:{self.gid}")
            self.container.start()
        except Exception as exc:  # noqa: BLE001 - any engine error: broken infrastructure
            if process is not None:
                process.kill()
            control.remove()
            for fd in fds.values():
                os.close(fd)
            raise SandboxError(f"Docker could not start the sandbox container from {self.image!r}: {exc}") from exc
        process.watch()
        return WorkerChannel(process, req=fds["req"], resp=fds["resp"], out=fds["out"], err=fds["err"])

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("persistent" if self.persistent else "fresh-per-run")
        return f"DockerSandbox({str(self.workspace)!r}, {self.image}, {state})"
