"""The credit-assignment benchmark: does a coach blame the agent, and the action, that made a fault?

``python -m mappa_env coach-bench --env dsbench-v0 --coach receipts`` plays a suite of planted faults
(:data:`SUITES`: each team's scripted reference team with exactly one fault planted, plus the fault-free
team as control) whose culprit agent and culprit action are known, records every coach request once
(:func:`play_suite`; an evaluation results file that :func:`mappa_env.coach.offline.load_episodes` reads),
re-scores the recorded actions with any coach (:func:`score_suite`, through
:func:`mappa_env.coach.offline.recoach`), so comparing coaches costs only coach calls, and reports per
fault and overall:

* **agent hit**: the culprit agent's mean score (over its scored actions) is strictly lower than every
  other agent's. A tie for the lowest is a miss: a coach that cannot tell two agents apart has not named
  the culprit. Agents without a scored action are left out of the comparison; with no other agent
  scored there is nothing to compare with, and that is a miss too.
* **step hit**: the culprit action's score is strictly lower than that of every other scored action of
  the episode (the same rules). An unscored culprit action is a miss.
* **innocence**: of the agents downstream of the culprit (after it in the pipeline), the share whose
  actions all score at least ``threshold`` (default 4): they were not blamed for the culprit's fault.
  Per episode, then averaged over the episodes; ``None`` ("n/a") when the culprit is the last agent.
* **clean** (controls): the share of fault-free episodes where no action scores below ``threshold``.

Unscored actions are never counted as low: they are counted apart (``unscored``), so a coach that leaves
actions unscored shows it. The culprit action is where the fault was made (the data engineer's action
that should have saved ``X_test.pkl``), not where it surfaced (the analyst's crash); each
:class:`PlantedFault` says which, and ``tests/coach/test_coach_bench.py`` checks it against the recorded
episodes.

A hindsight coach (``timing="hindsight"``) is given each recorded action with the episode's outcome and
whole trajectory, as the environment gives them at the end of an episode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mappa_env.coach.offline import load_episodes, recoach

#: Scores below this flag an action: an innocent agent downstream of a fault, or any agent of a control.
THRESHOLD = 4.0
BENCH_NAME = "coach-bench"


@dataclass(frozen=True)
class PlantedFault:
    """One case of a suite: a scripted team, and for a fault the agent and action that made it.

    Attributes:
        name: the case's name in the report (the fault, or ``"control"``).
        policy: the team that plays it, by its :func:`mappa_env.policies.make_policy` name.
        culprit: the agent that made the fault; None for a fault-free control.
        action_index: the culprit's action (0-based, per agent, as ``StepRecord.action_index``) where the
            fault was made; None for a control.
        what: where the fault is made and where it surfaces, in words.
    """

    name: str
    policy: str
    culprit: str | None = None
    action_index: int | None = None
    what: str = ""

    def __post_init__(self) -> None:
        if (self.culprit is None) != (self.action_index is None):
            raise ValueError(f"{self.name}: a fault names both its culprit and its action index, a control neither")

    @property
    def is_control(self) -> bool:
        return self.culprit is None


@dataclass(frozen=True)
class BenchSuite:
    """The planted faults of one team, each played on every task of ``tasks``."""

    env_id: str
    split: str
    tasks: tuple[str, ...]
    cases: tuple[PlantedFault, ...]

    def case(self, name: str) -> PlantedFault:
        return next(c for c in self.cases if c.name == name)


_CONTROL = "the reference team, no fault planted"
DSBENCH_SUITE = BenchSuite(
    env_id="dsbench-v0",
    split="heldout",
    tasks=("builtin/car-vehicle-class", "builtin/body-weight"),  # one classification, one regression task
    cases=(
        PlantedFault("missing-x-test", "buggy-missing-x-test", "data_engineer", 0,
                     "its code saves every output but X_test.pkl; the analyst crashes on the missing file"),
        PlantedFault("missing-model", "buggy-missing-model", "modeler", 0,
                     "its code trains but never saves model.pkl; the analyst crashes on the missing file"),
        PlantedFault("analyst-keyerror", "buggy-analyst-keyerror", "analyst", 0,
                     "its code indexes a column that does not exist and crashes"),
        PlantedFault("wrong-columns", "buggy-wrong-columns", "analyst", 0,
                     "its code writes the submission with a wrong column name: invalid"),
        PlantedFault("train-ids", "buggy-train-ids", "data_engineer", 0,
                     "its code saves train.csv's ids as test_ids.pkl; the analyst's submission fails on them"),
        PlantedFault("target-leak", "buggy-target-leak", "data_engineer", 0,
                     "its code adds a feature equal to the target; the modeler trains on it"),
        PlantedFault("id-feature", "buggy-id-feature", "data_engineer", 0,
                     "its code keeps the id column as a feature"),
        PlantedFault("swallowed-error", "buggy-swallowed-error", "modeler", 0,
                     "its code catches the training error, prints it and saves an untrained model"),
        PlantedFault("false-claim", "buggy-false-claim", "analyst", 0,
                     "it writes no code and says it saved submission.csv"),
        PlantedFault("leak-diagnosed", "leak-diagnosed", "data_engineer", 0,
                     "the target leak; the modeler rightly refuses to train on it, and says why"),
        PlantedFault("control", "scripted", what=_CONTROL),
    ),
)
MATHCHAT_SUITE = BenchSuite(
    env_id="mathchat-v0",
    split="heldout",
    tasks=("arith/l1-0000", "arith/l4-0000"),
    cases=(
        PlantedFault("executor-crash", "math-executor-crash", "code_executor", 0,
                     "its code raises; the verifier still boxes the solver's right answer"),
        PlantedFault("verifier-mismatch", "math-verifier-mismatch", "verifier", 0,
                     "it boxes something else than the right number the executor printed"),
        PlantedFault("solver-wrong", "math-solver-wrong", "problem_solver", 0,
                     "it proposes a wrong answer; the executor's code prints the right one"),
        PlantedFault("executor-wrong", "math-executor-wrong", "code_executor", 0,
                     "its code prints a wrong number after a right solver; the verifier boxes it"),
        PlantedFault("executor-false-claim", "math-executor-false-claim", "code_executor", 1,
                     "its code prints the right answer, its closing message states another"),
        PlantedFault("executor-no-code", "math-executor-no-code", "code_executor", 0,
                     "it checks nothing: a reply without code"),
        PlantedFault("solver-no-answer", "math-solver-no-answer", "problem_solver", 0,
                     "it commits to no answer; the executor computes the right one"),
        PlantedFault("verifier-no-box", "math-verifier-no-box", "verifier", 0,
                     "it agrees with the executor in words but boxes nothing: no answer to grade"),
        PlantedFault("control", "scripted", what=_CONTROL),
    ),
)
#: One suite per team. ``math-silent`` and ``silent`` are not in them: every agent fails, so no single
#: culprit exists.
SUITES = {suite.env_id: suite for suite in (DSBENCH_SUITE, MATHCHAT_SUITE)}


def suite_of(env_id: str) -> BenchSuite:
    """The suite of ``env_id``'s team; ValueError naming the teams that have one."""
    if env_id not in SUITES:
        raise ValueError(f"no credit-assignment suite for {env_id!r}; suites exist for {', '.join(SUITES)}")
    return SUITES[env_id]


def default_episodes_file(env_id: str) -> Path:
    """Where ``coach-bench`` keeps a team's recorded suite unless told otherwise."""
    return Path("results") / f"{BENCH_NAME}-{env_id}.json"


# ---------------------------------------------------------------------------------------------- record
def play_suite(env_id: str, *, sandbox: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Play every case of ``env_id``'s suite on each of its tasks, recording every coach request.

    The teams are scripted and deterministic; the recording coach is ``receipts`` (its verdicts are not
    used: :func:`score_suite` re-scores). ``sandbox`` defaults to the environment's. Returns an evaluation
    results mapping (``env_id``, ``format_version``, ``episodes``) whose episodes also carry ``case``,
    ``culprit`` and ``culprit_action_index``; write it with :func:`mappa_env.evaluation.write_results`.
    """
    from tqdm.auto import tqdm

    from mappa_env.coach.receipts import ReceiptsCoach
    from mappa_env.evaluation import run_episode
    from mappa_env.policies import bind_to, make_policy
    from mappa_env.records import RECORDS_FORMAT_VERSION
    from mappa_env.registration import make

    suite = suite_of(env_id)
    env = make(env_id, split=suite.split, coach=ReceiptsCoach(), **({"sandbox": sandbox} if sandbox else {}))
    try:
        missing = sorted(set(suite.tasks) - {t.id for t in env.unwrapped.tasks})
        if missing:
            raise ValueError(f"{env_id}'s {suite.split} split has no task {', '.join(missing)}; the suite needs them")
        episodes = []
        bar = tqdm(total=len(suite.cases) * len(suite.tasks), desc=f"{BENCH_NAME} {env_id}", unit="episode",
                   disable=not progress)
        for case in suite.cases:
            team = bind_to(make_policy(case.policy, env_id=env_id), env)
            for task_id in suite.tasks:
                episode = run_episode(env, team, seed=0, task_id=task_id, record_requests=True)
                episodes.append({**episode, "team": case.policy, "case": case.name, "culprit": case.culprit,
                                 "culprit_action_index": case.action_index})
                bar.update()
        bar.close()
    finally:
        env.close()
    return {"policy": BENCH_NAME, "env_id": env_id, "split": suite.split, "format_version": RECORDS_FORMAT_VERSION,
            "episodes": episodes}


def load_suite(path: str | Path, env_id: str) -> list[dict[str, Any]]:
    """The recorded episodes of a suite file written by ``coach-bench``; ValueError when it is not one of ``env_id``."""
    episodes = load_episodes(path)
    if not episodes or any("case" not in e for e in episodes):
        raise ValueError(f"{path}: not a recorded {BENCH_NAME} suite (its episodes name no case); record one with "
                         f"`python -m mappa_env coach-bench --env {env_id} --episodes-file {path} --record`")
    recorded = sorted({r["env_id"] for e in episodes for r in e["coach_requests"][:1]})
    if recorded != [env_id]:
        raise ValueError(f"{path}: recorded on {', '.join(recorded)}, not {env_id}; pass --env "
                         f"{recorded[0] if recorded else '?'} or another --episodes-file")
    return episodes


# ----------------------------------------------------------------------------------------------- score
def score_suite(episodes: Sequence[Mapping[str, Any]], coach: Any, *, threshold: float = THRESHOLD,
                progress: bool = False) -> dict[str, Any]:
    """Re-score the recorded suite with ``coach`` and compute the benchmark's figures (``progress``: a bar).

    Returns ``coach``, ``threshold``, ``cases`` (one mapping per case, in suite order: see
    :func:`summarise`), ``overall`` (``faults``: the fault episodes pooled; ``controls``),
    ``unscored_reasons`` (how many actions the coach left unscored, by its reason, most frequent first)
    and ``episodes`` (:func:`episode_figures` of each, with its case and task).
    """
    scores: dict[int, dict[tuple[str, int], float | None]] = {n: {} for n in range(len(episodes))}
    reasons: Counter[str] = Counter()
    for row in recoach(episodes, coach, progress=progress):  # a hindsight coach gets the outcome and trajectory there
        scores[row["episode"]][(row["role"], row["action"] - 1)] = row["score"]
        if row["score"] is None:
            reasons[row["details"].get("unscored_reason", "unknown")] += 1
    figures = []
    for number, episode in enumerate(episodes):
        agents = list(dict.fromkeys(r["agent"] for r in episode["records"]))  # pipeline order
        figures.append({"case": episode["case"], "task_id": episode["task_id"], "culprit": episode["culprit"],
                        "action_index": episode["culprit_action_index"],
                        **episode_figures(scores[number], agents, culprit=episode["culprit"],
                                          action_index=episode["culprit_action_index"], threshold=threshold)})
    report = summarise(figures)
    return {"coach": getattr(coach, "name", type(coach).__name__), "timing": getattr(coach, "timing", "online"),
            "threshold": threshold, **report, "unscored_reasons": dict(reasons.most_common()), "episodes": figures}


def episode_figures(scores: Mapping[tuple[str, int], float | None], agents: Sequence[str], *, culprit: str | None,
                    action_index: int | None, threshold: float = THRESHOLD) -> dict[str, Any]:
    """One episode's figures from its scores (``(agent, action_index) → score``, None for unscored).

    ``agents`` is the pipeline order. For a fault (``culprit`` given): ``agent_hit``, ``step_hit``,
    ``downstream`` (the agents after the culprit), ``innocent`` (those of them with no scored action below
    ``threshold``), ``innocence`` (their share; None without downstream agents), ``agent_means``,
    ``culprit_score``; for a control: ``clean``. Both: ``flagged`` (the actions below ``threshold``, as
    ``[agent, action_index, score]``) and ``unscored`` (how many actions). A tie for the lowest is a miss,
    and so is a culprit with nothing scored to compare it with (see the module docstring).
    """
    scored = {key: float(s) for key, s in scores.items() if s is not None}
    flagged = [[agent, index, s] for (agent, index), s in scored.items() if s < threshold]
    common = {"flagged": flagged, "unscored": len(scores) - len(scored)}
    if culprit is None:
        return {**common, "clean": not flagged}
    if culprit not in agents:
        raise ValueError(f"the culprit {culprit!r} never acted in this episode (agents: {', '.join(agents)})")
    by_agent: dict[str, list[float]] = {}
    for (agent, _), s in scored.items():
        by_agent.setdefault(agent, []).append(s)
    means = {agent: sum(v) / len(v) for agent in agents if (v := by_agent.get(agent))}
    mine, others = means.get(culprit), [m for agent, m in means.items() if agent != culprit]
    agent_hit = mine is not None and bool(others) and all(mine < m for m in others)
    key = (culprit, action_index)
    step, rest = scored.get(key), [s for k, s in scored.items() if k != key]
    step_hit = step is not None and bool(rest) and all(step < s for s in rest)
    downstream = list(agents[agents.index(culprit) + 1:])
    innocent = [a for a in downstream if all(s >= threshold for (agent, _), s in scored.items() if agent == a)]
    return {**common, "agent_hit": agent_hit, "step_hit": step_hit, "agent_means": means, "culprit_score": step,
            "downstream": downstream, "innocent": innocent,
            "innocence": len(innocent) / len(downstream) if downstream else None}


def summarise(figures: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per case (in the order cases first appear) and overall: counts and shares of the episode figures.

    A fault's mapping holds ``name``, ``culprit``, ``action_index``, ``episodes``, ``agent_hits``,
    ``step_hits``, ``downstream_agents``, ``innocent_agents``, ``unscored``, the shares ``agent_accuracy``
    and ``step_accuracy`` and ``innocence``: the mean over its episodes of each one's innocent share (None
    when no episode has a downstream agent); a control's ``clean_episodes`` and ``clean`` instead.
    ``overall`` pools the faults and the controls the same way.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for f in figures:
        groups.setdefault(f["case"], []).append(f)
    cases = [_pool(name, group) for name, group in groups.items()]
    faults = [f for f in figures if "agent_hit" in f]
    controls = [f for f in figures if "clean" in f]
    return {"cases": cases, "overall": {"faults": _pool("all faults", faults) if faults else None,
                                        "controls": _pool("all controls", controls) if controls else None}}


def _pool(name: str, group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    share = lambda part, whole: part / whole if whole else None  # noqa: E731
    out: dict[str, Any] = {"name": name, "episodes": len(group), "unscored": sum(f["unscored"] for f in group)}
    if "clean" in group[0]:
        clean = sum(f["clean"] for f in group)
        return {**out, "clean_episodes": clean, "clean": share(clean, len(group))}
    culprits = sorted({(f["culprit"], f["action_index"]) for f in group if f.get("culprit") is not None})
    agent_hits, step_hits = sum(f["agent_hit"] for f in group), sum(f["step_hit"] for f in group)
    downstream, innocent = sum(len(f["downstream"]) for f in group), sum(len(f["innocent"]) for f in group)
    shares = [f["innocence"] for f in group if f["innocence"] is not None]
    return {**out, **({"culprit": culprits[0][0], "action_index": culprits[0][1]} if len(culprits) == 1 else {}),
            "agent_hits": agent_hits, "step_hits": step_hits, "downstream_agents": downstream,
            "innocent_agents": innocent, "agent_accuracy": share(agent_hits, len(group)),
            "step_accuracy": share(step_hits, len(group)), "innocence": share(sum(shares), len(shares))}


# ---------------------------------------------------------------------------------------------- report
def report_table(report: Mapping[str, Any]) -> str:
    """The figures as markdown: one row per case, then the faults and the controls pooled (with shares)."""
    lines = ["| case | culprit (agent, action) | episodes | agent hit | step hit | innocence | clean | unscored |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    rows = [(r, False) for r in report["cases"]] + [(r, True) for r in report["overall"].values() if r]
    for r, pooled in rows:
        if "clean" in r:
            cells = ["-", "-", "-", _count(r["clean_episodes"], r["episodes"], pct=pooled)]
        else:
            cells = [_count(r["agent_hits"], r["episodes"], pct=pooled), _count(r["step_hits"], r["episodes"], pct=pooled),
                     _percent(r["innocence"]), "-"]
        culprit = f"{r['culprit']}, action {r['action_index'] + 1}" if "culprit" in r else "-"
        name = f"**{r['name']}**" if pooled else r["name"]
        lines.append(f"| {name} | {culprit} | {r['episodes']} | {' | '.join(cells)} | {r['unscored']} |")
    return "\n".join(lines)


def report_summary(report: Mapping[str, Any], env_id: str) -> str:
    """One sentence with the overall figures."""
    faults, controls = report["overall"]["faults"], report["overall"]["controls"]
    parts = []
    if faults:
        parts += [f"agent-level accuracy {_percent(faults['agent_accuracy'])}",
                  f"step-level {_percent(faults['step_accuracy'])}", f"innocence {_percent(faults['innocence'])}"]
    if controls:
        parts.append(f"clean controls {_percent(controls['clean'])}")
    timing = "" if report.get("timing", "online") == "online" else f" ({report['timing']})"
    summary = (f"coach {report['coach']}{timing} on {env_id}: {', '.join(parts)} (threshold {report['threshold']:g}; "
               "a tie for the lowest is a miss)")
    reasons = report.get("unscored_reasons") or {}
    if reasons:  # an unscored action is never low: many of them make the figures say little about the coach
        counts = ", ".join(f"{reason} {n}" for reason, n in reasons.items())
        summary += f"; {sum(reasons.values())} actions unscored ({counts}): see docs/coach.md for each reason"
    return summary


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f} %"


def _count(part: int, whole: int, *, pct: bool = False) -> str:
    if not whole:
        return "n/a"
    return f"{part}/{whole}" + (f" ({100 * part / whole:.1f} %)" if pct else "")
