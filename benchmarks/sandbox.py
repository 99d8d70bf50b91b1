"""Cost per execution of each sandbox backend, next to starting a bare Python process.

Printed as one markdown table measured in one run. The machine is noisy, so the measurements are
interleaved: each round times every row once, in turn (starting one row later each round), so that
noise hits all rows alike. What is timed is the wall-clock time a caller waits for:

1. ``sandbox.run(code)`` for each backend available (``local``: bubblewrap; ``unisolated``; ``docker``
   when :func:`~mappa_env.sandbox.docker_available` says an engine is reachable, else a row says why
   not) in two modes: a persistent worker (state kept between executions; what the environment uses) and
   ``persistent=False`` (a fresh worker per execution). Workers have the default preload (numpy, pandas,
   scikit-learn), as in the environment. Two workloads: the trivial statement ``x = 1``, and
   ``import pandas`` + a groupby on a 1,000-row DataFrame (its stdout is checked). A fresh-mode ``run``
   returns after the execution, having killed the worker and started the next one, whose imports then
   run in the background; before timing anything the benchmark waits, untimed, until that worker is
   ready, so a fresh-mode row is what a caller who thinks between executions (as an agent does) waits
   for, not the CPU each fresh worker spends on its imports (that is the start-up row).
2. Worker start-up per backend: from constructing the sandbox until its first ``run("pass")`` returns,
   one sandbox at a time (``--startup-runs`` each).
3. Baselines: a ``python -c pass`` subprocess, and the pandas workload as a ``python -c`` subprocess
   (what a stateless sandbox pays per execution, before any isolation).

Run: ``python benchmarks/sandbox.py [--runs 30] [--startup-runs 5]`` (about three minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

from env_step import _median_p90_ms

from mappa_env.sandbox import Sandbox, docker_available, make_sandbox

TRIVIAL = "x = 1"
PANDAS = ("import pandas as pd\n"
          "df = pd.DataFrame({'a': range(1000), 'b': range(1000)})\n"
          "s = df.groupby(df.a % 10).b.sum()\n"
          "print(int(s[3]), int(s.sum()))")
PANDAS_STDOUT = "49800 499500\n"  # sum of b where a % 10 == 3, and of all b
WORKLOADS = {"x = 1": TRIVIAL, "import pandas + groupby": PANDAS}
MODES = {"persistent": True, "fresh per run": False}


def available_backends() -> tuple[list[str], str | None]:
    """The backends to measure, and why docker is not among them (None when it is)."""
    ok, reason = docker_available()
    return (["local", "unisolated", "docker"] if ok else ["local", "unisolated"]), (None if ok else reason)


def python_c(code: str) -> Callable[[], None]:
    def run() -> None:
        done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        assert code != PANDAS or done.stdout == PANDAS_STDOUT, done.stdout

    return run


def sandbox_run(sandbox: Sandbox, code: str) -> Callable[[], None]:
    def run() -> None:
        result = sandbox.run(code)
        assert result.ok and (code != PANDAS or result.stdout == PANDAS_STDOUT), result

    return run


def wait_for_fresh_workers(sandboxes: list[Sandbox]) -> None:
    """Untimed: let the workers that fresh-mode sandboxes started in the background finish importing."""
    for sandbox in sandboxes:
        if not sandbox.persistent and sandbox._worker is not None:  # private: nothing public waits
            sandbox._worker.wait_ready(sandbox.startup_timeout_s)


def startup_s(backend: str) -> float:
    with tempfile.TemporaryDirectory() as workspace:
        start = time.perf_counter()
        with make_sandbox(backend, workspace) as sandbox:
            assert sandbox.run("pass").ok
            return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="rounds: timed executions per row")
    parser.add_argument("--startup-runs", type=int, default=5, help="sandboxes started per backend")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", r"LocalSandbox\(isolate=False\)", UserWarning)  # it warns, as it should

    backends, docker_missing = available_backends()
    startups: dict[str, list[float]] = {backend: [] for backend in backends}
    for _ in range(args.startup_runs):
        for backend in backends:
            startups[backend].append(startup_s(backend))

    workspaces = []
    rows: dict[tuple[str, str, str], Callable[[], None]] = {
        ("baseline: subprocess", "python -c", "pass"): python_c("pass"),
        ("baseline: subprocess", "python -c", "import pandas + groupby"): python_c(PANDAS),
    }
    sandboxes = []
    for backend in backends:
        for mode, persistent in MODES.items():
            workspaces.append(tempfile.TemporaryDirectory())
            sandbox = make_sandbox(backend, workspaces[-1].name, persistent=persistent)
            sandbox.run("pass")  # untimed: wait for the worker's start-up
            sandboxes.append(sandbox)
            for workload, code in WORKLOADS.items():
                rows[(backend, mode, workload)] = sandbox_run(sandbox, code)

    timings: dict[tuple[str, str, str], list[float]] = {key: [] for key in rows}
    keys = list(rows)
    for round_ in range(args.runs):
        shift = round_ % len(keys)
        for key in keys[shift:] + keys[:shift]:
            wait_for_fresh_workers(sandboxes)
            start = time.perf_counter()
            rows[key]()
            timings[key].append(time.perf_counter() - start)
    for sandbox in sandboxes:
        sandbox.close()
    for workspace in workspaces:
        workspace.cleanup()

    baseline = _median_p90_ms(timings[keys[0]])[0]
    print("| backend | mode | workload | median (ms) | p90 (ms) | ratio to python -c pass |")
    print("|---|---|---|---:|---:|---:|")

    def row(backend: str, mode: str, workload: str, samples: list[float]) -> None:
        median, p90 = _median_p90_ms(samples)
        print(f"| {backend} | {mode} | {workload} | {median:.3f} | {p90:.3f} | {median / baseline:.3g} |")

    for key in keys[:2]:
        row(*key, timings[key])
    for backend in backends:
        row(backend, "start-up", "construct until run('pass') returns", startups[backend])
        for mode in MODES:
            for workload in WORKLOADS:
                row(backend, mode, workload, timings[(backend, mode, workload)])
    if docker_missing:
        reason = docker_missing.split(" (")[0]  # the exception's text is too long for a table cell
        print(f"| docker | all | not available here: {reason.replace('|', '/')} |  |  |  |")


if __name__ == "__main__":
    main()
