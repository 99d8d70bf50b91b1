"""Coach recorded episodes again, offline: check a coach before paying for a training run.

``python -m mappa_env evaluate`` records every coach request in its results (``coach_requests``);
:func:`recoach` sends them to another coach (a hindsight coach also gets each episode's outcome and whole
trajectory, as it would at the end of the episode), concurrently (bounded by the coach's own in-flight
limit), and returns one row per action with the recorded and the new verdict; :func:`change_summary`
says how the scores moved on the same actions (a new prompt or coach against the recorded scores).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mappa_env.coach.base import Coach, Verdict
from mappa_env.coach.bias import action_rows
from mappa_env.records import RECORDS_FORMAT_VERSION, requests_from_json


def load_episodes(path: str | Path) -> list[dict[str, Any]]:
    """Episodes from an evaluation results file (``.json``) or one episode per line (``.jsonl``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        episodes = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        episodes = data["episodes"] if isinstance(data, dict) else data
    missing = [i for i, e in enumerate(episodes) if "coach_requests" not in e]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} of {len(episodes)} episodes have no recorded coach requests; "
            "record them with `python -m mappa_env evaluate` (it records them unless --no-record-requests)"
        )
    versions = sorted({str(e.get("format_version", 1)) for e in episodes})
    if versions != [str(RECORDS_FORMAT_VERSION)]:
        raise ValueError(
            f"{path}: recorded in episode format {', '.join(versions)}; this release reads format "
            f"{RECORDS_FORMAT_VERSION} (records stored once, requests referring to them). Record the episodes "
            "again with `python -m mappa_env evaluate`"
        )
    return episodes


def recoach(episodes: Sequence[Mapping[str, Any]], coach: Coach, *, progress: bool = False) -> list[dict[str, Any]]:
    """Score every recorded action with ``coach``: one row per action, recorded verdict beside the new one.

    Every action's request is sent at once (a batching coach batches them); ``progress`` shows a bar of the
    actions scored so far, for a local LLM coach that takes minutes.

    Rows carry ``score``, ``task_type``, ``role``, ``task_id``, ``graded`` (the action carries a grade: it
    wrote the result, or ended the episode), ``quality`` (that grade's RPG) and ``success`` (that grade's
    validity; for other actions the episode's), so they feed :func:`mappa_env.coach.bias.monitor_from_records`
    as they are.
    """
    if getattr(coach, "timing", "online") == "hindsight":
        episodes = [hindsight_view(e) for e in episodes]
    items = []
    for number, episode in enumerate(episodes):
        for request in requests_from_json(episode["coach_requests"], episode["records"]):
            recorded = next(r["verdict"] or {} for r in episode["records"]
                            if (r["agent"], r["action_index"]) == (request.role, request.action_index))
            items.append((number, episode, request, recorded))

    name = getattr(coach, "name", type(coach).__name__)

    async def score_all():
        from tqdm.auto import tqdm

        with tqdm(total=len(items), desc=f"scoring with {name}", unit="action", disable=not progress) as bar:
            async def score(request):
                try:
                    return await coach.ascore(request)
                finally:
                    bar.update()

            return await asyncio.gather(*(score(request) for _, _, request, _ in items), return_exceptions=True)

    verdicts = [  # a coach that raises leaves that action unscored, as in an episode: failures are data
        Verdict(None, f"coach error: {type(v).__name__}: {v}", name, {"unscored_reason": "coach_error"})
        if isinstance(v, Exception) else v
        for v in asyncio.run(score_all())
    ]
    tags = {}  # graded or not, its quality and validity: read as the bias monitor reads them
    for number, episode in enumerate(episodes):
        task = next((request for n, _, request, _ in items if n == number), None)
        if task is None:  # an episode without a recorded request has no row to tag
            continue
        rows = action_rows(episode["records"], episode.get("outcome"), task_id=task.task_id, task_type=task.task_type,
                           episode=number)
        tags.update({(number, record["agent"], record["action_index"]): row
                     for row, record in zip(rows, episode["records"])})
    return [
        {
            "episode": number,
            "task_id": request.task_id,
            "task_type": request.task_type,
            "success": tags[(number, request.role, request.action_index)].success,
            "graded": tags[(number, request.role, request.action_index)].graded,
            "quality": tags[(number, request.role, request.action_index)].quality,
            "role": request.role,  # the agent; named as the bias monitor's records name it
            "action": request.action_index + 1,
            "status": request.step.status,
            "recorded_score": old.get("score"),
            "score": verdict.score,
            "rationale": verdict.rationale,
            "details": dict(verdict.details),
        }
        for (number, episode, request, old), verdict in zip(items, verdicts)
    ]


def hindsight_view(episode: Mapping[str, Any]) -> dict[str, Any]:
    """The episode with each recorded request given the outcome and the whole trajectory, as a hindsight coach
    is given them at the end of an episode (recorded requests hold only what was known when the action was made)."""
    everything = list(range(len(episode["records"])))
    requests = [{**r, "outcome": episode["outcome"], "trajectory": everything} for r in episode["coach_requests"]]
    return {**episode, "coach_requests": requests}


def score_change(row: Mapping[str, Any]) -> float | None:
    """The new score minus the recorded one, or None when either is unscored."""
    new, old = row.get("score"), row.get("recorded_score")
    return None if new is None or old is None else float(new) - float(old)


def rows_table(rows: Sequence[Mapping[str, Any]], *, rationale_chars: int = 70) -> str:
    """The per-action table as markdown, with the change of each score (new − recorded)."""
    # change last: the columns before it are those of earlier releases, which scripts may read
    lines = ["| ep | task | agent | # | status | recorded | score | rationale | change |",
             "|---:|---|---|---:|---|---:|---:|---|---:|"]
    fmt = lambda s: "unscored" if s is None else f"{s:g}"  # noqa: E731
    for row in rows:
        change = score_change(row)
        rationale = " ".join(row["rationale"].split())[:rationale_chars].replace("|", "/")
        lines.append(
            f"| {row['episode']} | {row['task_id']} | {row['role']} | {row['action']} | {row['status']} | "
            f"{fmt(row['recorded_score'])} | {fmt(row['score'])} | {rationale} | "
            f"{'-' if change is None else f'{change:+g}'} |"
        )
    return "\n".join(lines)


def change_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How the new scores differ from the recorded ones on the same actions.

    Only actions scored both times are compared (``compared``); ``unscored`` counts the others. Returns
    ``compared``, ``unscored``, ``changed`` (actions whose score moved), ``mean_abs_change`` and
    ``mean_change`` (new − recorded; None when nothing was compared) and ``by_agent``: agent →
    ``{"compared", "mean_change"}``, in the order agents first appear.
    """
    changes = [(row["role"], score_change(row)) for row in rows]
    compared = [(agent, c) for agent, c in changes if c is not None]
    by_agent: dict[str, list[float]] = {}
    for agent, change in compared:
        by_agent.setdefault(agent, []).append(change)
    mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    return {
        "compared": len(compared),
        "unscored": len(changes) - len(compared),
        "changed": sum(1 for _, c in compared if c != 0),
        "mean_abs_change": mean([abs(c) for _, c in compared]),
        "mean_change": mean([c for _, c in compared]),
        "by_agent": {agent: {"compared": len(v), "mean_change": mean(v)} for agent, v in by_agent.items()},
    }


def change_text(summary: Mapping[str, Any]) -> str:
    """:func:`change_summary` as the lines ``python -m mappa_env coach`` prints after its table."""
    unscored = (f"; {summary['unscored']} left out, unscored by the recorded or the new coach"
                if summary["unscored"] else "")
    if not summary["compared"]:
        return f"change: no action scored by both coaches{unscored}"
    lines = [
        f"change (new - recorded): {summary['compared']} actions compared, {summary['changed']} changed, "
        f"mean absolute change {summary['mean_abs_change']:.2f}, mean change {summary['mean_change']:+.2f}{unscored}",
    ]
    lines += [f"  {agent}: mean change {s['mean_change']:+.2f} over {s['compared']} actions"
              for agent, s in summary["by_agent"].items()]
    return "\n".join(lines)
