"""The ``docker`` sandbox: the same persistent worker as ``local``, one container per agent per episode.

Each :class:`DockerSandbox` runs :mod:`mappa_env.sandbox.worker` in a container made from a small image
(Python, numpy, pandas and scikit-learn; build it with ``python -m mappa_env sandbox build-image``) and
talks to it with the protocol of :mod:`mappa_env.sandbox.channel`. Docker cannot hand a container extra
descriptors, so the four streams of the protocol are named pipes (FIFOs) in a host control directory,
bind-mounted read-only at ``/mappa`` with copies of the sources the container runs. Docker's init starts
:mod:`~mappa_env.sandbox.supervisor`, which starts the worker (it opens the FIFOs) and, on the host's
word over its own stdin and stdout (the container's attach stream), stops the worker between actions
and kills whatever an action left behind. The container specification is :func:`container_spec`.

What is isolated:

- File system: the image's root file system, read-only; a private size-limited tmpfs ``/tmp`` and
  ``/dev/shm`` (memory-backed); the workspace read-write at ``/workspace`` (the working directory); the
  control directory read-only at ``/mappa``. Nothing else of the host is there; the image holds no project
  code and no dataset packages, so there is nothing of the tasks' sources to hide.
- Network: ``network_mode="none"``: only ``lo``.
- Processes: the container's own pid namespace with Docker's init as pid 1 and the supervisor below it,
  both root's but with no capability but SETUID, SETGID and KILL; the worker and everything it starts
  run as an unprivileged uid (the workspace's owner, or the per-workspace uid of
  :func:`~mappa_env.sandbox.local.workspace_uid` when the host runs as root; never root), which the
  worker takes before anything else runs, with no capability left, ``no-new-privileges``. So the code
  can neither signal, trace nor talk to init or the supervisor, nor change their limits. After each
  execution the worker is stopped (SIGSTOP) first and then every process but init, the supervisor and
  the worker is killed, until the next execution: nothing the code started runs between actions.
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
directory the engine sees when the engine's ``/tmp`` is private, as with the snap package). When a host
process dies, even of SIGKILL, its attach streams close and each supervisor kills its worker, so the
containers stop; they are not removed: ``docker rm -f $(docker ps -aq --filter label=org.mappa.sandbox)``
removes them (:func:`sandbox_containers` lists them).
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from mappa_env.sandbox.base import DEFAULT_EXEC_TIMEOUT_S, SandboxError, SandboxUnavailableError
from mappa_env.sandbox.bwrap import WORKSPACE, sandbox_env
from mappa_env.sandbox.channel import WorkerChannel, enlarge_pipe, write_all
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

# The container's command runs the supervisor (mappa_env.sandbox.supervisor, copied into the control
# directory with worker.py and procs.py) as a script, so that its sys.path[0] is the read-only control
# directory and not the workspace. argv after it: the control directory, "uid:gid", the worker's config.
SUPERVISOR = f"{CONTROL}/supervisor.py"
CONTROL_FILES = ("supervisor.py", "worker.py", "procs.py")  # copied from this package into the control dir
SUPERVISOR_TIMEOUT_S = 30.0  # a settle kills strays for at most 5 s; past this the engine is stuck


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
        "user": "0:0",  # Docker's init and the supervisor only: the worker becomes uid:gid before it runs
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
        # SETUID/SETGID for the worker's one change of uid (it keeps no capability after it); KILL for the
        # root supervisor to stop the worker and kill strays, which belong to the sandbox's uid
        "cap_add": ["SETUID", "SETGID", "KILL"],
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
        "stdin_open": True,  # the supervisor's commands; closed when the host's attach ends (StdinOnce)
        "tty": False,
    }


class ControlDir:
    """A host directory holding the protocol's FIFOs (``req``, ``resp``, ``out``, ``err``), owned by the
    sandbox's uid, and the sources the container runs (:data:`CONTROL_FILES`); mounted read-only into it."""

    FIFOS = ("req", "resp", "out", "err")

    def __init__(self, uid: int, gid: int) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="mappa-docker-"))
        try:
            os.chmod(self.path, 0o755)  # the container's uid must reach its FIFOs
            here = Path(__file__).parent
            for module in CONTROL_FILES:
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


class SupervisorLink:
    """The host's end of the supervisor's stdin and stdout: the container's attach stream.

    The engine frames what a container without a tty writes: an 8-byte header (the stream, 1 for
    stdout, three zero bytes, the payload's big-endian length) before each chunk. The supervisor answers
    each command line with one JSON line.
    """

    _FRAME = struct.Struct(">BxxxL")

    def __init__(self, stream: Any) -> None:
        self._stream = stream  # the SDK's socket object
        # A descriptor of our own on the same connection; blocking (the flag is the connection's: the
        # SDK's object is not used again), read only when poll() says so.
        self.fd: int | None = os.dup(stream.fileno())
        os.set_blocking(self.fd, True)
        self._raw = b""  # bytes read and not yet parsed into frames
        self._text = b""  # stdout payload, not yet a whole line

    def ask(self, command: str, timeout_s: float = SUPERVISOR_TIMEOUT_S) -> dict:
        """Send one command; its answer. Raises :class:`SandboxError` when none comes."""
        fd = self.fd  # once: close() may run in another thread (a kill while a run waits here)
        if fd is None:
            raise SandboxError("the supervisor's stream is closed")
        try:
            write_all(fd, command.encode() + b"\n")
            poller = select.poll()  # not select(): descriptors past 1024 are common with many sandboxes
            poller.register(fd, select.POLLIN)
            deadline = time.monotonic() + timeout_s
            while b"\n" not in self._text:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SandboxError(f"the supervisor did not answer {command!r} within {timeout_s:g} s")
                if not poller.poll(left * 1000):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise SandboxError("the supervisor's stream ended (the container is gone)")
                self._raw += chunk
                self._parse()
        except OSError as exc:  # EBADF included: closed meanwhile
            raise SandboxError(f"the supervisor's stream broke ({exc})") from exc
        line, _, self._text = self._text.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError as exc:
            raise SandboxError(f"the supervisor sent {line[:200]!r}, not an answer") from exc

    def _parse(self) -> None:
        size = self._FRAME.size
        while len(self._raw) >= size:
            stream, length = self._FRAME.unpack_from(self._raw)
            if len(self._raw) < size + length:
                return
            if stream == 1:
                self._text += self._raw[size:size + length]
            self._raw = self._raw[size + length:]

    def close(self) -> None:
        """End the connection (the engine then closes the supervisor's stdin)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            try:  # shut the connection itself down: the SDK's objects may keep it open until collected
                with socket.socket(fileno=os.dup(fd)) as connection:
                    connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            os.close(fd)
        try:
            self._stream.close()
        except Exception:  # noqa: BLE001 - a half-closed SDK socket: nothing is left to release
            pass


class _ContainerProcess:
    """A worker running in a container; implements :class:`~mappa_env.sandbox.channel.WorkerProcess`.

    A thread waits on the engine for the container's exit and then closes a pipe, :attr:`exit_fd`: the
    channel notices a death even before the worker opened its FIFOs. Between actions the worker is
    stopped by the container's supervisor, through :attr:`link`.
    """

    signal_exit_codes = True  # docker-init exits with 128 + N when the worker dies from signal N

    def __init__(self, container: Any, control: ControlDir, quota: WorkspaceQuota, req_fd: int) -> None:
        self.container, self.control, self.quota = container, control, quota
        self.link: SupervisorLink | None = None  # attached before the container starts
        self.req_fd = req_fd
        self.req_swapped = False
        self.broken: str | None = None  # why the running execution must stop (the engine failed us)
        self.removed = False
        self.exit_code: int | None = None
        self.exited = threading.Event()
        self.exit_fd: int | None = None
        self._exit_w: int | None = None

    def attach(self) -> None:
        """Connect to the supervisor's stdin and stdout (before the start, so that nothing is missed)."""
        self.link = SupervisorLink(self.container.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1}))

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
            if self.link is not None:
                self.link.close()
        fd, self.exit_fd = self.exit_fd, None  # taken first: close() and a run may kill at the same time
        if fd is not None:
            self.exited.wait(5.0)  # the watcher sees the removal at once; then poll() has the exit code
            os.close(fd)

    def resume(self) -> None:
        try:
            answer = self.link.ask("cont")
            if not answer.get("ok"):
                raise SandboxError(answer.get("error", str(answer)))
        except SandboxError as exc:  # dead, or a broken engine: the run stops at the first check
            self.broken = f"the sandbox's supervisor could not let the worker go on ({exc})"
        if not self.req_swapped:  # the worker has opened req (it answered "ready")
            _writer_only(self.req_fd, self.control.path / "req")
            self.req_swapped = True
        self.quota.start()

    def settle(self) -> int | None:
        try:
            return int(self.link.ask("settle")["killed"])  # an answer without "killed" is a failure
        except (SandboxError, KeyError, TypeError, ValueError):  # the channel kills the worker then
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
        command = [IMAGE_PYTHON, SUPERVISOR, CONTROL, f"{self.uid}:{self.gid}", json.dumps(self._config)]
        spec = container_spec(self.workspace, control.path, command=command, image=self.image,
                              memory_mb=self.memory_mb, cpus=self.cpus, max_processes=self.max_processes,
                              tmp_mb=self.tmp_mb, uid=self.uid, gid=self.gid,
                              name=f"{self.tag}-{uuid.uuid4().hex[:6]}")
        process = None
        try:
            self.container = self.client.containers.create(**spec)
            process = _ContainerProcess(self.container, control, WorkspaceQuota(self.workspace, self.quota),
                                        fds["req"])
            process.attach()
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
