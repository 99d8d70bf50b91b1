"""Does per-action coaching train a team on a CPU? `process` against `outcome` reward over seeds, beside a TRL peer.

For each reward mode (``--modes``) and seed (``--seeds``) one ``python -m mappa_train`` run: by default
``--config cpu-math`` (the packaged SmolLM2-135M-Instruct as the three agents of mathchat-v0 on arith level 1,
one LoRA adapter each); with ``--env dsbench-v0`` the embedded default on dsbench-v0. Every run trains for
``--minutes`` (``run.max_minutes``: training time, evaluations not counted) on the same tasks, evaluates the
held-out problems greedily before, every ``--eval-every`` steps and after, and differs from the other seeds in
its sampling (``run.seed``). Runs go one after another on ``--threads`` torch threads each, so every run has
the machine to itself. The peer (``benchmarks/trl_peer.py``: TRL's ``GRPOTrainer`` on the code executor alone,
same model, LoRA, problems and budget) runs once per seed too, unless ``--no-peer``.

Resumable across sessions and machines: every finished run leaves a small JSON record (``--records``, by
default ``docs/learning_cpu/<env>/<run>.json``, kept in git: its held-out episodes at each evaluation, its
per-step curves, its training minutes, the commit and a fingerprint of the recipe it ran), and a run with a
record is done and skipped, so the seeds of one experiment can be run over several sessions and the table
and plot are made from the records alone. A run stopped midway (its ``--out`` directory still there) resumes
from its last checkpoint for the training minutes it has left. ``--report-only`` reads the records and says
which runs are missing; records whose recipes differ within an arm are named in a warning.

Output: one PNG (``--plot``): held-out accuracy at each evaluation (mean and range over seeds, each seed
faint), and per step the mean over seeds of each agent's reward, coach score, code share and response length,
for both modes; and a Markdown table (printed, and written to ``--table``): per run and per mode (mean ± sd
over seeds) the held-out accuracy before, halfway and after, and the paired after-minus-before difference
with its 95 % interval (Newcombe's for paired proportions: the same episodes before and after).

An equal wall-clock budget buys more steps on a faster machine, and sessions here get machines of unequal
speed; to compare the reward modes step for step instead, ``--minutes 0 --steps N --no-peer`` gives every
team run ``N`` steps whatever they take (with its own ``--records`` and ``--out``: the records of a
wall-clock experiment would otherwise count as done).

Run: ``python benchmarks/learning_cpu.py [--minutes 40] [--seeds 0 1 2] [--out runs/learning_cpu]``.
Extra trainer options go after ``--``, e.g. ``-- --optim.lr 1e-4``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: per environment: the trainer's config, the team, the per-episode metric the table reports and its name
SETUPS = {
    "mathchat-v0": {"config": ["--config", "cpu-math"], "agents": ("problem_solver", "code_executor", "verifier"),
                    "metric": "correct", "name": "held-out accuracy"},
    "dsbench-v0": {"config": [], "agents": ("data_engineer", "modeler", "analyst"),
                   "metric": "valid", "name": "held-out success rate"},
}
PER_STEP = ("reward", "coach_score", "code_share", "response_tokens")
#: the scalar tags a record keeps: the per-agent and per-step curves and the time each step took
RECORDED_TAGS = ("agent/", "train/", "time/")
#: run settings that differ between the runs of one experiment by design, left out of the recipe fingerprint
PER_RUN_SETTINGS = {"env": ("reward_mode",), "run": ("seed", "output_dir", "max_minutes", "resume", "progress", "threads")}


# ---------------------------------------------------------------------- running
def trained_minutes(tags: Mapping[str, Mapping[int, float]]) -> float:
    """Training minutes a run has logged so far (``tags``: its :func:`scalars`): its steps' rollout and update time."""
    seconds = sum(tags.get("time/rollout_wall_s", {}).values()) + sum(tags.get("time/update_s", {}).values())
    return seconds / 60


def run_team(mode: str, seed: int, run: Path, args: argparse.Namespace) -> None:
    """Train one team run (or finish it), its log appended to ``run.log`` beside it.

    ``args.minutes`` > 0: a wall-clock budget (``run.max_minutes``, what is left of it on a resume); 0: a
    step budget, ``args.steps`` steps whatever they take (the trainer's resume finishes the schedule).
    """
    resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
    if args.minutes > 0:
        left = args.minutes - (trained_minutes(scalars(run)) if run.is_dir() else 0.0)
        if resume and left <= 0.05:
            left = 0.05  # the budget is spent: one more step, then the final evaluation and the report
        budget = f"{left:.1f} min"
    else:
        left, budget = 0.0, f"{args.steps} steps"  # run.max_minutes 0: no time limit
    command = [sys.executable, "-m", "mappa_train", *SETUPS[args.env]["config"], "--output-dir", str(run),
               "--env.reward_mode", mode, "--run.seed", str(seed), "--run.steps", str(args.steps),
               "--run.max_minutes", f"{left:.3f}", "--run.threads", str(args.threads), "--run.progress", "false",
               "--eval.every", str(args.eval_every), *(["--run.resume", "true"] if resume else []), *args.trainer_args]
    print(f"{run.name}: {'resuming with' if resume else 'training for'} {budget}", flush=True)
    launch(command, run.with_suffix(".log"), args.threads)


def run_peer(seed: int, run: Path, args: argparse.Namespace) -> None:
    command = [sys.executable, str(HERE / "trl_peer.py"), "--minutes", str(args.minutes), "--seed", str(seed),
               "--out", str(run), "--threads", str(args.threads), "--heldout", str(args.heldout)]
    print(f"{run.name}: training for {args.minutes:.1f} min", flush=True)
    launch(command, run.with_suffix(".log"), args.threads)


def launch(command: Sequence[str], log_path: Path, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        sys.exit(f"{' '.join(command)} failed (exit {code}): see {log_path}")


# ---------------------------------------------------------------------- reading
def scalars(run: Path) -> dict[str, dict[int, float]]:
    """Every scalar tag of a run's TensorBoard logs (as the report reads them): ``{tag: {step: value}}``."""
    from mappa_train.report import read_scalars

    return {tag: dict(points) for tag, points in read_scalars(run).items()}


def team_evaluations(run: Path, metric: str) -> list[tuple[int, dict[str, float]]]:
    """``[(step, {episode key: metric})]`` of a finished team run, in step order."""
    evaluations = json.loads((run / "evaluations.json").read_text(encoding="utf-8"))
    out = []
    for result in evaluations.values():
        values = {f"{e['task_id']}#{e['seed']}": float(e["valid"] if metric == "valid" else e["metrics"].get(metric, 0.0))
                  for e in result["episodes"]}
        out.append((int(result["step"]), values))
    return sorted(out, key=lambda r: r[0])


def peer_evaluations(run: Path) -> list[tuple[int, dict[str, float]]]:
    result = json.loads((run / "peer.json").read_text(encoding="utf-8"))
    return sorted(((int(r["step"]), {e["task_id"]: float(e["correct"]) for e in r["episodes"]})
                   for r in result["evaluations"].values()), key=lambda r: r[0])


def paired_difference(before: Mapping[str, float], after: Mapping[str, float]) -> tuple[float, float, float]:
    """After minus before on the same episodes (0/1 outcomes), with Newcombe's 95 % interval for paired proportions.

    Newcombe (1998), method 10: Wilson intervals of both proportions combined through the correlation of
    the pairs. Unlike the normal approximation it stays honest at small counts (no zero-width interval when
    nothing changed on a few episodes).
    """
    keys = sorted(set(before) & set(after))
    if not keys:
        raise ValueError("the two evaluations share no episode")
    n = len(keys)
    a = sum(before[k] >= 0.5 and after[k] >= 0.5 for k in keys)
    b = sum(before[k] >= 0.5 > after[k] for k in keys)
    c = sum(after[k] >= 0.5 > before[k] for k in keys)
    d = n - a - b - c
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b, n), wilson(a + c, n)
    product = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(product) if product else 0.0
    below = math.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    above = math.sqrt(max((u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2, 0.0))
    return p2 - p1, p2 - p1 - below, p2 - p1 + above


def wilson(successes: float, n: int) -> tuple[float, float]:
    """95 % Wilson interval of a proportion."""
    if n == 0:
        return float("nan"), float("nan")
    z, p = 1.96, successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


# ---------------------------------------------------------------------- records
def machine_speed(threads: int) -> dict[str, Any]:
    """The machine a record is made on: its CPU model and float32 matmul speed on ``threads`` threads.

    One wall-clock budget buys more steps on a faster machine, and each session here runs on a new one
    (the first five team records' steps took 1.4 to 3.2 minutes for the same recipe), so a record says which it had.
    Best of 3 rounds of 20 products of 1024 × 1024 matrices, measured right after the run, on an idle machine.
    """
    import platform

    import torch

    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = math.inf
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(20):
            a @ b
        best = min(best, time.perf_counter() - began)
    return {"cpu": model, "cores": os.cpu_count(), "threads": threads,
            "matmul_gflops": round(20 * 2 * 1024 ** 3 / best / 1e9, 1)}


def team_record(run: Path, mode: str, seed: int, metric: str) -> dict[str, Any]:
    """What the table and plot need of a finished team run, small enough to keep in git."""
    import yaml

    tags = scalars(run)
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    for section, keys in PER_RUN_SETTINGS.items():
        for key in keys:
            config.get(section, {}).pop(key, None)
    return {"kind": "team", "mode": mode, "seed": seed, "minutes_trained": trained_minutes(tags),
            "steps": max(tags.get("train/success_rate", {0: 0})), "commit": _commit(),
            "recipe": _fingerprint(json.dumps(config, sort_keys=True, default=str)),
            "evaluations": [[step, values] for step, values in team_evaluations(run, metric)],
            "scalars": {tag: {str(step): value for step, value in points.items()}
                        for tag, points in sorted(tags.items()) if tag.startswith(RECORDED_TAGS)}}


def peer_record(run: Path, seed: int) -> dict[str, Any]:
    """The peer's ``peer.json`` less its reward history, with the commit and a fingerprint of ``trl_peer.py``."""
    result = json.loads((run / "peer.json").read_text(encoding="utf-8"))
    return {"kind": "peer", "seed": seed, "minutes_trained": result["minutes_trained"], "steps": result["steps"],
            "commit": _commit(), "recipe": _fingerprint((HERE / "trl_peer.py").read_text(encoding="utf-8")),
            "evaluations": [[step, values] for step, values in peer_evaluations(run)]}


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write a record whole or not at all (a stopped benchmark leaves no half record to be read as done)."""
    from mappa_env.evaluation import write_results

    write_results(record, path)


def read_record(path: Path) -> tuple[dict[str, Any], list[tuple[int, dict[str, float]]], dict[str, dict[int, float]]]:
    """A record, its evaluations ``[(step, {episode: metric})]`` and its scalars ``{tag: {step: value}}``."""
    record = json.loads(path.read_text(encoding="utf-8"))
    evaluations = [(int(step), {k: float(v) for k, v in values.items()}) for step, values in record["evaluations"]]
    tags = {tag: {int(step): float(v) for step, v in points.items()} for tag, points in record.get("scalars", {}).items()}
    return record, evaluations, tags


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _commit() -> str:
    """The checkout's commit, ``+dirty`` when it has uncommitted changes (``unknown`` outside git)."""
    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=HERE, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "--short=12", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def recipe_warnings(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """One line per arm whose runs did not all run the same recipe (their means would mix two experiments)."""
    lines = []
    for arm, members in records.items():
        recipes = sorted({m["recipe"] for m in members})
        if len(recipes) > 1:
            lines.append(f"Warning: the {arm} runs ran {len(recipes)} different recipes (" + "; ".join(
                f"{r}: seeds {', '.join(str(m['seed']) for m in members if m['recipe'] == r)}" for r in recipes) + ")")
    return lines


# ---------------------------------------------------------------------- reporting
def run_row(name: str, evaluations: list[tuple[int, dict[str, float]]], minutes: float, steps: int,
            gflops: float | None = None) -> dict[str, Any]:
    first, last = evaluations[0][1], evaluations[-1][1]
    # the evaluation nearest half the run's steps (runs of one budget take different numbers of steps)
    inner = evaluations[1:-1]
    middle = min(inner, key=lambda e: abs(e[0] - evaluations[-1][0] / 2))[1] if inner else None
    difference = paired_difference(first, last)
    return {"name": name, "steps": steps, "minutes": minutes, "gflops": gflops, "n": len(last), "before": _mean(first),
            "halfway": _mean(middle) if middle else None, "after": _mean(last), "difference": difference}


def _mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / len(values)


def markdown(rows: list[dict[str, Any]], groups: dict[str, list[dict[str, Any]]], metric_name: str) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    lines = [f"| run | steps | training min | machine GFLOP/s | episodes | {metric_name} before (%) | halfway (%) | "
             "after (%) | after - before, points [95 % CI] |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        mean, low, high = row["difference"]
        lo, hi = wilson(row["after"] * row["n"], row["n"])
        speed = "-" if row["gflops"] is None else f"{row['gflops']:.0f}"  # records from before the probe have none
        lines.append(f"| {row['name']} | {row['steps']} | {row['minutes']:.1f} | {speed} | {row['n']} | {pct(row['before'])} | "
                     f"{pct(row['halfway'])} | {pct(row['after'])} [{pct(lo)}, {pct(hi)}] | "
                     f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] |")
    lines += ["", f"| arm | seeds | {metric_name} before (%) | after (%), mean ± sd | after - before (points), mean ± sd |",
              "|---|---:|---:|---:|---:|"]
    for arm, members in groups.items():
        afters = [100 * r["after"] for r in members]
        differences = [100 * r["difference"][0] for r in members]
        lines.append(f"| {arm} | {len(members)} | {statistics.mean(100 * r['before'] for r in members):.1f} | "
                     f"{statistics.mean(afters):.1f}{_sd(afters)} | {statistics.mean(differences):+.1f}{_sd(differences)} |")
    return "\n".join(lines)


def _sd(values: Sequence[float]) -> str:
    """`` ± sd`` over the seeds; nothing for one seed, which has no spread to report."""
    return f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else " (one seed)"


def plot(team_runs: dict[str, list[tuple[dict, list]]], peer_runs: list[list], agents: Sequence[str], path: Path,
         metric_name: str) -> None:
    """Held-out metric per evaluation and the per-step curves, mean over seeds with their range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    colours = {"process": "tab:blue", "outcome": "tab:orange", "peer": "tab:green"}
    held = axes[0][0]
    for arm, runs in [*team_runs.items(), ("peer", [({}, ev) for ev in peer_runs])]:
        series = [[(step, 100 * _mean(values)) for step, values in evaluations] for _, evaluations in runs]
        for points in series:
            held.plot(*zip(*points), color=colours[arm], alpha=0.3, marker=".")
        if series:
            width = min(len(s) for s in series)
            mean = [(statistics.mean(s[i][0] for s in series), statistics.mean(s[i][1] for s in series)) for i in range(width)]
            held.plot(*zip(*mean), color=colours[arm], marker="o", label=f"{arm} (mean of {len(series)})")
    held.set(title=f"{metric_name} (greedy)", xlabel="training step", ylabel="%")
    held.legend(fontsize=8)
    panels = [(axes[0][1], "reward", "reward per action"), (axes[0][2], "coach_score", "coach score (0-10)"),
              (axes[1][0], "code_share", "actions with code (share)"), (axes[1][1], "response_tokens", "response tokens")]
    styles = dict(zip(agents, ("-", "--", ":")))
    for axis, name, title in panels:
        for arm, runs in team_runs.items():
            for agent in agents:
                curves = [tags.get(f"agent/{agent}/{name}", {}) for tags, _ in runs]
                steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
                if not steps:
                    continue
                mean = [statistics.mean(c[s] for c in curves) for s in steps]
                axis.plot(steps, mean, styles[agent], color=colours[arm], label=f"{agent} ({arm})")
                if len(curves) > 1:
                    axis.fill_between(steps, [min(c[s] for c in curves) for s in steps],
                                      [max(c[s] for c in curves) for s in steps], color=colours[arm], alpha=0.08)
        axis.set(title=title, xlabel="training step")
    axes[0][1].legend(fontsize=7, ncol=2)
    success = axes[1][2]
    for arm, runs in team_runs.items():
        curves = [tags.get("train/success_rate", {}) for tags, _ in runs]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if steps:
            success.plot(steps, [statistics.mean(c[s] for c in curves) for s in steps], color=colours[arm], label=arm)
    success.set(title="training episodes solved (share, sampled)", xlabel="training step")
    success.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=sorted(SETUPS), default="mathchat-v0")
    parser.add_argument("--modes", nargs="+", choices=["process", "outcome"], default=["process", "outcome"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=40.0,
                        help="training minutes per run (evaluations not counted); 0: a step budget of --steps instead")
    parser.add_argument("--steps", type=int, default=200,
                        help="run.steps: the schedule's length (a --minutes budget stops earlier)")
    parser.add_argument("--eval-every", type=int, default=8, help="evaluate held-out every this many steps")
    parser.add_argument("--heldout", type=int, default=64, help="held-out problems the peer evaluates (the team: eval.episodes)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads of each run")
    parser.add_argument("--no-peer", action="store_true", help="leave out the TRL peer (dsbench-v0 has none)")
    parser.add_argument("--out", type=Path, default=Path("runs/learning_cpu"), help="the runs' working directories")
    parser.add_argument("--records", type=Path, default=HERE.parent / "docs" / "learning_cpu",
                        help="finished runs' records (kept in git; a run with a record is skipped)")
    parser.add_argument("--plot", type=Path, default=Path("docs/learning_cpu.png"))
    parser.add_argument("--table", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--report-only", action="store_true", help="train nothing: make the table and plot from the records there are")
    parser.add_argument("trainer_args", nargs="*", help="extra `python -m mappa_train` options (after --)")
    args = parser.parse_args()
    setup = SETUPS[args.env]
    peer = not args.no_peer and args.env == "mathchat-v0"
    if args.minutes < 0 or args.steps < 1:
        parser.error("--minutes must be >= 0 (0: a step budget) and --steps >= 1")
    if args.minutes == 0 and peer:
        # a team step costs several peer steps (docs/training.md), so equal steps would not be an equal budget
        parser.error("--minutes 0 (a step budget) compares team runs with each other only: add --no-peer "
                     "(the peer is compared on equal wall-clock)")
    out, records = args.out / args.env, args.records / args.env
    began = time.monotonic()

    if not args.report_only:
        for seed in args.seeds:  # seed-major: an interrupted benchmark has every arm of its first seeds
            for mode in args.modes:
                run = out / f"{mode}-seed{seed}"
                if (records / f"{run.name}.json").is_file():
                    continue
                if not (run / "report.md").is_file():
                    run_team(mode, seed, run, args)
                record = team_record(run, mode, seed, setup["metric"])
                write_record(records / f"{run.name}.json", {**record, "machine": machine_speed(args.threads)})
            run = out / f"peer-seed{seed}"
            if peer and not (records / f"{run.name}.json").is_file():
                if not (run / "peer.json").is_file():
                    run_peer(seed, run, args)
                write_record(records / f"{run.name}.json", {**peer_record(run, seed), "machine": machine_speed(args.threads)})

    rows, groups, arms, team_runs, peer_runs, missing = [], {}, {}, {}, [], []
    wanted = [(mode, f"{mode}-seed{seed}") for mode in args.modes for seed in args.seeds]
    wanted += [("TRL peer (code executor alone)", f"peer-seed{seed}") for seed in args.seeds if peer]
    for arm, name in wanted:
        path = records / f"{name}.json"
        if not path.is_file():
            missing.append(name)
            continue
        record, evaluations, tags = read_record(path)
        row = run_row(name, evaluations, record["minutes_trained"], record["steps"],
                      record.get("machine", {}).get("matmul_gflops"))
        rows.append(row)
        groups.setdefault(arm, []).append(row)
        arms.setdefault(arm, []).append(record)
        if record["kind"] == "peer":
            peer_runs.append(evaluations)
        else:
            team_runs.setdefault(arm, []).append((tags, evaluations))
    if not rows:
        sys.exit(f"no record in {records}; missing: {', '.join(missing)}")
    plot(team_runs, peer_runs, setup["agents"], args.plot, setup["name"])
    table = markdown(rows, groups, setup["name"])
    print(f"\n{args.env}: {len(rows)} runs read from {records} ({(time.monotonic() - began) / 60:.1f} min this call); "
          f"plot {args.plot}" + (f"; not finished yet: {', '.join(missing)}" if missing else "") + "\n")
    print(table)
    for line in recipe_warnings(arms):
        print(line)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
