"""Does the embedded default learn on a CPU? `process` against `outcome` reward, side by side.

Two runs of ``python -m mappa_train`` (the embedded default: packaged SmolLM2-135M-Instruct, one LoRA
adapter per agent, dsbench-v0's train split, coach ``auto``) start at the same time, one with
``env.reward_mode=process`` and one with ``outcome``, each on ``--threads`` torch threads, each stopping
after the step that reaches ``--minutes`` (``run.max_minutes``), then evaluating on the held-out split as
the default does. The script reads both runs' TensorBoard logs and writes:

* a PNG (``--plot``): the share of training episodes with a valid submission, and each agent's mean
  coach score, per step, for both reward modes;
* a Markdown table per step and both runs' ``report.md`` tables, printed.

Run: ``python benchmarks/learning_cpu.py [--minutes 55] [--out runs/learning_cpu] [--plot docs/learning_cpu.png]``.
Extra trainer options go after ``--``, e.g. ``-- --run.steps 40``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

MODES = ("process", "outcome")
AGENTS = ("data_engineer", "modeler", "analyst")


def launch(mode: str, out: Path, args: argparse.Namespace) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "mappa_train", "--output-dir", str(out / mode), "--env.reward_mode", mode,
               "--run.steps", str(args.steps), "--run.max_minutes", str(args.minutes), "--run.progress", "false",
               *args.trainer_args]
    with open(out / f"{mode}.log", "w", encoding="utf-8") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def scalars(run: Path) -> dict[str, dict[int, float]]:
    """Every scalar tag of a run's TensorBoard logs: ``{tag: {step: value}}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: {e.step: e.value for e in accumulator.Scalars(tag)} for tag in accumulator.Tags()["scalars"]}


def plot(runs: dict[str, dict[str, dict[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    styles = {"process": "-", "outcome": "--"}
    for mode, tags in runs.items():
        success = tags.get("train/success_rate", {})
        left.plot(sorted(success), [success[s] for s in sorted(success)], styles[mode], marker="o", label=mode)
        for agent in AGENTS:
            scores = tags.get(f"agent/{agent}/coach_score", {})
            right.plot(sorted(scores), [scores[s] for s in sorted(scores)], styles[mode], marker=".", label=f"{agent} ({mode})")
    left.set(title="training episodes with a valid submission", xlabel="step", ylabel="share", ylim=(-0.05, 1.05))
    right.set(title="mean coach score per agent", xlabel="step", ylabel="score (0-10)", ylim=(-0.3, 10.3))
    left.legend()
    right.legend(fontsize=7, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def table(runs: dict[str, dict[str, dict[int, float]]]) -> str:
    steps = sorted({s for tags in runs.values() for s in tags.get("train/success_rate", {})})
    header = "| step | " + " | ".join(f"{mode}: success, coach DE/M/A, reward DE/M/A" for mode in runs) + " |"
    lines = [header, "|---:|" + "---|" * len(runs)]

    def cell(tags, step):
        def value(tag, digits):
            v = tags.get(tag, {}).get(step)
            return "-" if v is None else f"{v:.{digits}f}"
        coach = "/".join(value(f"agent/{a}/coach_score", 1) for a in AGENTS)
        reward = "/".join(value(f"agent/{a}/reward", 2) for a in AGENTS)
        return f"{value('train/success_rate', 2)}, {coach}, {reward}"

    for step in steps:
        lines.append(f"| {step} | " + " | ".join(cell(tags, step) for tags in runs.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=55.0, help="training minutes per run (both run at once)")
    parser.add_argument("--steps", type=int, default=40, help="run.steps: the schedule's length (the time limit stops earlier)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="torch threads per run")
    parser.add_argument("--out", type=Path, default=Path("runs/learning_cpu"))
    parser.add_argument("--plot", type=Path, default=Path("docs/learning_cpu.png"))
    parser.add_argument("--report-only", action="store_true", help="only read existing runs in --out")
    parser.add_argument("trainer_args", nargs="*", help="extra `python -m mappa_train` options (after --)")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    if not args.report_only:
        processes = {mode: launch(mode, args.out, args) for mode in MODES}
        failed = [mode for mode, process in processes.items() if process.wait() != 0]
        if failed:
            sys.exit(f"the {', '.join(failed)} run failed: see {args.out}/<mode>.log")
    runs = {mode: scalars(args.out / mode) for mode in MODES}
    plot(runs, args.plot)
    print(f"both runs: {(time.monotonic() - began) / 60:.1f} min wall, {args.threads} torch threads each; plot {args.plot}\n")
    print(table(runs))
    for mode in MODES:
        report = (args.out / mode / "report.md").read_text(encoding="utf-8")
        print(f"\n## {mode}\n\n{report}")


if __name__ == "__main__":
    main()
