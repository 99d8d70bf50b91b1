"""The local server launcher's failure paths: a clear error with the server's own words, and nothing left running.

Its success path (SmolLM2 behind ``transformers serve``) is what the ``llm_server`` fixture runs for the
``openai:`` coach tests.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mappa_env.local_server import LocalServerError, free_port, stop_process_group, wait_until_ready


def _start(code: str, log_path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_a_server_that_exits_is_reported_with_its_exit_code_and_log(tmp_path):
    log = tmp_path / "server.log"
    proc = _start("import sys; print('no such model: /nowhere', flush=True); sys.exit(3)", log)
    with pytest.raises(LocalServerError, match=r"(?s)exited with code 3.*no such model: /nowhere"):
        wait_until_ready(proc, f"http://127.0.0.1:{free_port()}/v1", log, timeout_s=60)


def test_a_server_that_never_answers_times_out_saying_so(tmp_path):
    log = tmp_path / "server.log"
    proc = _start("import time; print('loading', flush=True); time.sleep(600)", log)
    try:
        _wait_for(lambda: "loading" in log.read_text(), proc)  # the log line the error must carry is written
        began = time.monotonic()
        with pytest.raises(LocalServerError, match=r"(?s)did not answer .*/models within 2 s.*loading"):
            wait_until_ready(proc, f"http://127.0.0.1:{free_port()}/v1", log, timeout_s=2)
        assert time.monotonic() - began < 30  # it gave up, it did not wait for the process
    finally:
        stop_process_group(proc)
    assert proc.poll() is not None


def test_stopping_the_server_stops_its_children_too(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(600)")
    proc = _start(code, tmp_path / "server.log")
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", proc)
        child = int(pid_file.read_text())
    finally:
        stop_process_group(proc)
    assert proc.poll() is not None
    deadline = time.monotonic() + 30
    while _alive(child):
        assert time.monotonic() < deadline, f"the server's child {child} outlived it"
        time.sleep(0.1)


def test_a_child_left_behind_by_an_exited_server_is_stopped_too(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))")  # the server exits, its child sleeps on
    proc = _start(code, tmp_path / "server.log")
    try:
        _wait_for(lambda: proc.poll() is not None, proc=None)
        child = int(pid_file.read_text())
        assert _alive(child)
    finally:
        stop_process_group(proc)
    deadline = time.monotonic() + 30
    while _alive(child):
        assert time.monotonic() < deadline, f"the exited server's child {child} was left running"
        time.sleep(0.1)


def _wait_for(condition, proc: subprocess.Popen | None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc is None or proc.poll() is None, "the process exited early"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"  # a zombie is dead, only not reaped yet
    except (FileNotFoundError, ProcessLookupError):  # gone, or being reaped while read
        return False
