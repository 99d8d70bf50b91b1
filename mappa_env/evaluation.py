"""Run a team policy on an environment's tasks and summarise the results (the seed's table).

``evaluate`` plays one episode per task of the split (cycling when ``episodes`` exceeds the number of
tasks), each with its own seed, and returns every episode's outcome, per-agent coach scores and rewards,
plus the fair aggregates of :func:`mappa_env.metrics.aggregate_outcomes`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mappa_env.metrics import aggregate_outcomes, format_results_table
from mappa_env.policies import Policy, make_policy
from mappa_env.registration import make


def run_episode(env: Any, policy: Policy, *, seed: int, task_id: str | None = None) -> dict[str, Any]:
    """Play one episode and return its record: task, outcome, and per agent its step records and rewards."""
    start = time.perf_counter()
    env.reset(seed=seed, options={"task_id": task_id} if task_id else None)
    final: dict[str, Mapping[str, Any]] = {}
    for agent in env.agent_iter():
        observation, _, termination, truncation, info = env.last()
        if termination or truncation:
            final[agent] = info
            env.step(None)
        else:
            env.step(policy.act(agent, observation, info))
    task = env.unwrapped.task
    outcome = next((i["outcome"] for i in final.values() if "outcome" in i), None)
    if outcome is None:  # truncated before the analyst finished: a failed run, never dropped
        outcome = {"valid": False, "reason": "episode truncated before grading", "metrics": {},
                   "task_id": task.id, "task_type": task.task_type}
    agents = {
        agent: {
            "scores": [s["verdict"]["score"] for s in info.get("steps", [])],
            "step_rewards": info.get("step_rewards", []),
            "steps": [{k: v for k, v in s.items() if k != "workspace"} for s in info.get("steps", [])],
        }
        for agent, info in final.items()
    }
    return {
        "task_id": task.id,
        "task_type": task.task_type,
        "seed": seed,
        "outcome": outcome,
        "agents": agents,
        "duration_s": round(time.perf_counter() - start, 3),
    }


def evaluate(
    policy: str | Policy,
    *,
    env_id: str = "dsbench-v0",
    split: str = "heldout",
    episodes: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``policy`` on ``split``: one episode per task by default. Returns episodes and summary."""
    from tqdm.auto import tqdm

    team = make_policy(policy)
    env = make(env_id, split=split, **dict(env_kwargs or {}))
    try:
        tasks = [t.id for t in env.unwrapped.tasks]
        n = len(tasks) if episodes is None else episodes
        if n < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        results = []
        bar = tqdm(range(n), desc=f"{team.name} on {split}", unit="episode", disable=not progress)
        for i in bar:
            results.append(run_episode(env, team, seed=seed + i, task_id=tasks[i % len(tasks)]))
            done = sum(r["outcome"]["valid"] for r in results)
            bar.set_postfix(success=f"{done}/{len(results)}")
    finally:
        env.close()
    summary = aggregate_outcomes([r["outcome"] for r in results])
    return {"policy": team.name, "env_id": env_id, "split": split, "seed": seed, "summary": summary, "episodes": results}


def write_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write evaluation results as JSON (atomically: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=_json_default))
    tmp.replace(path)
    return path


def results_table(results: Mapping[str, Any]) -> str:
    """The seed's table for one evaluation."""
    return format_results_table([(results["policy"], results["summary"])])


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
