"""How a team is scored, as the team declares it: task types, outcome metrics, and the summary table.

A trainer or an evaluation script knows no team. It reads ``env.unwrapped.scorecard``
(:func:`scorecard_of`) and from it alone: how a set of outcomes is summarised
(:meth:`Scorecard.summarise`), which summary numbers to log and whether higher is better, and the
results table (:meth:`Scorecard.table`). ``task_types`` and ``outcome_metrics`` document what the
team's tasks and outcomes hold (each task record carries its own type, which is what samplers and the
bias monitor read).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mappa_env.records import outcome_succeeded

__all__ = ["MATH_SCORECARD", "SUCCESS_RATE", "Scorecard", "SummaryMetric", "answer_summary", "scorecard_of",
           "success_summary"]


@dataclass(frozen=True)
class SummaryMetric:
    """One number of a summary over episodes.

    Attributes:
        name: its key in the summary (``"success_rate"``), also its TensorBoard tag's last part.
        label: the table's column header (``"Success Rate (%)"``).
        higher_is_better: False for errors such as RMSE.
        digits: decimals shown in the table; ``scale`` multiplies the value first (100 for a percentage).
    """

    name: str
    label: str
    higher_is_better: bool = True
    digits: int = 3
    scale: float = 1.0

    def cell(self, value: Any) -> str:
        """The table cell for ``value`` (``n/a`` when it is missing or NaN)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{float(value) * self.scale:.{self.digits}f}"


SUCCESS_RATE = SummaryMetric("success_rate", "Success Rate (%)", digits=1, scale=100.0)


def success_summary(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary every team has: episodes, valid ones, successful ones (:func:`~mappa_env.records.outcome_succeeded`)
    and their share (NaN for no episodes)."""
    valid = sum(bool(o.get("valid")) for o in outcomes)
    succeeded = sum(outcome_succeeded(o) for o in outcomes)
    return {"n_episodes": len(outcomes), "n_valid": valid, "n_success": succeeded,
            "success_rate": succeeded / len(outcomes) if outcomes else math.nan}


def answer_summary(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A right-or-wrong team's summary: :func:`success_summary` (success = correct) plus the share of
    answers the checker could not parse (``unparsed_rate``)."""
    summary = success_summary(outcomes)
    summary["unparsed_rate"] = (len(outcomes) - summary["n_valid"]) / len(outcomes) if outcomes else math.nan
    return summary


@dataclass(frozen=True)
class Scorecard:
    """What a team declares about its scoring.

    Attributes:
        task_types: every task type the team's tasks may have.
        outcome_metrics: the metric names an episode's ``outcome["metrics"]`` may carry.
        summary_metrics: the numbers a summary reports, in table order.
        summarise: outcomes (``infos[agent]["outcome"]`` mappings) → summary mapping holding at least
            ``n_episodes`` and every ``summary_metrics`` name.
    """

    task_types: tuple[str, ...]
    outcome_metrics: tuple[str, ...] = ()
    summary_metrics: tuple[SummaryMetric, ...] = (SUCCESS_RATE,)
    summarise: Callable[[Sequence[Mapping[str, Any]]], Mapping[str, Any]] = success_summary

    def table(self, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
        """A markdown table, one row per ``(name, summary)``: Policy/Run, Episodes, then the summary metrics."""
        header = ["Policy/Run", "Episodes", *(m.label for m in self.summary_metrics)]
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for name, summary in rows:
            cells = [name.replace("|", "\\|"), str(summary.get("n_episodes", 0)),  # a pipe would split the row
                     *(m.cell(summary.get(m.name)) for m in self.summary_metrics)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def direction_note(self) -> str:
        """One sentence saying which columns are better lower (empty when all are better higher)."""
        lower = [m.label for m in self.summary_metrics if not m.higher_is_better]
        return f"Lower is better for {', '.join(lower)}; higher for the others." if lower else "Higher is better."


def scorecard_of(env: Any) -> Scorecard:
    """What ``env`` declares of its scoring (``env.unwrapped.scorecard``); an environment that declares
    nothing is summarised by its success rate, with the task types its tasks have."""
    declared = getattr(env.unwrapped, "scorecard", None)
    if isinstance(declared, Scorecard):
        return declared
    return Scorecard(task_types=tuple(sorted({t.task_type for t in env.unwrapped.tasks})))


#: How a right-or-wrong answer team (``mathchat-v0``) is scored: its problem sets are its task types.
MATH_SCORECARD = Scorecard(
    task_types=("arith", "champ", "user"), outcome_metrics=("correct", "rpg"),
    summary_metrics=(SummaryMetric("success_rate", "Accuracy (%)", digits=1, scale=100.0),
                     SummaryMetric("unparsed_rate", "Unparsed (%)", higher_is_better=False, digits=1, scale=100.0)),
    summarise=answer_summary,
)
