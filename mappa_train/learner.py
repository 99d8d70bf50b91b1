"""One training step's update for every parameter group: samples → advantages → PPO-clip steps.

Per group (an agent, or ``shared``):

1. keep the actions that can teach: a reward exists (unscored actions are left out and counted) and,
   with ``rollout.mask_truncated``, the completion was not cut at the length limit;
2. take the old policy's log-probabilities of exactly the recorded tokens (those recorded while sampling
   when the sampling distribution was the policy itself, else a forward pass), compute the reference
   model's, and the advantages (:mod:`mappa_train.algorithms`) over the group's whole batch. With
   ``kl_coef`` 0 the reference enters no advantage: its log-probabilities are then computed for the first
   micro-batch only, enough for the logged ``kl_to_reference`` (an estimate from those actions), which
   saves a forward pass over the rest of the batch (about a quarter of a CPU update);
3. split the batch into ``updates_per_step`` mini-batches (shuffled by the group's own stream of the
   update's seed, :mod:`mappa_train.seeding`); each is one optimiser step, accumulated over
   micro-batches of ``micro_batch_size`` actions, with a token-level mean over the whole mini-batch,
   gradient clipping and a learning-rate schedule step.

The schedule keeps time in update slots, not in optimiser steps: every group's scheduler advances
``updates_per_step`` times per update, also for a mini-batch left empty (fewer actions than
``updates_per_step``) or a group with no usable action, so that every agent's learning rate follows
the one schedule over ``total_updates`` that the run was configured with.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mappa_train import seeding
from mappa_train.algorithms import advantages_for, masked_mean, policy_loss
from mappa_train.config import AlgorithmConfig, OptimConfig
from mappa_train.policy import TeamModel
from mappa_train.rollout import ActionSample


def cosine_with_warmup(step: int, total: int, warmup_ratio: float, min_lr_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_lr_ratio`` at ``total``."""
    warmup = int(math.ceil(total * warmup_ratio))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Optimisation:
    """AdamW and its schedule for each parameter group."""

    def __init__(self, team: TeamModel, config: OptimConfig, total_updates: int):
        self.optimizers = {}
        self.schedulers = {}
        for group in team.groups:
            optimizer = torch.optim.AdamW(team.trainable_parameters(group), lr=config.lr, betas=tuple(config.betas),
                                          weight_decay=config.weight_decay)
            self.optimizers[group] = optimizer
            self.schedulers[group] = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: cosine_with_warmup(step, total_updates, config.warmup_ratio, config.min_lr_ratio)
            )
        self.max_grad_norm = config.max_grad_norm

    def state_dict(self) -> dict:
        return {g: {"optimizer": o.state_dict(), "scheduler": self.schedulers[g].state_dict()} for g, o in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        for group, parts in state.items():
            self.optimizers[group].load_state_dict(parts["optimizer"])
            self.schedulers[group].load_state_dict(parts["scheduler"])


@dataclass
class GroupStats:
    """What one group's update did, for logging (means over its actions or tokens)."""

    actions: int = 0
    unscored: int = 0
    truncated_masked: int = 0
    reward: float = float("nan")
    advantage: float = float("nan")
    policy_loss: float = float("nan")
    kl_to_reference: float = float("nan")
    approx_kl: float = float("nan")
    clip_fraction: float = float("nan")
    entropy: float = float("nan")
    response_tokens: float = float("nan")
    grad_norm: float = float("nan")
    learning_rate: float = float("nan")
    tokens: int = 0
    extra: dict = field(default_factory=dict)


def update(team: TeamModel, optimisation: Optimisation, samples: Sequence[ActionSample], config: AlgorithmConfig, *,
           mask_truncated: bool, seed: int) -> dict[str, GroupStats]:
    """Update every parameter group on its agents' samples; groups without usable samples are left as they are.

    Their learning-rate schedule still advances, as every group's does once per update slot. ``seed`` is
    the root of the groups' mini-batch shuffles (``derive(seed, MINIBATCH, group)``).
    """
    stats = {}
    for group in team.groups:
        mine = [s for s in samples if team.group_of(s.agent) == group]
        stats[group] = _update_group(team, optimisation, group, mine, config, mask_truncated=mask_truncated,
                                     seed=seeding.derive(seed, seeding.MINIBATCH, group))
    return stats


def _update_group(team: TeamModel, optimisation: Optimisation, group: str, samples: Sequence[ActionSample],
                  config: AlgorithmConfig, *, mask_truncated: bool, seed: int) -> GroupStats:
    stats = GroupStats(unscored=sum(s.reward is None for s in samples))
    usable = [s for s in samples if s.reward is not None]
    if mask_truncated:
        stats.truncated_masked = sum(s.generation.truncated for s in usable)
        usable = [s for s in usable if not s.generation.truncated]
    stats.actions = len(usable)
    if not usable:
        for _ in range(config.updates_per_step):
            _advance_schedule(optimisation.schedulers[group])
        return stats

    prompts = [s.generation.prompt_ids for s in usable]
    completions = [s.generation.completion_ids for s in usable]
    recorded = None if config.recompute_old_logprobs or not all(s.generation.from_policy for s in usable) else \
        [s.generation.sampling_logprobs for s in usable]
    # with no KL penalty the reference only feeds the kl_to_reference diagnostic: one micro-batch estimates it
    reference_rows = len(usable) if config.kl_coef else min(len(usable), config.micro_batch_size)
    old, ref, mask = _logprobs_without_grad(team, group, prompts, completions, config.micro_batch_size, recorded,
                                            reference_rows=reference_rows)
    rewards = torch.tensor([s.reward * config.reward_scale for s in usable], dtype=torch.float32)
    # a task's samples at the same turn of the agent: similar prompts, not one prompt (algorithms.py says why)
    group_ids = [(s.task_id, s.agent, s.action_index) for s in usable]
    advantages = advantages_for(config.estimator, rewards=rewards, mask=mask, logprobs=old, ref_logprobs=ref,
                                group_ids=group_ids, kl_coef=config.kl_coef, gamma=config.gamma)

    stats.reward = rewards.mean().item()
    stats.advantage = masked_mean(advantages, mask).item()
    stats.kl_to_reference = masked_mean((old - ref)[:reference_rows], mask[:reference_rows]).item()
    stats.entropy = masked_mean(-old, mask).item()  # Monte-Carlo estimate from the sampled tokens
    stats.response_tokens = mask.sum(dim=1).mean().item()
    stats.tokens = int(mask.sum().item())

    optimizer, scheduler = optimisation.optimizers[group], optimisation.schedulers[group]
    order = list(range(len(usable)))
    random.Random(seed).shuffle(order)
    minibatches = [order[i:: config.updates_per_step] for i in range(config.updates_per_step)]
    losses, clips, kls, norms = [], [], [], []  # losses: one per mini-batch that trained
    with team.acting(group) as model:
        model.train()
        for minibatch in minibatches:
            if not minibatch:  # fewer actions than updates_per_step: no optimiser step, but the slot passes
                _advance_schedule(scheduler)
                continue
            tokens_in_minibatch = mask[minibatch].sum().clamp(min=1.0)
            minibatch_loss = 0.0
            for start in range(0, len(minibatch), config.micro_batch_size):
                rows = minibatch[start: start + config.micro_batch_size]
                logprobs, micro_mask = team.completion_logprobs(model, [prompts[i] for i in rows], [completions[i] for i in rows])
                width = logprobs.shape[1]
                result = policy_loss(logprobs, old[rows, :width].to(logprobs.device), advantages[rows, :width].to(logprobs.device),
                                     micro_mask, clip_eps=config.clip_eps)
                share = micro_mask.sum() / tokens_in_minibatch.to(micro_mask.device)  # token mean over the mini-batch
                (result.loss * share).backward()
                minibatch_loss += result.loss.item() * share.item()
                clips.append(result.clip_fraction.item())
                kls.append(result.approx_kl.item())
            parameters = team.trainable_parameters(group)
            if optimisation.max_grad_norm > 0:
                norms.append(float(torch.nn.utils.clip_grad_norm_(parameters, optimisation.max_grad_norm)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(minibatch_loss)
    stats.policy_loss = sum(losses) / len(losses)
    stats.clip_fraction = sum(clips) / len(clips)
    stats.approx_kl = sum(kls) / len(kls)
    stats.grad_norm = sum(norms) / len(norms) if norms else float("nan")
    stats.learning_rate = scheduler.get_last_lr()[0]
    return stats


def _advance_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """One schedule step for an update slot that had nothing to train on."""
    with warnings.catch_warnings():
        # torch warns when a schedule moves before its optimiser ever stepped: here that is the intent
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
        scheduler.step()


@torch.no_grad()
def _logprobs_without_grad(team: TeamModel, group: str, prompts, completions, micro: int,
                           recorded: Sequence[Sequence[float]] | None = None, *, reference_rows: int | None = None):
    """Old (acting policy) and reference log-probs, right-padded to one width, on the CPU.

    With ``recorded`` (the sampling log-probs, when sampling was from the policy itself) the old
    log-probs are those, and only the reference needs a forward pass. The reference is computed for the
    first ``reference_rows`` rows (all by default); the other rows get the old log-probs (zero KL).
    """
    width = max(len(c) for c in completions)
    old = torch.zeros(len(prompts), width)
    ref = torch.zeros(len(prompts), width)
    mask = torch.zeros(len(prompts), width)
    reference_rows = len(prompts) if reference_rows is None else reference_rows
    for row, completion in enumerate(completions):
        mask[row, : len(completion)] = 1.0
        if recorded is not None:
            old[row, : len(completion)] = torch.tensor(recorded[row], dtype=torch.float32)
    for start in range(0, len(prompts), micro):
        rows = slice(start, start + micro)
        if recorded is None:
            with team.acting(group) as model:
                model.eval()
                lp, _ = team.completion_logprobs(model, prompts[rows], completions[rows])
            old[rows, : lp.shape[1]] = lp.cpu()
        ref[rows] = old[rows]
        if start >= reference_rows:
            continue
        rows = slice(start, min(start + micro, reference_rows))
        with team.reference(group) as reference:
            rp, _ = team.completion_logprobs(reference, prompts[rows], completions[rows])
        ref[rows, : rp.shape[1]] = rp.cpu()
    return old, ref, mask
