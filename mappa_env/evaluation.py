"""Run a team policy on an environment's tasks and summarise the results (the seed's table).

``evaluate`` plays one episode per task of the split (cycling when ``episodes`` exceeds the number of
tasks), each with its own seed, and returns every episode's outcome, per-agent coach scores and rewards,
plus the summary the environment's scorecard makes of them (:mod:`mappa_env.scorecard`; for ``dsbench-v0``
the fair aggregates of :func:`mappa_env.metrics.aggregate_outcomes`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mappa_env.paths import write_text_whole
from mappa_env.policies import Policy, bind_to, make_policy
from mappa_env.records import NO_CODE, RECORDS_FORMAT_VERSION, outcome_succeeded, requests_to_json, unscored_reason
from mappa_env.scorecard import scorecard_of
from mappa_env.registration import make


def run_episode(env: Any, policy: Policy, *, seed: int, task_id: str | None = None,
                record_requests: bool = False) -> dict[str, Any]:
    """Play one episode and return its record: task, outcome, and per agent its step records and rewards.

    With ``record_requests`` the record also holds every step record (``"records"``) and every coach
    request (``"coach_requests"``, referring to the records by position) under ``"format_version"``
    :data:`~mappa_env.records.RECORDS_FORMAT_VERSION`, so the episode can be coached again offline
    (``python -m mappa_env coach``).
    """
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
    outcome = episode_outcome(final, task)
    agents = {
        agent: {
            "scores": [s["verdict"]["score"] for s in info.get("steps", [])],
            "step_rewards": info.get("step_rewards", []),
            "steps": [{k: v for k, v in s.items() if k != "workspace"} for s in info.get("steps", [])],
        }
        for agent, info in ((a, final[a]) for a in env.unwrapped.possible_agents if a in final)  # pipeline order
    }
    record = {
        "task_id": task.id,
        "task_type": task.task_type,
        "seed": seed,
        "outcome": outcome,
        "agents": agents,
        "duration_s": round(time.perf_counter() - start, 3),
    }
    if record_requests:  # every record once, and the requests referring to them (mappa_env.records)
        records = env.unwrapped.step_records()
        record["format_version"] = RECORDS_FORMAT_VERSION
        record["records"] = [r.to_dict() for r in records]
        record["coach_requests"] = requests_to_json(env.unwrapped.coach_requests(), records)
    return record


def episode_outcome(final_infos: Mapping[str, Mapping[str, Any]], task: Any) -> Mapping[str, Any]:
    """The graded outcome found in the agents' final infos; an episode truncated before grading is a
    failed run (never dropped), with its reason."""
    outcome = next((i["outcome"] for i in final_infos.values() if "outcome" in i), None)
    if outcome is None:
        outcome = {"valid": False, "reason": "episode truncated before grading", "metrics": {},
                   "task_id": task.id, "task_type": task.task_type}
    return outcome


def evaluate(
    policy: str | Policy,
    *,
    env_id: str = "dsbench-v0",
    split: str = "heldout",
    episodes: int | None = None,
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    record_requests: bool = False,
    samples: int = 1,
) -> dict[str, Any]:
    """Evaluate ``policy`` on ``split``: each task (the first ``episodes``, cycling; default every task)
    played ``samples`` times with different seeds. Returns episodes and summary.

    The summary is the environment scorecard's (``env.unwrapped.scorecard.summarise``); under ``"coach"``,
    what coaching cost and how it scored (:func:`summarise_coaching`); under ``"by_task_type"``, per task
    type (a math team's problem set) mean@k, unbiased pass@k, the unparsed share and the tool-use rate
    (:func:`sample_summary`).
    """
    from tqdm.auto import tqdm

    team = make_policy(policy, env_id=env_id)
    env = make(env_id, split=split, **dict(env_kwargs or {}))
    try:
        bind_to(team, env)
        tasks = [t.id for t in env.unwrapped.tasks]
        scorecard = scorecard_of(env)
        n = len(tasks) if episodes is None else episodes
        if n < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
        results = []
        bar = tqdm(range(n * samples), desc=f"{team.name} on {split}", unit="episode", disable=not progress)
        for i in bar:
            task, sample = divmod(i, samples)
            episode = run_episode(env, team, seed=seed + i, task_id=tasks[task % len(tasks)],
                                  record_requests=record_requests)
            results.append({**episode, "sample": sample})
            done = sum(outcome_succeeded(r["outcome"]) for r in results)
            bar.set_postfix(success=f"{done}/{len(results)}")
    finally:
        env.close()
    summary = {**scorecard.summarise([r["outcome"] for r in results]), "coach": summarise_coaching(results),
               "by_task_type": sample_summary(results)}
    table = "\n\n".join([scorecard.table([(team.name, summary)]), samples_table(summary["by_task_type"]),
                          coaching_table(summary["coach"])])
    return {"policy": team.name, "env_id": env_id, "split": split, "seed": seed, "samples": samples,
            "format_version": RECORDS_FORMAT_VERSION, "summary": summary, "table": table, "episodes": results}


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``n`` samples of which ``c`` are correct: ``1 − C(n−c, k) / C(n, k)``
    (Chen et al., 2021), the chance that at least one of ``k`` samples drawn without replacement is correct."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def sample_summary(episodes: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task type: problems, samples per problem, ``mean_at_k`` (the success rate over every sample),
    ``pass_at`` (``{k: unbiased pass@k}`` for k = 1, 2, 4, ... and the samples per problem), the share of
    outcomes without a gradable result (``unparsed_rate``) and of episodes where any agent ran code
    (``tool_use_rate``). Problems with fewer samples than others count with the samples they have."""
    by_type: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for episode in episodes:
        by_type.setdefault(episode["task_type"], {}).setdefault(episode["task_id"], []).append(episode)
    summary = {}
    for task_type, by_task in sorted(by_type.items()):
        runs = [e for group in by_task.values() for e in group]
        k_max = min(len(group) for group in by_task.values())
        ks = sorted({1, k_max, *(2 ** i for i in range(1, k_max.bit_length()) if 2 ** i <= k_max)})
        correct = {task: sum(outcome_succeeded(e["outcome"]) for e in group) for task, group in by_task.items()}
        summary[task_type] = {
            "problems": len(by_task), "samples": k_max,
            "mean_at_k": sum(correct.values()) / len(runs),
            "pass_at": {k: sum(pass_at_k(len(by_task[t]), c, k) for t, c in correct.items()) / len(by_task) for k in ks},
            "unparsed_rate": sum(not e["outcome"]["valid"] for e in runs) / len(runs),
            "tool_use_rate": sum(_ran_code(e) for e in runs) / len(runs),
        }
    return summary


def _ran_code(episode: Mapping[str, Any]) -> bool:
    return any(s["status"] != NO_CODE for a in episode["agents"].values() for s in a["steps"])


def samples_table(by_task_type: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: one row per task type, with mean@k, pass@k for each k, the unparsed share and the tool use."""
    ks = sorted({k for row in by_task_type.values() for k in row["pass_at"]})
    header = ["Task type", "Problems", "Samples", "mean@k (%)", *(f"pass@{k} (%)" for k in ks), "Unparsed (%)",
              "Tool use (%)"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for task_type, row in by_task_type.items():
        cells = [task_type, str(row["problems"]), str(row["samples"]), f"{100 * row['mean_at_k']:.1f}",
                 *(f"{100 * row['pass_at'][k]:.1f}" if k in row["pass_at"] else "-" for k in ks),
                 f"{100 * row['unparsed_rate']:.1f}", f"{100 * row['tool_use_rate']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarise_coaching(episodes: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Coaching totals over recorded episodes: scored/unscored actions, cache hits, tokens, dollars, bias.

    Cost is None when any call's price was unknown (a partial sum would understate it). ``bias_flags``
    holds the bias monitor's alert: the coach's task-type tilt on graded actions at equal quality.
    """
    from mappa_env.coach.bias import episode_rows, monitor_from_records

    verdicts = [(e, agent, step["verdict"]) for e in episodes for agent, a in e["agents"].items() for step in a["steps"]]
    unscored: dict[str, int] = {}
    for _, _, v in verdicts:
        if v["score"] is None:
            reason = unscored_reason(v)
            unscored[reason] = unscored.get(reason, 0) + 1
    costs = [v.get("cost_usd") for _, _, v in verdicts if "cost_usd" in v]
    # graded actions (the ones that wrote the result) apart from the rest, clustered by task
    monitor = monitor_from_records(asdict(row) for number, e in enumerate(episodes) for row in episode_rows(e, number=number))
    return {
        "coaches": sorted({v["coach"] for _, _, v in verdicts}),
        "actions": len(verdicts),
        "scored": sum(v["score"] is not None for _, _, v in verdicts),
        "unscored": sum(unscored.values()),
        "unscored_by_reason": unscored,
        "cache_hits": sum(bool(v.get("cached")) for _, _, v in verdicts),
        "prompt_tokens": sum(v.get("prompt_tokens", 0) for _, _, v in verdicts),
        "completion_tokens": sum(v.get("completion_tokens", 0) for _, _, v in verdicts),
        "cost_usd": None if any(c is None for c in costs) else round(sum(costs), 6),
        "bias_flags": [flag.message for flag in monitor.drift()],
    }


def coaching_table(coaching: Mapping[str, Any]) -> str:
    """What the coach did in an evaluation, as markdown: actions scored and unscored (with the reasons)."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(coaching["unscored_by_reason"].items()))
    cost = "n/a" if coaching["cost_usd"] is None else f"{coaching['cost_usd']:.4f}"
    return "\n".join([
        "| Coach | Actions | Scored | Unscored | Unscored reasons | Cost ($) |",
        "|---|---:|---:|---:|---|---:|",
        f"| {', '.join(coaching['coaches']) or '-'} | {coaching['actions']} | {coaching['scored']} | "
        f"{coaching['unscored']} | {reasons or '-'} | {cost} |",
    ])


def write_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write evaluation results as JSON (atomically: a crash never leaves half a file)."""
    return write_text_whole(path, json.dumps(results, indent=2, default=_json_default))


def results_table(results: Mapping[str, Any]) -> str:
    """The environment's results table (its scorecard's) for one evaluation."""
    return results["table"]


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
