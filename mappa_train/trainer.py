"""The training loop, read top to bottom: collect → advantages → update per agent → log → checkpoint → evaluate.

``train(config)`` runs a whole training run and returns its output directory, which holds the
TensorBoard event files, ``checkpoints/``, ``final/`` (each agent exported in Hugging Face format) and
``report.md`` (the before/after table on the held-out split). Tag names are listed in docs/training.md.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mappa_train import checkpoint, seeding
from mappa_train.config import TrainConfig
from mappa_train.learner import GroupStats, Optimisation, update
from mappa_train.policy import TeamModel, export, group_state_dict, load_group_state_dict
from mappa_train.rollout import ActionSample, EpisodeResult, EpisodeSpec, RolloutTimes, collect
from mappa_train.sampler import TaskSampler

ERROR_STATUSES = ("error", "timeout", "killed")
#: The coach's counters that add up over a run (logged as running totals under ``coach/``).
COACH_COUNTERS = ("calls", "cache_hits", "retries", "unscored", "prompt_tokens", "completion_tokens", "cost_usd")


def output_directory(config: TrainConfig) -> Path:
    if config.run.output_dir:
        return Path(config.run.output_dir)
    name = config.run.name or f"{config.env.id}-{config.policy.topology}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    return Path("runs") / name


def train(config: TrainConfig) -> Path:
    """Run training as configured; returns the output directory."""
    from mappa_env.coach import make_coach
    from torch.utils.tensorboard import SummaryWriter

    config.validate()
    out = output_directory(config)
    seed_everything(config.run.seed)
    coach = make_coach(config.env.coach, **config.env.coach_kwargs)  # one coach: shared cache, limits, statistics
    envs = make_envs(config, coach, split=config.env.split, count=config.rollout.envs_in_flight)
    try:
        team = TeamModel(envs[0].possible_agents, config.model, config.policy, seed=config.run.seed)
        tasks = [(t.id, t.task_type) for t in envs[0].unwrapped.tasks]
        sampler = TaskSampler(tasks, stratify=config.rollout.stratify, seed=config.run.seed)
        optimisation = Optimisation(team, config.optim, total_updates=config.run.steps * config.algorithm.updates_per_step)

        start_step, evaluations, coach_carried = 0, {}, {}
        if config.run.resume:
            state = checkpoint.load_latest(out / "checkpoints")
            if state is not None:
                for group, tensors in state["parameters"].items():
                    load_group_state_dict(team, group, tensors)
                optimisation.load_state_dict(state["optimisation"])
                sampler.load_state_dict(state["sampler"])
                start_step, evaluations = state["step"], state.get("evaluations", {})
                coach_carried = state.get("coach_counters", {})  # this process's coach counts start from 0
                if "after" in evaluations and start_step < config.run.steps:  # a run stopped by run.max_minutes
                    evaluations[f"step {start_step}"] = evaluations.pop("after")  # goes on: its end is a midpoint now
        # a resumed run first discards whatever the killed run logged after its last checkpoint (step N's
        # scalars are logged as N, after-the-fact; from scratch, everything: the "before" evaluation is step 0)
        purge = (start_step + 1 if start_step else 0) if config.run.resume else None
        writer = SummaryWriter(str(out), purge_step=purge)
        if start_step == 0:
            writer.add_text("config", "```yaml\n" + _yaml(config.to_dict()) + "\n```", 0)
            (out / "config.yaml").write_text(_yaml(config.to_dict()), encoding="utf-8")

        if config.eval.before and "before" not in evaluations:
            evaluations["before"] = evaluate_team(team, config, coach, writer, step=0)

        progress = _progress(config.run.steps, "training", unit="step", enabled=config.run.progress, initial=start_step)
        deadline = time.monotonic() + config.run.max_minutes * 60 if config.run.max_minutes else None
        steps_done = start_step
        for step in range(start_step, config.run.steps):
            # ---------------------------------------------------------------- collect
            task_ids = sampler.next(config.rollout.tasks_per_step)
            specs = [EpisodeSpec(task_id, seed=seeding.derive(config.run.seed, seeding.EPISODE, step, i))
                     for i, task_id in enumerate(t for t in task_ids for _ in range(config.rollout.samples_per_task))]
            progress.set_description(f"step {step + 1}/{config.run.steps}: collecting")
            episodes, times = collect(team, envs, specs, temperature=config.model.temperature, top_p=config.model.top_p,
                                      seed=seeding.derive(config.run.seed, seeding.ROLLOUT, step),
                                      on_generate=lambda t: progress.set_postfix(actions=t.actions))
            samples = [s for e in episodes for s in e.samples]

            # ---------------------------------------------------------------- advantages + update per agent
            progress.set_description(f"step {step + 1}/{config.run.steps}: updating")
            began = time.perf_counter()
            group_stats = update(team, optimisation, samples, config.algorithm, mask_truncated=config.rollout.mask_truncated,
                                 seed=seeding.derive(config.run.seed, seeding.UPDATE, step))
            update_s = time.perf_counter() - began

            # ---------------------------------------------------------------- log
            log_step(writer, step + 1, team, episodes, samples, group_stats, times, update_s,
                     coach_counters(coach, coach_carried))
            if config.run.sample_every and (step + 1) % config.run.sample_every == 0:
                writer.add_text("sample/trajectory", trajectory_text(episodes[0]), step + 1)

            # ---------------------------------------------------------------- evaluate, checkpoint
            steps_done = step + 1
            last = step + 1 == config.run.steps or (deadline is not None and time.monotonic() >= deadline)
            if config.eval.every and (step + 1) % config.eval.every == 0 and not last:
                evaluations[f"step {step + 1}"] = evaluate_team(team, config, coach, writer, step=step + 1)
            if last and config.eval.after:
                evaluations["after"] = evaluate_team(team, config, coach, writer, step=step + 1)
            if last or (config.run.checkpoint_every and (step + 1) % config.run.checkpoint_every == 0):
                checkpoint.save(out / "checkpoints", step + 1, {
                    "parameters": {g: group_state_dict(team, g) for g in team.groups},
                    "optimisation": optimisation.state_dict(), "sampler": sampler.state_dict(),
                    "evaluations": evaluations, "coach_counters": coach_counters(coach, coach_carried),  # evaluations' calls too
                    "config": config.to_dict(),
                })
            writer.flush()
            progress.update(1)
            if last:
                break  # run.steps reached, or run.max_minutes spent
        progress.close()
        export(team, out / "final")
        write_report(out, config, evaluations, steps=steps_done)
        writer.close()
    finally:
        for env in envs:
            env.close()
        close = getattr(coach, "close", None)
        if close:
            close()
    return out


def make_envs(config: TrainConfig, coach: Any, *, split: str, count: int) -> list[Any]:
    """``count`` environments of ``config.env`` on ``split``, all sharing ``coach`` (closed again if one fails)."""
    import mappa_env

    kwargs = {"split": split, "coach": coach, "reward_mode": config.env.reward_mode, "sandbox": config.env.sandbox,
              "exec_timeout_s": config.env.exec_timeout_s, **config.env.kwargs}
    envs: list[Any] = []
    try:
        for _ in range(count):
            envs.append(mappa_env.make(config.env.id, **kwargs))
    except BaseException:
        for env in envs:
            env.close()
        raise
    return envs


def coach_counters(coach: Any, carried: Mapping[str, Any]) -> dict[str, Any]:
    """The coach's running totals over the whole run: this process's, plus those a resumed run carried over.

    Empty for a coach that keeps no statistics; ``cost_usd`` stays ``None`` (unknown) once any part is.
    """
    snapshot = coach.stats.snapshot() if hasattr(coach, "stats") else None
    if not snapshot:
        return {}
    totals = {}
    for name in COACH_COUNTERS:
        now, before = snapshot.get(name), carried.get(name, 0)
        totals[name] = None if now is None or before is None else now + before
    return totals


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- logging
def log_step(writer: Any, step: int, team: TeamModel, episodes: Sequence[EpisodeResult], samples: Sequence[ActionSample],
             group_stats: Mapping[str, GroupStats], times: RolloutTimes, update_s: float,
             coach_totals: Mapping[str, Any]) -> None:
    """Write one step's scalars under the tag names documented in docs/training.md.

    ``coach_totals`` are the coach's running totals over the run (:func:`coach_counters`).
    """
    for agent in team.agents:
        mine = [s for s in samples if s.agent == agent]
        if not mine:
            continue
        scored = [s for s in mine if s.reward is not None]
        scores = [s.step.get("verdict", {}).get("score") for s in mine]
        scores = [x for x in scores if x is not None]
        with_code = [s for s in mine if s.step.get("status") != "no_code"]
        _scalar(writer, f"agent/{agent}/reward", np.mean([s.reward for s in scored]) if scored else None, step)
        _scalar(writer, f"agent/{agent}/coach_score", np.mean(scores) if scores else None, step)
        _scalar(writer, f"agent/{agent}/unscored_actions", len(mine) - len(scored), step)
        _scalar(writer, f"agent/{agent}/response_tokens", np.mean([len(s.generation.completion_ids) for s in mine]), step)
        _scalar(writer, f"agent/{agent}/code_share", len(with_code) / len(mine), step)
        _scalar(writer, f"agent/{agent}/exec_error_rate",
                np.mean([s.step.get("status") in ERROR_STATUSES for s in with_code]) if with_code else None, step)
        _scalar(writer, f"agent/{agent}/truncated_share", np.mean([s.generation.truncated for s in mine]), step)
        stats = group_stats[team.group_of(agent)]
        for name in ("advantage", "policy_loss", "kl_to_reference", "approx_kl", "clip_fraction", "entropy",
                     "grad_norm", "learning_rate"):
            _scalar(writer, f"agent/{agent}/{name}", getattr(stats, name), step)
    outcomes = [e.outcome for e in episodes]
    _scalar(writer, "train/success_rate", np.mean([bool(o.get("valid")) for o in outcomes]), step)
    for name, value in coach_totals.items():
        _scalar(writer, f"coach/{name}", value, step)
    _scalar(writer, "coach/unscored_actions", sum(s.reward is None for s in samples), step)
    _bias_scalars(writer, samples, episodes, step)
    tokens = sum(len(s.generation.completion_ids) for s in samples)
    _scalar(writer, "time/generation_s", times.generation_s, step)
    _scalar(writer, "time/environment_s", times.environment_s, step)
    _scalar(writer, "time/rollout_wall_s", times.wall_s, step)
    _scalar(writer, "time/update_s", update_s, step)
    _scalar(writer, "throughput/generated_tokens_per_s", tokens / times.generation_s if times.generation_s else None, step)
    trained = sum(stats.tokens for stats in group_stats.values())
    _scalar(writer, "throughput/update_tokens_per_s", trained / update_s if update_s else None, step)


def _bias_scalars(writer: Any, samples: Sequence[ActionSample], episodes: Sequence[EpisodeResult], step: int) -> None:
    from mappa_env.coach.bias import monitor_from_records

    success = {e.episode: bool(e.outcome.get("valid")) for e in episodes}
    records = [{"score": s.step.get("verdict", {}).get("score"), "task_type": s.task_type, "role": s.agent,
                "success": success[s.episode]} for s in samples]
    for tag, value in monitor_from_records(records).scalars().items():
        _scalar(writer, tag, value, step)


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
        reply = sample.generation.text.strip().replace("\n", "  \n")
        lines.append(f"\n**{sample.agent} #{sample.action_index + 1}**: status {sample.step.get('status')}, "
                     f"reward {sample.reward}, coach {verdict.get('score')}: {str(verdict.get('rationale', ''))[:200]}\n\n"
                     f"{reply[:limit]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- evaluation and report
def evaluate_team(team: TeamModel, config: TrainConfig, coach: Any, writer: Any, *, step: int) -> dict[str, Any]:
    """Play the evaluation split (one episode per task, or ``eval.episodes``) at the evaluation temperature.

    Episodes run through the same batched rollout as training, on environments of the evaluation
    split; the table is mappa_env's (:func:`mappa_env.metrics.aggregate_outcomes`), so the numbers
    mean what ``python -m mappa_env evaluate`` reports.
    """
    from mappa_env.metrics import aggregate_outcomes

    envs = make_envs(config, coach, split=config.eval.split, count=1)
    try:
        task_ids = [t.id for t in envs[0].unwrapped.tasks]
        count = config.eval.episodes or len(task_ids)
        envs += make_envs(config, coach, split=config.eval.split, count=min(count, config.rollout.envs_in_flight) - 1)
        # no step in these seeds: every evaluation plays the same episodes, so they differ by the model only
        specs = [EpisodeSpec(task_ids[i % len(task_ids)], seed=seeding.derive(config.run.seed, seeding.EVAL_EPISODE, i))
                 for i in range(count)]
        bar = _progress(count, f"evaluating on {config.eval.split} ({'before training' if step == 0 else f'step {step}'})",
                        unit="episode", enabled=config.run.progress)
        episodes, _ = collect(team, envs, specs, temperature=config.model.eval_temperature, top_p=1.0,
                              seed=seeding.derive(config.run.seed, seeding.EVAL_ROLLOUT),
                              on_episode=lambda _: bar.update(1), on_generate=lambda t: bar.set_postfix(actions=t.actions))
    finally:
        for env in envs:
            env.close()
    bar.close()
    summary = aggregate_outcomes([e.outcome for e in episodes])
    for name in ("success_rate", "accuracy_fair", "f1_fair", "rmse_fair", "rpg"):
        _scalar(writer, f"eval/{config.eval.split}/{name}", summary.get(name), step)
    return {"step": step, "summary": summary}


def write_report(out: Path, config: TrainConfig, evaluations: Mapping[str, Any], *, steps: int) -> Path:
    """``report.md``: what was trained, and the before/after table on the evaluation split."""
    from mappa_env.metrics import format_results_table

    rows = [(name, result["summary"]) for name, result in evaluations.items()]
    text = [f"# Training report: {out.name}", "",
            f"{steps} step{'' if steps == 1 else 's'} of {config.algorithm.estimator} on {config.env.id} ({config.env.split} split), "
            f"{config.policy.topology} policies from {config.model.path}, coach {config.env.coach}, "
            f"reward {config.env.reward_mode}"
            + (f" (stopped by run.max_minutes = {config.run.max_minutes:g} before run.steps = {config.run.steps})."
               if steps < config.run.steps else "."), "",
            f"Held-out evaluation ({config.eval.split} split):", "",
            format_results_table(rows) if rows else "(no evaluation was configured)", "",
            "Curves: `tensorboard --logdir " + str(out) + "`. Agents exported to `final/`."]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def _yaml(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False)


def _progress(total: int, description: str, *, unit: str, enabled: bool, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit=unit, disable=not enabled)
