"""Rewards → advantages → losses, as pure functions on padded ``[batch, tokens]`` tensors.

Conventions, shared by every function here:

* one row is one *action*: the tokens one agent generated in one turn; ``mask`` is 1 on those
  tokens and 0 on padding (and on tokens left out of the loss, e.g. a completion cut at the length
  limit);
* ``rewards`` holds one scalar per action (the coach's process score, or the episode outcome);
* ``group_ids`` says which actions are each other's baseline (``grpo``/``rloo``); the learner groups
  by ``(task, agent, action_index)``, which is only approximately "the same prompt" (see below);
* a batch is one agent's actions: normalisation "per agent" is the caller calling these once per agent.

Nothing here touches a model, an optimiser or a file; every function has a unit test against numbers
worked out by hand (``tests/train/test_algorithms.py``).

The three estimators:

``reinforce_pp`` (MAPPA's default, REINFORCE++): the per-token reward is ``-kl_coef * k1`` with
``k1 = log π_old − log π_ref``, plus the action's reward on its last token; the return-to-go (γ = 1)
is the advantage of each token, whitened over all tokens of the batch.

``grpo``: one advantage per action, ``(r − mean(group)) / (std(group) + eps)``, broadcast to its tokens.

``rloo``: one advantage per action, ``r − mean(other actions of the group)``, broadcast to its tokens.

The groups of ``grpo`` and ``rloo`` are an approximation in a multi-turn episode. Both estimators
assume a group's actions answer one prompt. The n samples of a task share the prompt of an agent's
first action only; its k-th action (``action_index`` k) is conditioned on everything before it in its
own episode (teammates' replies, execution output), so the k-th actions of a task's samples answer
similar prompts, not the same one. Grouping by the exact prompt ids would leave nearly every
later-turn group with one member, hence advantage 0: no turn after an agent's first would be
learned from. So the learner groups by ``(task, agent, action_index)``: turn k is compared with the
other samples' turn k of the same task. The price is a baseline that also credits an action for the
history it was reached from (a turn after a better start looks better); ``reinforce_pp``, whose
baseline is the whole batch, makes no such claim.

All three feed :func:`policy_loss`, the PPO-clip surrogate with a token-level mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

ESTIMATORS = ("reinforce_pp", "grpo", "rloo")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(values − mean) / (std + eps)`` over the masked entries; masked-out entries become 0.

    The standard deviation is the population one (over N, not N − 1), as in OpenRLHF's REINFORCE++.
    """
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    return (values - mean) / (variance.sqrt() + eps) * mask.to(values.dtype)


def k1_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(π ‖ π_ref): ``log π − log π_ref`` on masked tokens, 0 elsewhere."""
    return (logprobs - ref_logprobs) * mask.to(logprobs.dtype)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last masked token (rows must have at least one)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if bool((mask.sum(dim=1) == 0).any()):
        raise ValueError("an action with no token in the mask has no last token; drop it before computing advantages")
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


def token_rewards(rewards: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """REINFORCE++ per-token rewards: ``-kl_coef * kl`` everywhere, plus the action's reward on its last token."""
    per_token = -kl_coef * kl * mask.to(kl.dtype)
    last = last_token_index(mask)
    per_token[torch.arange(mask.shape[0], device=mask.device), last] += rewards.to(per_token.dtype)
    return per_token


def returns_to_go(per_token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``G_t = r_t + γ G_{t+1}`` along each row, over masked tokens (padding contributes nothing)."""
    masked = per_token_rewards * mask.to(per_token_rewards.dtype)
    returns = torch.zeros_like(masked)
    running = torch.zeros(masked.shape[0], dtype=masked.dtype, device=masked.device)
    for t in range(masked.shape[1] - 1, -1, -1):
        running = masked[:, t] + gamma * running
        returns[:, t] = running
    return returns * mask.to(returns.dtype)


def reinforce_pp_advantages(
    rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    kl_coef: float = 0.01,
    gamma: float = 1.0,
) -> torch.Tensor:
    """REINFORCE++ advantages ``[batch, tokens]``: KL-shaped return-to-go, whitened over the batch's tokens.

    ``logprobs`` are the sampling policy's log-probabilities of the generated tokens (recorded at
    rollout), ``ref_logprobs`` the reference model's for the same tokens.
    """
    kl = k1_kl(logprobs, ref_logprobs, mask)
    returns = returns_to_go(token_rewards(rewards, kl, mask, kl_coef), mask, gamma)
    return masked_whiten(returns, mask)


def _groups(group_ids: Sequence[object]) -> dict[object, list[int]]:
    groups: dict[object, list[int]] = {}
    for index, group in enumerate(group_ids):
        groups.setdefault(group, []).append(index)
    return groups


def grpo_advantages(rewards: torch.Tensor, group_ids: Sequence[object], mask: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: ``(r − mean(group)) / (std(group) + eps)`` per action, broadcast over its tokens.

    The standard deviation is the sample one (N − 1), as in the GRPO paper and TRL; a group of one
    action, or whose actions all got the same reward, has advantage 0: nothing to learn from it.
    """
    rewards = rewards.to(torch.float32)
    advantages = torch.zeros_like(rewards)
    for members in _groups(group_ids).values():
        if len(members) < 2:
            continue
        group = rewards[members]
        advantages[members] = (group - group.mean()) / (group.std() + eps)
    return advantages[:, None] * mask.to(advantages.dtype)


def rloo_advantages(rewards: torch.Tensor, group_ids: Sequence[object], mask: torch.Tensor) -> torch.Tensor:
    """RLOO: ``r − mean(r of the other actions in the group)`` per action, broadcast over its tokens.

    A group of one action has no baseline and gets advantage 0.
    """
    rewards = rewards.to(torch.float32)
    advantages = torch.zeros_like(rewards)
    for members in _groups(group_ids).values():
        n = len(members)
        if n < 2:
            continue
        group = rewards[members]
        advantages[members] = group - (group.sum() - group) / (n - 1)
    return advantages[:, None] * mask.to(advantages.dtype)


@dataclass(frozen=True)
class PolicyLoss:
    """The PPO-clip loss and what to log about it (all scalars)."""

    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor
    ratio_mean: torch.Tensor


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    weights: torch.Tensor | None = None,
) -> PolicyLoss:
    """PPO-clip surrogate, averaged over every masked token of the batch (token-level mean).

    ``loss = mean_t −w_t min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t)`` with ``ρ_t = exp(log π − log π_old)``
    and ``w_t`` the per-token ``weights`` (1 without them; no gradient flows through them): the truncated
    importance weights of :func:`truncated_importance_weights`.
    ``approx_kl`` is the k3 estimate of KL(π_old ‖ π), for logging.
    """
    log_ratio = (logprobs - old_logprobs) * mask.to(logprobs.dtype)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    surrogate = torch.minimum(unclipped, clipped)
    if weights is not None:
        surrogate = surrogate * weights.detach().to(surrogate.dtype)
    loss = masked_mean(-surrogate, mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped < unclipped).to(logprobs.dtype), mask)
        approx_kl = masked_mean(ratio - 1.0 - log_ratio, mask)
        ratio_mean = masked_mean(ratio, mask)
    return PolicyLoss(loss, clip_fraction, approx_kl, ratio_mean)


def truncated_importance_weights(learner_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor,
                                 cap: float) -> torch.Tensor:
    """``min(π_learner / π_sampler, cap)`` per token, 0 on padding: truncated importance sampling (Yao et al., 2025).

    A sampler (vLLM's kernels, another precision) does not compute exactly the learner's probabilities, so
    the tokens were drawn from π_sampler while PPO's ratio is taken against the learner's π_old: the
    weights make the gradient that of samples from π_old, and the cap bounds their variance.
    """
    weights = torch.exp(learner_logprobs - sampler_logprobs).clamp(max=cap)
    return weights * mask.to(weights.dtype)


def advantages_for(
    estimator: str,
    *,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    group_ids: Sequence[object] | None = None,
    kl_coef: float = 0.01,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Dispatch on the estimator's name (``reinforce_pp``, ``grpo`` or ``rloo``) for one agent's batch."""
    if estimator == "reinforce_pp":
        if logprobs is None or ref_logprobs is None:
            raise ValueError("reinforce_pp needs the sampling and the reference log-probabilities")
        return reinforce_pp_advantages(rewards, logprobs, ref_logprobs, mask, kl_coef=kl_coef, gamma=gamma)
    if estimator in ("grpo", "rloo"):
        if group_ids is None or len(group_ids) != rewards.shape[0]:
            raise ValueError(f"{estimator} needs one group id per action (the task each action answered)")
        function = grpo_advantages if estimator == "grpo" else rloo_advantages
        return function(rewards, group_ids, mask)
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
