"""What a run tells its user: each step's figures (TensorBoard and one line on screen) and ``report.md`` with its curves.

* :func:`step_figures` computes a training step's per-agent figures once (:class:`StepFigures`); the
  trainer logs them under ``agent/<agent>/...`` and ``train/success_rate`` (:meth:`StepFigures.scalars`)
  and prints :meth:`StepFigures.line`, one line per step, as TRL's trainers print theirs.
* :func:`write_report` writes ``report.md``: what was trained, how long it took, which coach scored (the
  coach object's own name, never the config's ``auto``), the before/after table on the evaluation split,
  each agent's reward, coach score and code share at the first and the last step, a plain warning when
  no role that can run code ever ran code (:func:`no_code_note`), the coach's section, and ``curves.png``
  beside it (:func:`plot_curves`).

The per-step curves are read back from the run's TensorBoard event files (:func:`read_scalars`) rather
than kept in memory: the event files already hold every step the run logged, a resumed run's included
(the trainer's writer purges what a killed run logged after its last checkpoint), so the report plots
the whole history from the one record TensorBoard shows too, and checkpoints carry nothing more.

matplotlib (and tensorboard's reader) are imported inside the functions that need them, so importing
this module costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mappa_env.records import ERROR_STATUSES, NO_CODE, outcome_succeeded
from mappa_env.scorecard import Scorecard

#: ``{tag: [(step, value), ...]}``, steps ascending: what a run logged (:func:`read_scalars`).
Scalars = Mapping[str, Sequence[tuple[int, float]]]

CURVES = "curves.png"


# ---------------------------------------------------------------------- one step's figures
@dataclass(frozen=True)
class AgentFigures:
    """One agent's actions in one training step. ``None``: not applicable (no scored action, no code)."""

    actions: int
    unscored: int
    reward: float | None  # mean environment reward of the scored actions
    coach_score: float | None  # mean coach score (0-10)
    code_share: float  # share of the actions whose code ran
    exec_error_rate: float | None  # share of those whose code failed
    response_tokens: float
    truncated_share: float


@dataclass(frozen=True)
class StepFigures:
    """A training step's figures: what TensorBoard gets and what the screen line shows."""

    step: int
    success_rate: float
    agents: Mapping[str, AgentFigures]  # the agents that acted in the step, in team order

    def scalars(self) -> dict[str, float | None]:
        """``{tag: value}`` under the tag names of docs/training.md (``None``: not logged)."""
        out: dict[str, float | None] = {"train/success_rate": self.success_rate}
        for agent, f in self.agents.items():
            out.update({f"agent/{agent}/reward": f.reward, f"agent/{agent}/coach_score": f.coach_score,
                        f"agent/{agent}/unscored_actions": f.unscored, f"agent/{agent}/response_tokens": f.response_tokens,
                        f"agent/{agent}/code_share": f.code_share, f"agent/{agent}/exec_error_rate": f.exec_error_rate,
                        f"agent/{agent}/truncated_share": f.truncated_share})
        return out

    def line(self, total: int) -> str:
        """One compact line for the screen: ``step 3/12  success 0.25  writer r=0.41 s=6.2 code=0.00  ...``."""
        parts = [f"step {self.step}/{total}", f"success {_fmt(self.success_rate, 2)}"]
        parts += [f"{agent} r={_fmt(f.reward, 2)} s={_fmt(f.coach_score, 1)} code={_fmt(f.code_share, 2)}"
                  for agent, f in self.agents.items()]
        return "  ".join(parts)


def step_figures(step: int, agents: Sequence[str], episodes: Sequence[Any], samples: Sequence[Any]) -> StepFigures:
    """The figures of training step ``step`` from its episodes and their action samples
    (:class:`~mappa_train.rollout.EpisodeResult`, :class:`~mappa_train.rollout.ActionSample`)."""
    figures = {}
    for agent in agents:
        mine = [s for s in samples if s.agent == agent]
        if not mine:
            continue
        rewards = [s.reward for s in mine if s.reward is not None]
        scores = [s.step.get("verdict", {}).get("score") for s in mine]
        with_code = [s for s in mine if s.step.get("status") != NO_CODE]
        figures[agent] = AgentFigures(
            actions=len(mine), unscored=len(mine) - len(rewards), reward=_mean(rewards),
            coach_score=_mean([x for x in scores if x is not None]), code_share=len(with_code) / len(mine),
            exec_error_rate=_mean([s.step.get("status") in ERROR_STATUSES for s in with_code]),
            response_tokens=_mean([len(s.generation.completion_ids) for s in mine]),
            truncated_share=_mean([s.generation.truncated for s in mine]))
    success = _mean([outcome_succeeded(e.outcome) for e in episodes])
    return StepFigures(step, math.nan if success is None else success, figures)


# ---------------------------------------------------------------------- the run's history
def read_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run in ``directory`` logged, as ``{tag: [(step, value), ...]}`` (all of them: no
    reservoir sampling; what a resumed run purged is gone).

    The event files are read in the order they were begun (the wall time of their first event), not by name as
    TensorBoard's ``EventAccumulator`` does: a file's name ends in its writer's process id and a per-process
    counter, neither zero-padded, so a resume whose writer got counter 10 after one with 9 (or a higher
    process id than the next) sorts first, and the steps it purged would be read back as the run's last.
    A resumed writer's ``purge_step`` (a ``SessionLog.START`` event) drops the steps logged at or after it.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog
    from tensorboard.util.tensor_util import make_ndarray

    files = [list(EventFileLoader(str(path)).Load()) for path in Path(directory).glob("*tfevents*") if path.is_file()]
    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((events for events in files if events), key=lambda events: events[0].wall_time):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                scalars = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in scalars.items()}
            for value in event.summary.value:  # scalars are tensors of the "scalars" plugin once loaded
                if value.metadata.plugin_data.plugin_name == "scalars":
                    scalars.setdefault(value.tag, []).append((event.step, float(make_ndarray(value.tensor))))
    return {tag: points for tag, points in scalars.items() if points}


def agent_curve(scalars: Scalars, agent: str, name: str) -> list[tuple[int, float]]:
    """``agent/<agent>/<name>`` over the run, finite values only."""
    return [(s, v) for s, v in scalars.get(f"agent/{agent}/{name}", ()) if math.isfinite(v)]


def no_code_note(scalars: Scalars, code_agents: Sequence[str]) -> str | None:
    """The plain warning when no action of a role that can run code ran code at any logged step, else None."""
    curves = {agent: agent_curve(scalars, agent, "code_share") for agent in code_agents}
    steps = sorted({s for curve in curves.values() for s, _ in curve})
    if not steps or any(v > 0 for curve in curves.values() for _, v in curve):
        return None
    return (f"No code ran: in {len(steps)} training step{'' if len(steps) == 1 else 's'} (steps {steps[0]}-{steps[-1]}) "
            f"not one action of {_names(list(code_agents))} (the role{'' if len(code_agents) == 1 else 's'} whose "
            "code runs) ran code (code share 0 at every step).")


#: where a user who saw nothing move is sent: a CPU run long enough for the packaged model to improve
LONGER_RUN = ("The longer CPU run is `python -m mappa_train --config cpu-math`: the packaged model as the three agents "
              "of mathchat-v0 for about 75 minutes on 2 cores; what such runs have shown so far is in docs/benchmarks.md")


def unchanged_note(evaluations: Mapping[str, Any], scorecard: Scorecard, steps: int) -> str | None:
    """The plain note when the last evaluation's summary metrics equal the first's (nothing moved), else None."""
    ordered = sorted(evaluations.values(), key=lambda result: result["step"])
    if len(ordered) < 2:
        return None
    first, last = ordered[0]["summary"], ordered[-1]["summary"]
    if any(first.get(m.name) != last.get(m.name) for m in scorecard.summary_metrics):
        return None
    return (f"The held-out results did not change over {steps} training step{'' if steps == 1 else 's'}: too short a "
            f"run to move the policies, or nothing they can learn yet on these tasks. {LONGER_RUN}.")


# ---------------------------------------------------------------------- report.md
@dataclass(frozen=True)
class RunFacts:
    """What the trainer knows of a finished run beyond its configuration and evaluations.

    Attributes:
        steps: training steps done, over the whole run.
        wall_s: wall-clock seconds of the whole run (a resumed run's earlier processes included).
        coach: the name of the coach that scored (``coach.name``: ``receipts``, ``openai:gpt-4o``).
        agents: the team's agents, in order.
        code_agents: those whose code runs (a role with ``runs_code`` False never runs code).
        actions, unscored: training actions, and those the coach left unscored.
        resumed_at: the step this process resumed from (0: it started the run).
        process_s: wall-clock seconds of this process (differs from ``wall_s`` only when resumed).
    """

    steps: int
    wall_s: float
    coach: str
    agents: tuple[str, ...]
    code_agents: tuple[str, ...] = ()
    actions: int = 0
    unscored: int = 0
    resumed_at: int = 0
    process_s: float | None = None


def run_warnings(evaluations: Mapping[str, Any], scorecard: Scorecard, scalars: Scalars, facts: RunFacts) -> list[str]:
    """What a user must not miss about a run, one sentence each, for the report and the screen alike: no role
    that can run code ever ran code (:func:`no_code_note`), the held-out results did not move (:func:`unchanged_note`)."""
    warnings = []
    no_code = no_code_note(scalars, facts.code_agents)
    if no_code:
        warnings.append(f"Warning: {no_code}")
    unchanged = unchanged_note(evaluations, scorecard, facts.steps)
    if unchanged:
        warnings.append(unchanged)
    return warnings


def write_report(out: Path, config: Any, evaluations: Mapping[str, Any], *, facts: RunFacts, scorecard: Scorecard,
                 coaching: Sequence[str] = (), scalars: Scalars | None = None,
                 warnings: Sequence[str] | None = None, episodes_page: Path | None = None) -> Path:
    """``report.md`` (and ``curves.png`` beside it) in ``out``: what was trained, the facts of the run, the
    before/after table on the evaluation split, the first and last step per agent, and how the coach did
    (``coaching``: lines on unscored actions and the bias monitor). ``scalars``: the run's logged scalars
    (default: read from the event files in ``out``); ``warnings``: the run's :func:`run_warnings`, shown in bold
    (default: computed here). ``config`` is the run's :class:`~mappa_train.config.TrainConfig`; ``episodes_page``
    the viewer's page of the run's episodes, linked when given."""
    scalars = read_scalars(out) if scalars is None else scalars
    picture = plot_curves(out / CURVES, scorecard, evaluations, scalars, facts.agents)
    rows = [(name, result["summary"]) for name, result in evaluations.items()]
    unscored = [f"{name}: {result['summary']['unscored_actions']} of {result['summary']['actions']}"
                for name, result in evaluations.items() if "actions" in result["summary"]]
    coach = facts.coach + (f" (`env.coach` {config.env.coach})" if config.env.coach != facts.coach else "")
    steps = facts.steps
    text = [f"# Training report: {out.name}", "",
            f"{steps} step{'' if steps == 1 else 's'} of {config.algorithm.estimator} on {config.env.id} ({config.env.split} split), "
            f"{config.policy.topology} policies from {config.model.path}"
            + "".join(f" ({agent} from {path})" for agent, path in config.model.per_agent.items())
            + f", coach {coach}, "
            f"reward {config.env.reward_mode}"
            + (f" (stopped by run.max_minutes = {config.run.max_minutes:g} before run.steps = {config.run.steps})."
               if steps < config.run.steps else "."), "",
            f"- Wall-clock time: {_minutes(facts.wall_s)}"
            + (f" in all ({_minutes(facts.process_s)} in this process, resumed at step {facts.resumed_at})."
               if facts.resumed_at and facts.process_s is not None else "."),
            f"- Coach that scored: {coach}.",
            f"- Unscored training actions: {facts.unscored} of {facts.actions}.", *_lost_line(scalars, evaluations), ""]
    for warning in run_warnings(evaluations, scorecard, scalars, facts) if warnings is None else warnings:
        text += [f"**{warning}**", ""]
    text += [f"Held-out evaluation ({config.eval.split} split):", "",
             scorecard.table(rows) if rows else "(no evaluation was configured)", "",
             scorecard.direction_note() + (f" Unscored evaluation actions: {'; '.join(unscored)}." if unscored else ""), "",
             "## Training steps", "", *first_and_last(scalars, facts.agents), "",
             f"![curves]({CURVES})" if picture else "Nothing to plot: no training step was logged and no evaluation ran.", "",
             "## Coach", "", *coaching, "",
             "Curves: `tensorboard --logdir " + str(out) + "`. Agents exported to `final/`."]
    if episodes_page is not None:
        text += ["", f"Episodes, action by action (each reply, its code's output, the coach's verdict and the reward): "
                     f"[{episodes_page.name}]({episodes_page.name}), a page to open in a browser (`python -m mappa_env view "
                     f"{out}` writes it again)."]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def first_and_last(scalars: Scalars, agents: Sequence[str]) -> list[str]:
    """Markdown lines: each agent's reward, coach score and code share at the first and the last logged step."""
    steps = sorted({s for agent in agents for name in ("reward", "coach_score", "code_share")
                    for s, _ in agent_curve(scalars, agent, name)})
    if not steps:
        return ["No training step was logged."]
    first, last = steps[0], steps[-1]
    columns = (("reward", 2), ("coach_score", 1), ("code_share", 2))
    lines = [f"Per agent at the first and the last step (step {first} → step {last}; n/a: no value that step):"
             if first != last else f"Per agent at step {first}, the only step logged (n/a: no value):", "",
             "| Agent | Reward | Coach score (0-10) | Code share |", "|---|---:|---:|---:|"]
    for agent in agents:
        cells = []
        for name, digits in columns:
            values = dict(agent_curve(scalars, agent, name))
            a, b = _fmt(values.get(first), digits), _fmt(values.get(last), digits)
            cells.append(a if first == last else f"{a} → {b}")
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------- curves.png
def _lost_line(scalars: Scalars, evaluations: Mapping[str, Any]) -> list[str]:
    """The report's line on episodes lost with their Ray worker (retried once, then counted as failed), if any."""
    training = int(sum(value for _, value in scalars.get("rollout/episodes_lost", ())))
    retried = int(sum(value for _, value in scalars.get("rollout/episodes_retried", ())))
    evaluation = [f"{name} {result['summary']['lost_episodes']}" for name, result in evaluations.items()
                  if result["summary"].get("lost_episodes")]
    if not (training or retried or evaluation):
        return []
    return [f"- Episodes whose worker died: {retried} played again in training, {training} lost on every try "
            f"(counted as failed, not trained on); lost in evaluation: {', '.join(evaluation) or 'none'}."]


def plot_curves(path: Path, scorecard: Scorecard, evaluations: Mapping[str, Any], scalars: Scalars,
                agents: Sequence[str]) -> Path | None:
    """Draw the run's curves into ``path`` (PNG) and return it; None (and no file) when there is nothing to draw.

    Panels: each summary metric of the scorecard at each evaluation (x: its step, "before" being 0, in the
    table's units), the training success rate, and per agent (one line each) reward, coach score and code
    share per training step. A panel without data says so. Drawn on matplotlib's Agg canvas without
    pyplot: headless, and no global state in a process that may plot twice.
    """
    evaluated = sorted(((result["step"], result["summary"]) for result in evaluations.values()), key=lambda r: r[0])
    panels: list[tuple[str, str, list[tuple[str, list[tuple[int, float]]]]]] = []
    for metric in scorecard.summary_metrics:
        points = [(step, float(s[metric.name]) * metric.scale) for step, s in evaluated
                  if s.get(metric.name) is not None and math.isfinite(float(s[metric.name]))]
        panels.append((f"held-out {metric.label}", "evaluation step", [("", points)]))
    panels.append(("training success rate", "training step",
                   [("", [(s, v) for s, v in scalars.get("train/success_rate", ()) if math.isfinite(v)])]))
    for name, title in (("reward", "reward"), ("coach_score", "coach score (0-10)"), ("code_share", "code share")):
        panels.append((title, "training step", [(agent, agent_curve(scalars, agent, name)) for agent in agents]))
    if not any(points for _, _, lines in panels for _, points in lines):
        path.unlink(missing_ok=True)  # no stale picture of an earlier run beside a report that shows none
        return None

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = 3
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (title, xlabel, lines) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        drawn = False
        for label, points in lines:
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=label or None)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif any(label for label, points in lines if points):
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    figure.savefig(path, format="png", dpi=80)
    return path


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
