"""The training loop, read top to bottom: collect → advantages → update per agent → log → checkpoint → evaluate.

``train(config)`` runs a whole training run and returns its output directory, which holds the
TensorBoard event files, ``checkpoints/``, ``final/`` (each agent exported in Hugging Face format) and
``report.md`` with ``curves.png`` (:mod:`mappa_train.report`: the before/after table on the held-out split,
the run's facts and curves). Each step prints one line on screen (:meth:`~mappa_train.report.StepFigures.line`).
Tag names are listed in docs/training.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mappa_train import checkpoint, episode_files, seeding
from mappa_env.paths import write_text_whole
from mappa_env.scorecard import scorecard_of

from mappa_train.coach_watch import BiasWatch, UnscoredWatch, load_audit_set, probe_coach
from mappa_train.config import TrainConfig, apply_threads
from mappa_train.distributed import SINGLE, Processes, device_of, processes_from_launch
from mappa_train.environments import Environments
from mappa_train.learner import GroupStats, Optimisation, update
from mappa_train.policy import TeamModel, export, group_state_dict, load_group_state_dict
from mappa_train.report import RunFacts, StepFigures, read_scalars, run_warnings, step_figures, write_report
from mappa_train.rollout import ActionSample, EpisodeResult, EpisodeSpec, RolloutTimes, collect
from mappa_train.sampler import TaskSampler

#: The coach's counters that add up over a run (logged as running totals under ``coach/``).
COACH_COUNTERS = ("calls", "cache_hits", "retries", "unscored", "prompt_tokens", "completion_tokens", "cost_usd")


def output_directory(config: TrainConfig) -> Path:
    if config.run.output_dir:
        return Path(config.run.output_dir)
    name = config.run.name or f"{config.env.id}-{config.policy.topology}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    return Path("runs") / name


def train(config: TrainConfig) -> Path:
    """Run training as configured; returns the output directory.

    Launched as several processes (``accelerate launch`` or ``torchrun``), each plays a share of every step's
    episodes and of the update, and process 0 alone writes the run's files (:mod:`mappa_train.distributed`).
    """
    from mappa_env.coach import close_coach, make_coach
    from torch.utils.tensorboard import SummaryWriter

    config.validate()
    processes = processes_from_launch()
    check_launch(config, processes)
    began_run = time.monotonic()
    apply_threads(config)
    out = output_directory(config)
    seed_everything(config.run.seed)
    watch = config.coach_watch
    coach = make_coach(config.env.coach, **config.env.coach_kwargs)  # one coach: shared cache, limits, statistics
    bias = BiasWatch.from_config(watch)  # over the whole run
    unscored = UnscoredWatch(warn_share=watch.warn_unscored_share, stop_after=watch.stop_after_unscored_steps)
    environments = Environments(config, coach)
    served = contextlib.ExitStack()  # a vLLM server the run started, stopped first at the end
    try:  # from here on, whatever fails closes the coach and the environments made so far
        training = environments.open(config.env.split, config.rollout.envs_in_flight,
                                     calibration=bias.calibrate if watch.calibrate else None)
        tasks = [(t.id, t.task_type) for t in training.local.unwrapped.tasks]
        if config.env.reward_mode != "outcome":  # in outcome mode the coach's scores are not the rewards
            probe_coach(coach, env_id=config.env.id, agents=training.local.possible_agents, task_id=tasks[0][0],
                        task_type=tasks[0][1])
        if watch.audit_every and processes.is_main:  # recorded once (or loaded), re-scored every audit_every steps
            bias.audit_set = load_audit_set(watch, env_id=config.env.id, split=config.eval.split,
                                            sandbox=config.env.sandbox, seed=config.run.seed)
        model = dataclasses.replace(config.model, device=device_of(processes, config.model.device))
        team = TeamModel(training.local.possible_agents, model, config.policy, seed=config.run.seed)
        sampler = TaskSampler(tasks, stratify=config.rollout.stratify, seed=config.run.seed)
        optimisation = Optimisation(team, config.optim, total_updates=config.run.steps * config.algorithm.updates_per_step)

        start_step, evaluations, coach_carried, wall_carried = 0, {}, {}, 0.0
        if config.run.resume:
            state = checkpoint.load_latest(out / "checkpoints")
            if state is not None:
                for group, tensors in state["parameters"].items():
                    load_group_state_dict(team, group, tensors)
                optimisation.load_state_dict(state["optimisation"])
                sampler.load_state_dict(state["sampler"])
                start_step, evaluations = state["step"], state.get("evaluations", {})
                coach_carried = state.get("coach_counters", {})  # this process's coach counts start from 0
                wall_carried = state.get("wall_s", 0.0)  # the earlier processes' wall-clock time
                if "bias_monitor" in state:  # checkpoints written before the coach was watched have none
                    bias.load_state_dict(state["bias_monitor"])
                    unscored.load_state_dict(state["unscored"])
                if "after" in evaluations and start_step < config.run.steps:  # a run stopped by run.max_minutes
                    evaluations[f"step {start_step}"] = evaluations.pop("after")  # goes on: its end is a midpoint now
        processes.broadcast_parameters([p for g in team.groups for p in team.trainable_parameters(g)])  # equal from here
        # a resumed run first discards whatever the killed run logged after its last checkpoint (step N's
        # scalars are logged as N, after-the-fact; from scratch, everything: the "before" evaluation is step 0)
        purge = (start_step + 1 if start_step else 0) if config.run.resume else None
        writer = SummaryWriter(str(out), purge_step=purge) if processes.is_main else NoWriter()
        # what generates: the team itself (hf), or a vLLM server serving its adapters, published after each update
        actor: Any = team
        if config.generation.backend == "vllm":
            from mappa_train.vllm_generation import vllm_team

            actor = served.enter_context(vllm_team(team, config, out))
        if start_step == 0 and processes.is_main:
            writer.add_text("config", "```yaml\n" + _yaml(config.to_dict()) + "\n```", 0)
            (out / "config.yaml").write_text(_yaml(config.to_dict()), encoding="utf-8")

        def evaluate(label: str, step: int) -> None:
            """evaluations[label]; process 0 keeps its episodes for the viewer."""
            keep = functools.partial(episode_files.record_evaluation, out, label=label, step=step, env_id=config.env.id)
            evaluations[label] = evaluate_team(actor, config, environments, writer, step=step, processes=processes,
                                               on_episodes=keep if processes.is_main else None)

        if config.eval.before and "before" not in evaluations:
            evaluate("before", 0)

        progress = _progress(config.run.steps, "training", unit="step", enabled=config.run.progress and processes.is_main,
                             initial=start_step)
        say = progress.write if processes.is_main else NoWriter().write  # what every process knows, said once
        deadline = time.monotonic() + config.run.max_minutes * 60 if config.run.max_minutes else None
        steps_done = start_step
        for step in range(start_step, config.run.steps):
            # ---------------------------------------------------------------- collect
            task_ids = sampler.next(config.rollout.tasks_per_step)
            specs = [EpisodeSpec(task_id, seed=seeding.derive(config.run.seed, seeding.EPISODE, step, i))
                     for i, task_id in enumerate(t for t in task_ids for _ in range(config.rollout.samples_per_task))]
            progress.set_description(f"step {step + 1}/{config.run.steps}: collecting")
            episodes, times = processes.collect(
                functools.partial(collect, actor, training.slots), specs, temperature=config.model.temperature,
                top_p=config.model.top_p, seed=processes.seed(seeding.derive(config.run.seed, seeding.ROLLOUT, step)),
                on_generate=lambda t: progress.set_postfix(actions=t.actions))
            samples = [s for e in episodes for s in e.samples]
            if times.episodes_retried or times.episodes_lost:
                say(f"warning: step {step + 1}: {times.episodes_retried} episodes played again after their "
                    f"worker died, {times.episodes_lost} lost on every try (counted as failed, not trained on)",
                    file=sys.stderr)

            # ---------------------------------------------------------------- advantages + update per agent
            progress.set_description(f"step {step + 1}/{config.run.steps}: updating")
            began = time.perf_counter()
            group_stats = update(team, optimisation, samples, config.algorithm, mask_truncated=config.rollout.mask_truncated,
                                 seed=seeding.derive(config.run.seed, seeding.UPDATE, step), processes=processes)
            update_s = time.perf_counter() - began  # time/update_s is the learner's: publishing is not in it
            if actor is not team:
                actor.publish()  # the new weights, under new adapter names, before anything is generated again

            # ---------------------------------------------------------------- log (and watch the coach)
            bias.observe(episodes, step=step + 1)  # one look of the pre-registered bias alert per step
            warning = unscored.observe(step + 1, samples)
            if warning:
                say(f"warning: {warning}", file=sys.stderr)
            bias_scalars = bias.scalars()
            if bias.audit_due(step + 1) and processes.is_main:  # its figures are logged only there
                bias_scalars.update(bias.audit(coach, step + 1))
            figures = log_step(writer, step + 1, team, episodes, samples, group_stats, times, update_s,
                               coach_counters(processes.gather(environments.coach_snapshots()), coach_carried), bias_scalars)
            say(figures.line(config.run.steps))
            if config.run.sample_every and (step + 1) % config.run.sample_every == 0:
                writer.add_text("sample/trajectory", trajectory_text(episodes[0]), step + 1)
            if config.run.keep_episode_steps and processes.is_main:  # for the viewer: episodes.html
                episode_files.record_step(out, episodes, step=step + 1, keep=config.run.keep_episode_steps,
                                          env_id=config.env.id)

            # ---------------------------------------------------------------- evaluate, checkpoint
            steps_done = step + 1
            # every process stops at the same step: once one of them is past run.max_minutes
            last = step + 1 == config.run.steps or processes.any(deadline is not None and time.monotonic() >= deadline)
            if config.eval.every and (step + 1) % config.eval.every == 0 and not last:
                began_evaluation = time.monotonic()
                evaluate(f"step {step + 1}", step + 1)
                if deadline is not None:  # run.max_minutes counts training: an evaluation on the way is extra
                    deadline += time.monotonic() - began_evaluation
            if last and config.eval.after:
                evaluate("after", step + 1)
            if last or (config.run.checkpoint_every and (step + 1) % config.run.checkpoint_every == 0):
                counters = coach_counters(processes.gather(environments.coach_snapshots()), coach_carried)  # evaluations' too
                if processes.is_main:  # the others resume from process 0's checkpoint
                    checkpoint.save(out / "checkpoints", step + 1, {
                        "parameters": {g: group_state_dict(team, g) for g in team.groups},
                        "optimisation": optimisation.state_dict(), "sampler": sampler.state_dict(),
                        "evaluations": evaluations, "coach_counters": counters,
                        "bias_monitor": bias.state_dict(), "unscored": unscored.state_dict(), "config": config.to_dict(),
                        "wall_s": wall_carried + time.monotonic() - began_run,
                    })
                    write_evaluations(out, evaluations)
            writer.flush()
            progress.update(1)
            if last:
                break  # run.steps reached, or run.max_minutes spent
        progress.close()
        if not processes.is_main:  # the run's files are process 0's
            return out
        export(team, out / "final")
        writer.close()  # the report reads every step back from the event files
        process_s = time.monotonic() - began_run
        facts = RunFacts(steps=steps_done, wall_s=wall_carried + process_s, coach=getattr(coach, "name", type(coach).__name__),
                         agents=tuple(team.agents), code_agents=code_running_agents(training.local), actions=unscored.actions,
                         unscored=unscored.unscored, resumed_at=start_step, process_s=process_s)
        # the per-step curves are read back from the event files rather than kept in memory: they hold every
        # step logged, a resumed run's earlier ones too (the writer purged what a killed run logged after its
        # last checkpoint), so the report shows the whole history and the checkpoints carry nothing more
        scalars = read_scalars(out)
        scorecard = scorecard_of(training.local)
        warnings = run_warnings(evaluations, scorecard, scalars, facts)
        page = out / episode_files.PAGE if episode_files.recorded(out) else None
        write_report(out, config, evaluations, facts=facts, scorecard=scorecard,
                     coaching=[unscored.summary(), "", *bias.summary()], scalars=scalars, warnings=warnings,
                     episodes_page=page)
        episode_files.write_run_page(out)  # after the report: the page shows its curves.png
        for warning in warnings:
            progress.write(f"{warning} (see {out / 'report.md'})", file=sys.stderr)
    finally:
        try:
            served.close()
        finally:
            try:
                environments.close()
            finally:
                try:
                    close_coach(coach)
                finally:
                    processes.close()
    return out


def check_launch(config: TrainConfig, processes: Processes) -> None:
    """Refuse, before anything is built, what several processes cannot run together."""
    if processes.world == 1:
        return
    problems = []
    if config.generation.backend != "hf":
        problems.append(f"generation.backend {config.generation.backend} (one server for the run): use hf, each process "
                        "generating its share of the episodes on its own GPU")
    if config.rollout.backend != "local":
        problems.append(f"rollout.backend {config.rollout.backend} (Ray spreads the rollouts of one trainer process "
                        "itself): use local, or launch one process")
    if problems:
        raise ValueError(f"launched as {processes.world} processes, which data-parallel training supports with: "
                         + "; ".join(problems))


class NoWriter:
    """What a process other than process 0 logs to: nothing (process 0 writes the run's TensorBoard files)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def code_running_agents(env: Any) -> tuple[str, ...]:
    """The agents whose code runs: the roles ``env.unwrapped.roles`` declares with ``runs_code`` (every agent
    of an environment that declares no roles)."""
    roles = getattr(env.unwrapped, "roles", None)
    if not roles:
        return tuple(env.possible_agents)
    return tuple(r.name for r in roles if getattr(r, "runs_code", True))


def coach_counters(snapshots: Sequence[Mapping[str, Any]], carried: Mapping[str, Any]) -> dict[str, Any]:
    """The coaches' running totals over the whole run: the sum of this process's coaches' ``snapshots`` (the
    trainer's, and each Ray worker's), plus those a resumed run carried over.

    Empty when no coach keeps statistics; ``cost_usd`` stays ``None`` (unknown) once any part is.
    """
    if not snapshots:
        return {}
    totals = {}
    for name in COACH_COUNTERS:
        parts = [snapshot.get(name, 0) for snapshot in snapshots] + [carried.get(name, 0)]
        totals[name] = None if any(part is None for part in parts) else sum(parts)
    return totals


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- logging
def log_step(writer: Any, step: int, team: TeamModel, episodes: Sequence[EpisodeResult], samples: Sequence[ActionSample],
             group_stats: Mapping[str, GroupStats], times: RolloutTimes, update_s: float,
             coach_totals: Mapping[str, Any], bias_scalars: Mapping[str, float]) -> StepFigures:
    """Write one step's scalars under the tag names documented in docs/training.md; returns the step's
    figures (:func:`~mappa_train.report.step_figures`), which the screen line shows too.

    ``coach_totals`` are the coach's running totals over the run (:func:`coach_counters`), ``bias_scalars``
    the running bias monitor's ``coach/bias/...`` values (:class:`~mappa_train.coach_watch.BiasWatch`).
    """
    figures = step_figures(step, team.agents, episodes, samples)
    for tag, value in figures.scalars().items():
        _scalar(writer, tag, value, step)
    for agent in figures.agents:  # the agents that acted
        stats = group_stats[team.group_of(agent)]
        for name in ("advantage", "policy_loss", "kl_to_reference", "approx_kl", "clip_fraction", "entropy",
                     "grad_norm", "learning_rate", "tis_weight"):  # tis_weight: nan (not logged) unless algorithm.tis_cap
            _scalar(writer, f"agent/{agent}/{name}", getattr(stats, name), step)
        if stats.stale_masked:  # only ever with algorithm.stale_samples mask
            _scalar(writer, f"agent/{agent}/stale_masked", stats.stale_masked, step)
    for task_type in sorted({s.task_type for s in samples}):  # what the update saw per task type (after any calibration)
        rewards = [s.reward for s in samples if s.task_type == task_type and s.reward is not None]
        _scalar(writer, f"train/reward/{task_type}", np.mean(rewards) if rewards else None, step)
    for name, value in coach_totals.items():
        _scalar(writer, f"coach/{name}", value, step)
    _scalar(writer, "coach/unscored_actions", sum(s.reward is None for s in samples), step)
    for tag, value in bias_scalars.items():
        _scalar(writer, tag, value, step)
    tokens = sum(len(s.generation.completion_ids) for s in samples)
    _scalar(writer, "rollout/episodes", sum(not e.lost for e in episodes), step)  # played to the end
    _scalar(writer, "rollout/episodes_retried", times.episodes_retried, step)  # after their worker died
    _scalar(writer, "rollout/episodes_lost", times.episodes_lost, step)  # lost on every try: counted as failed
    _scalar(writer, "time/generation_s", times.generation_s, step)
    _scalar(writer, "time/environment_s", times.environment_s, step)
    _scalar(writer, "time/rollout_wall_s", times.wall_s, step)
    _scalar(writer, "time/update_s", update_s, step)
    _scalar(writer, "throughput/generated_tokens_per_s", tokens / times.generation_s if times.generation_s else None, step)
    trained = sum(stats.tokens for stats in group_stats.values())
    _scalar(writer, "throughput/update_tokens_per_s", trained / update_s if update_s else None, step)
    return figures


def _scalar(writer: Any, tag: str, value: Any, step: int) -> None:
    if value is None:
        return
    value = float(value)
    if np.isfinite(value):
        writer.add_scalar(tag, value, step)


def trajectory_text(episode: EpisodeResult, limit: int = 1500) -> str:
    """A readable trace of one episode: each action's reply, status and coach verdict."""
    lines = [f"**task** {episode.task_id} ({episode.task_type}); outcome: {json.dumps(dict(episode.outcome), default=str)[:300]}"]
    for sample in episode.samples:
        verdict = sample.step.get("verdict", {})
        # the action as the environment took it: a prefilled reply prefix is in it, not in the generation
        reply = str(sample.step.get("action", sample.generation.text)).strip().replace("\n", "  \n")
        lines.append(f"\n**{sample.agent} #{sample.action_index + 1}**: status {sample.step.get('status')}, "
                     f"reward {sample.reward}, coach {verdict.get('score')}: {str(verdict.get('rationale', ''))[:200]}\n\n"
                     f"{reply[:limit]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- evaluation
def evaluate_team(team: Any, config: TrainConfig, environments: Environments, writer: Any, *,
                  step: int, processes: Processes = SINGLE,
                  on_episodes: Callable[[list[EpisodeResult]], None] | None = None) -> dict[str, Any]:
    """Play the evaluation split (one episode per task, or ``eval.episodes``) at the evaluation temperature.

    ``team`` is what generates: the :class:`~mappa_train.policy.TeamModel`, or the vLLM server serving it.

    Episodes run through the same batched rollout as training, on environments of the evaluation
    split; the summary is the environment's scorecard's (:func:`scorecard_of`), so the numbers mean what
    ``python -m mappa_env evaluate`` reports. Each summary metric is logged as ``eval/<split>/<name>``.
    ``on_episodes`` is given the episodes played (the trainer writes them for the viewer).
    """
    in_flight = config.eval.envs_in_flight or config.rollout.envs_in_flight
    with environments.open(config.eval.split, lambda env: min(config.eval.episodes or len(env.unwrapped.tasks),
                                                              in_flight)) as group:
        task_ids = [t.id for t in group.local.unwrapped.tasks]
        scorecard = scorecard_of(group.local)
        count = config.eval.episodes or len(task_ids)
        # no step in these seeds: every evaluation plays the same episodes, so they differ by the model only
        specs = [EpisodeSpec(task_ids[i % len(task_ids)], seed=seeding.derive(config.run.seed, seeding.EVAL_EPISODE, i))
                 for i in range(count)]
        bar = _progress(count, f"evaluating on {config.eval.split} ({'before training' if step == 0 else f'step {step}'})",
                        unit="episode", enabled=config.run.progress and processes.is_main)
        episodes, times = processes.collect(
            functools.partial(collect, team, group.slots), specs, temperature=config.model.eval_temperature, top_p=1.0,
            seed=processes.seed(seeding.derive(config.run.seed, seeding.EVAL_ROLLOUT)), on_episode=lambda _: bar.update(1),
            on_generate=lambda t: bar.set_postfix(actions=t.actions))
    bar.close()
    if on_episodes is not None:
        on_episodes(episodes)
    summary = dict(scorecard.summarise([e.outcome for e in episodes]))
    for metric in scorecard.summary_metrics:
        _scalar(writer, f"eval/{config.eval.split}/{metric.name}", summary.get(metric.name), step)
    samples = [s for e in episodes for s in e.samples]
    summary["unscored_actions"] = sum(s.reward is None for s in samples)  # said in the report
    summary["actions"] = len(samples)
    summary["lost_episodes"] = times.episodes_lost  # counted as failed above; said in the report when any
    return {"step": step, "summary": summary, "episodes": [episode_record(e) for e in episodes]}


def write_evaluations(out: Path, evaluations: Mapping[str, Any]) -> Path:
    """``out/evaluations.json``: every evaluation so far, per episode, written whole or not at all."""
    return write_text_whole(out / "evaluations.json", json.dumps(dict(evaluations), indent=1))


def episode_record(episode: EpisodeResult) -> dict[str, Any]:
    """What an evaluation keeps of one episode: its task and seed, whether it was valid, and its metrics.

    Kept per episode (in the checkpoint and ``evaluations.json``) so that two evaluations on the same
    episodes can be compared pairwise, e.g. a confidence interval of the before/after difference.
    """
    metrics = episode.outcome.get("metrics") or {}
    return {"task_id": episode.task_id, "seed": episode.seed, "valid": bool(episode.outcome.get("valid")),
            "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}


def _yaml(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False)


def _progress(total: int, description: str, *, unit: str, enabled: bool, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit=unit, disable=not enabled)
