"""A local OpenAI-compatible server for a model directory: ``transformers serve`` on loopback, offline.

For an ``openai:`` coach (or team) without any hosted endpoint: the tests' ``llm_server`` fixture and
``benchmarks/coach_bench_llm.py`` start the packaged SmolLM2 this way, and so can a user::

    with transformers_serve(model_dir, log_path=Path("server.log")) as base_url:
        coach = make_coach(f"openai:{model_dir}", base_url=base_url)

Needs ``transformers[serving]`` (FastAPI and uvicorn); nothing here imports torch: the server is a
child process in its own process group, stopped with everything it started when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

# `transformers serve` as the installed transformers CLI runs it (the console script may not be on PATH)
SERVE_BOOT = ("import sys; from transformers.cli.transformers import main; "
              "sys.argv[0] = 'transformers'; sys.exit(main())")
DEFAULT_STARTUP_TIMEOUT_S = 300.0


class LocalServerError(RuntimeError):
    """The server exited or never answered; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def offline_env(threads: int | None = None) -> dict[str, str]:
    """This process's environment with the Hugging Face hub off (and the thread count set, if given)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError as exc:
        return f"<could not read {path}: {exc}>"


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process's group, SIGKILL it if the leader has not exited after a grace period, and
    SIGKILL whatever of the group is left once it has: a server's workers can outlive it."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_until_ready(proc: subprocess.Popen, base_url: str, log_path: Path, timeout_s: float) -> None:
    """Return once ``base_url``/models answers 200 with JSON; raise :class:`LocalServerError` if the process
    exits first or ``timeout_s`` passes (a model of 135 M parameters loads in seconds; 300 s is generous)."""
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalServerError(f"the LLM server exited with code {proc.returncode} before answering "
                                   f"{base_url}/models. Log {log_path} (tail):\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as resp:
                if resp.status == 200:
                    json.load(resp)
                    return
                last_error = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = repr(exc)
        time.sleep(0.5)
    raise LocalServerError(f"the LLM server did not answer {base_url}/models within {timeout_s:.0f} s "
                           f"(last error: {last_error}). Log {log_path} (tail):\n{_log_tail(log_path)}")


@contextlib.contextmanager
def serving(cmd: list[str], base_url: str, *, log_path: Path, env: dict[str, str],
            startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> Iterator[str]:
    """Run the server ``cmd`` (which listens at ``base_url``) in its own process group, logging to ``log_path``;
    yield ``base_url`` once it answers, and stop it, with its children, when the block ends."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # own process group: stop it and its children together
    try:
        wait_until_ready(proc, base_url, log_path, startup_timeout_s)
        yield base_url
    finally:
        stop_process_group(proc)


@contextlib.contextmanager
def transformers_serve(model_dir: str | os.PathLike, *, log_path: Path, threads: int | None = None,
                       seed: int = 0, startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> Iterator[str]:
    """Serve ``model_dir`` (a Hugging Face directory) on a free loopback port, float32 on the CPU, offline.

    Yields the base URL (ends in ``/v1``; the model's name in requests is ``str(model_dir)``). The
    server's output goes to ``log_path``; it is stopped, with its children, when the block ends.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "-c", SERVE_BOOT, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--dtype", "float32", "--default-seed", str(seed), "--log-level", "warning", str(model_dir)]
    with serving(cmd, base_url, log_path=log_path, env=offline_env(threads), startup_timeout_s=startup_timeout_s):
        yield base_url
