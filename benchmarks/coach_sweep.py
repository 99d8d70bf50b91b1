"""Does the receipts coach score the same relative quality the same on classification and regression?

The same scripted team (plain pandas + random forest) solves every builtin task. For each episode the
action that wrote ``submission.csv`` carries the graded result (``StepRecord.result``) and its coach
score; the script tabulates that score per band of RPG (the share of the way from a constant prediction
to a perfect score) and task type, for two rules side by side on the same results:

* ``old``: the caps before issue 13 (accuracy / ROC-AUC thresholds for classification, RMSE as % of the
  target range for regression, a low-F1 rule), recomputed here from the recorded metrics;
* ``new``: the receipts coach of this release (caps by RPG), as it scored the episode.

The target (issue 13): the per-band gap between task types below 0.3 points for ``new``. The rows are also
written as JSON (``--rows``); ``tests/coach/data/coach_sweep.json`` is this file, which the bias-monitor
test reads.

Run: ``python benchmarks/coach_sweep.py [--split all] [--rows PATH] [--markdown PATH]`` (about 10 s per task on
2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import mappa_env
from mappa_env.evaluation import run_episode
from mappa_env.policies.scripted import ScriptedTeam

BANDS = ((-math.inf, 0.0), (0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, math.inf))
TYPES = ("classification", "regression")


def legacy_cap(task_type: str, metrics: dict) -> float:
    """The receipts coach's cap before issue 13 (MAPPA's accuracy/RMSE caps), for the side-by-side column."""
    def finite(key):
        value = metrics.get(key)
        return None if value is None or math.isnan(value) else float(value)

    if task_type == "regression":
        pct = finite("rmse_pct_range")
        if pct is None:
            return 6.0
        return next((cap for limit, cap in ((10, 9.0), (25, 8.0), (50, 6.0)) if pct < limit), 4.0)
    quality = finite("roc_auc") if finite("roc_auc") is not None else finite("accuracy")
    if quality is None:
        return 6.0
    f1 = finite("f1")
    if f1 is not None and quality >= 0.7 and f1 < 0.3:
        return 3.0
    return next((cap for limit, cap in ((0.85, 9.0), (0.75, 8.0), (0.65, 6.0), (0.55, 4.0)) if quality >= limit), 3.0)


def sweep(split: str) -> list[dict]:
    env = mappa_env.make("dsbench-v0", split=split, coach="receipts")
    policy = ScriptedTeam()
    rows = []
    try:
        tasks = env.unwrapped.tasks
        for number, task in enumerate(tasks, 1):
            start = time.perf_counter()
            episode = run_episode(env, policy, seed=0, task_id=task.id)
            steps = [s for agent in episode["agents"].values() for s in agent["steps"]]
            graded = [s for s in steps if s.get("result") is not None]
            if not graded or not graded[-1]["result"]["valid"]:
                print(f"[{number}/{len(tasks)}] {task.id}: no valid graded result, left out", file=sys.stderr)
                continue
            step = graded[-1]
            metrics = step["result"]["metrics"]
            rows.append({
                "task_id": task.id, "task_type": task.task_type, "metric": task.metric, "role": step["agent"],
                "rpg": metrics["rpg"], "metrics": metrics,
                "old_score": min(9.0, legacy_cap(task.task_type, metrics)), "score": step["verdict"]["score"],
            })
            print(f"[{number}/{len(tasks)}] {task.id}: rpg {metrics['rpg']:.3f}, old {rows[-1]['old_score']:g}, "
                  f"new {rows[-1]['score']:g} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    finally:
        env.close()
    return rows


def band_table(rows: list[dict]) -> str:
    lines = ["| RPG band | n cls | n reg | old cls | old reg | old gap | new cls | new reg | new gap |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for low, high in BANDS:
        inside = [r for r in rows if low <= r["rpg"] < high]
        by_type = {t: [r for r in inside if r["task_type"] == t] for t in TYPES}
        if not inside:
            continue

        def mean(key, kind):
            values = [r[key] for r in by_type[kind]]
            return statistics.fmean(values) if values else None

        def cell(value):
            return "–" if value is None else f"{value:.2f}"

        def gap(key):
            a, b = mean(key, "regression"), mean(key, "classification")
            return "–" if a is None or b is None else f"{a - b:+.2f}"

        label = f"[{'-∞' if low == -math.inf else f'{low:g}'}, {'∞' if high == math.inf else f'{high:g}'})"
        lines.append(f"| {label} | {len(by_type['classification'])} | {len(by_type['regression'])} | "
                     f"{cell(mean('old_score', 'classification'))} | {cell(mean('old_score', 'regression'))} | {gap('old_score')} | "
                     f"{cell(mean('score', 'classification'))} | {cell(mean('score', 'regression'))} | {gap('score')} |")
    for kind in TYPES:
        of = [r for r in rows if r["task_type"] == kind]
        lines.append(f"| all {kind} (n={len(of)}, mean RPG {statistics.fmean(r['rpg'] for r in of):.2f}) | | | "
                     f"{statistics.fmean(r['old_score'] for r in of):.2f} | | | {statistics.fmean(r['score'] for r in of):.2f} | | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="all", help="task split of the builtin suite (default: all, 77 tasks)")
    parser.add_argument("--rows", default="tests/coach/data/coach_sweep.json", help="where to write the per-task rows")
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()
    rows = sweep(args.split)
    Path(args.rows).parent.mkdir(parents=True, exist_ok=True)
    Path(args.rows).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    table = band_table(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
