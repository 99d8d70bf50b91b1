"""Cost of the environment itself per step, and of a sandbox round trip with a warm worker.

Two measurements, printed as one table measured in one run (the machine is noisy, so each figure sits
next to its baseline):

1. ``env.step`` + ``env.last`` overhead on ``dsbench-v0``: the sandbox is replaced by one that returns at
   once and the coach by a constant one, so what remains is the environment's own work (code
   extraction, workspace snapshots, step records, prompts). Target: under 5 ms per step. Baseline: a
   step of PettingZoo's own test environment ``generated_agents_env_v0``.
2. ``LocalSandbox.run("pass")`` with a warm persistent worker under bubblewrap, and unisolated. Target:
   under 1 ms. Baseline: starting ``python -c pass``, what a stateless sandbox pays per execution.

Run: ``python benchmarks/env_step.py [--steps 3000] [--runs 500]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mappa_env
from mappa_env.coach import SyncCoach, Verdict
from mappa_env.sandbox import ExecResult, LocalSandbox


class InstantSandbox:
    """Returns a fixed result at once: isolates the environment's own cost."""

    def __init__(self, workspace: Path, **_: object):
        self.workspace = workspace

    def run(self, code: str, *, timeout_s: float | None = None) -> ExecResult:
        return ExecResult(status="ok", stdout="done\n", duration_s=0.0)

    def close(self) -> None:
        pass


class ConstantCoach(SyncCoach):
    name = "constant"

    def score(self, request) -> Verdict:
        return Verdict(7.0, "constant", self.name)


def env_step_ms(steps: int) -> tuple[float, float]:
    """Median and p90 milliseconds of one ``step`` + ``last`` on dsbench-v0 (env overhead only)."""
    env = mappa_env.make("dsbench-v0", split="heldout", sandbox=InstantSandbox, coach=ConstantCoach())
    reply = "Let me look at the data.\n```python\nimport pandas as pd\nprint(pd.read_csv('train.csv').shape)\n```"
    timings = []
    env.reset(seed=0)
    while len(timings) < steps:
        for agent in env.agent_iter():
            start = time.perf_counter()
            _, _, term, trunc, _ = env.last()
            env.step(None if term or trunc else reply)
            timings.append(time.perf_counter() - start)
        env.reset(seed=len(timings))
    env.close()
    return _median_p90_ms(timings)


def pettingzoo_example_step_ms(steps: int) -> tuple[float, float]:
    """The same loop on PettingZoo's own test environment (Box observations, discrete actions)."""
    from pettingzoo.test.example_envs import generated_agents_env_v0

    env = generated_agents_env_v0.env()
    env.reset(seed=0)
    timings = []
    while len(timings) < steps:
        for agent in env.agent_iter():
            start = time.perf_counter()
            _, _, term, trunc, _ = env.last()
            env.step(None if term or trunc else env.action_space(agent).sample())
            timings.append(time.perf_counter() - start)
            if len(timings) >= steps:
                break
        env.reset(seed=len(timings))
    return _median_p90_ms(timings)


def sandbox_roundtrip_ms(runs: int, *, isolate: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as workspace, LocalSandbox(Path(workspace), isolate=isolate) as sandbox:
        sandbox.run("x = 1")  # wait for the worker to be warm
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            result = sandbox.run("pass")
            timings.append(time.perf_counter() - start)
            assert result.ok, result
    return _median_p90_ms(timings)


def python_start_ms(runs: int) -> tuple[float, float]:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        timings.append(time.perf_counter() - start)
    return _median_p90_ms(timings)


def _median_p90_ms(timings: list[float]) -> tuple[float, float]:
    ordered = sorted(timings)
    return statistics.median(ordered) * 1e3, ordered[int(0.9 * (len(ordered) - 1))] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="env steps to time")
    parser.add_argument("--runs", type=int, default=500, help="sandbox round trips to time")
    args = parser.parse_args()

    import warnings

    warnings.simplefilter("ignore", UserWarning)  # the unisolated sandbox warns, as it should
    rows = [
        ("dsbench-v0 step + last (env overhead)", env_step_ms(args.steps), "< 5 ms"),
        ("  baseline: pettingzoo generated_agents_env_v0 step + last", pettingzoo_example_step_ms(args.steps), ""),
        ("sandbox run('pass'), warm worker, bubblewrap", sandbox_roundtrip_ms(args.runs, isolate=True), "< 1 ms"),
        ("sandbox run('pass'), warm worker, unisolated", sandbox_roundtrip_ms(args.runs, isolate=False), ""),
        ("  baseline: subprocess python -c pass", python_start_ms(max(20, args.runs // 10)), ""),
    ]
    print("| measurement | median (ms) | p90 (ms) | target |\n|---|---|---|---|")
    for name, (median, p90), target in rows:
        print(f"| {name} | {median:.3f} | {p90:.3f} | {target} |")


if __name__ == "__main__":
    main()
