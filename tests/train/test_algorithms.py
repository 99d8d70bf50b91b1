"""The trainer's maths against values worked out by hand (comments show the arithmetic)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")

from mappa_train.algorithms import (  # noqa: E402
    advantages_for,
    grpo_advantages,
    k1_kl,
    masked_whiten,
    policy_loss,
    reinforce_pp_advantages,
    returns_to_go,
    rloo_advantages,
    token_rewards,
    truncated_importance_weights,
)

t = torch.tensor


def test_whitening_uses_only_masked_tokens_and_zeroes_padding():
    # mean of 1, 2, 3 is 2; population variance (1 + 0 + 1) / 3 = 2/3; std 0.8165
    out = masked_whiten(t([[1.0, 2.0, 3.0, 100.0]]), t([[1, 1, 1, 0]]))
    s = math.sqrt(2 / 3)
    assert out.tolist()[0] == pytest.approx([-1 / s, 0.0, 1 / s, 0.0], abs=1e-6)


def test_kl_penalty_on_every_token_and_the_score_on_the_last():
    logprobs, ref = t([[-1.0, -2.0, -0.5, 0.0]]), t([[-1.1, -1.8, -0.8, 0.0]])
    mask = t([[1, 1, 1, 0]])
    kl = k1_kl(logprobs, ref, mask)  # 0.1, -0.2, 0.3, (padding) 0
    assert kl.tolist()[0] == pytest.approx([0.1, -0.2, 0.3, 0.0], abs=1e-6)
    rewards = token_rewards(t([5.0]), kl, mask, kl_coef=0.01)
    # -0.01 * kl on each token; the coach's 5 lands on the last real token, not on the padding
    assert rewards.tolist()[0] == pytest.approx([-0.001, 0.002, 5 - 0.003, 0.0], abs=1e-6)
    # gamma = 1: each token's return is the sum of the rewards from it to the end
    assert returns_to_go(rewards, mask).tolist()[0] == pytest.approx([4.998, 4.999, 4.997, 0.0], abs=1e-6)
    # gamma = 0.5 on [1, 1, 1]: 1 + .5(1 + .5) = 1.75, 1.5, 1
    assert returns_to_go(t([[1.0, 1.0, 1.0]]), t([[1, 1, 1]]), gamma=0.5).tolist()[0] == [1.75, 1.5, 1.0]


def test_reinforce_pp_whitens_returns_over_all_tokens_of_the_batch():
    # action A: score 10 over 2 tokens; action B: score 0 over 1 token (+ padding); no KL
    mask = t([[1, 1], [1, 0]])
    zeros = torch.zeros(2, 2)
    adv = reinforce_pp_advantages(t([10.0, 0.0]), zeros, zeros, mask, kl_coef=0.01)
    # returns 10, 10, 0: mean 20/3, population std sqrt(200/9) = 4.714 -> 0.7071, 0.7071, -1.4142
    assert adv.tolist() == [pytest.approx([1 / math.sqrt(2)] * 2, abs=1e-5), pytest.approx([-math.sqrt(2), 0.0], abs=1e-5)]


def test_grpo_normalises_within_each_group_and_a_flat_group_teaches_nothing():
    mask = torch.ones(5, 2)
    adv = grpo_advantages(t([1.0, 3.0, 5.0, 5.0, 7.0]), ["a", "a", "b", "b", "c"], mask)
    # group a: mean 2, sample std sqrt(2) -> -0.7071, +0.7071; b: all equal -> 0; c: alone -> 0
    assert adv[:, 0].tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0, 0.0, 0.0], abs=1e-5)
    assert torch.equal(adv[:, 0], adv[:, 1])  # one advantage per action, on every token


def test_rloo_baseline_is_the_mean_of_the_other_samples():
    adv = rloo_advantages(t([1.0, 2.0, 6.0, 4.0]), [0, 0, 0, 1], t([[1, 1], [1, 1], [1, 0], [1, 1]]))
    # 1 - (2+6)/2 = -3; 2 - (1+6)/2 = -1.5; 6 - (1+2)/2 = 4.5; a group of one -> 0; padding stays 0
    assert adv.tolist() == [[-3.0, -3.0], [-1.5, -1.5], [4.5, 0.0], [0.0, 0.0]]


def test_ppo_clip_loss_token_mean_clip_fraction_and_gradient():
    old = torch.zeros(1, 4)
    new = t([[math.log(1.5), math.log(0.5), math.log(0.5), 3.0]], requires_grad=True)
    advantages = t([[1.0, 1.0, -1.0, 5.0]])
    mask = t([[1, 1, 1, 0]])
    out = policy_loss(new, old, advantages, mask, clip_eps=0.2)
    # token 1: min(1.5, 1.2) = 1.2 (clipped); token 2: min(0.5, 0.8) = 0.5; token 3: min(-0.5, -0.8) = -0.8 (clipped)
    # loss = -(1.2 + 0.5 - 0.8) / 3 = -0.3; the padded 4th token counts for nothing
    assert out.loss.item() == pytest.approx(-0.3, abs=1e-6)
    assert out.clip_fraction.item() == pytest.approx(2 / 3)
    out.loss.backward()
    # only the unclipped token carries gradient: d/dlogp of -(ratio * A)/3 = -0.5/3
    assert new.grad.tolist()[0] == pytest.approx([0.0, -0.5 / 3, 0.0, 0.0], abs=1e-6)


def test_truncated_importance_weights_are_the_probability_ratio_capped_and_scale_each_tokens_loss():
    learner = t([[math.log(0.5), math.log(0.2), math.log(0.9), 0.0]])
    sampler = t([[math.log(0.5), math.log(0.4), math.log(0.1), 0.0]])
    mask = t([[1, 1, 1, 0]])
    weights = truncated_importance_weights(learner, sampler, mask, cap=2.0)
    # 0.5/0.5 = 1; 0.2/0.4 = 0.5; 0.9/0.1 = 9, capped at 2; padding 0
    assert weights.tolist()[0] == pytest.approx([1.0, 0.5, 2.0, 0.0])
    logprobs = t([[-0.3, -1.2, -0.7, 0.0]], requires_grad=True)
    out = policy_loss(logprobs, logprobs.detach().clone(), t([[2.0, -1.0, 3.0, 9.0]]), mask, weights=weights)
    # ratio 1 everywhere: loss = -(1 * 2 + 0.5 * -1 + 2 * 3) / 3; each token's gradient carries its weight
    assert out.loss.item() == pytest.approx(-(2.0 - 0.5 + 6.0) / 3)
    out.loss.backward()
    assert logprobs.grad.tolist()[0] == pytest.approx([-2.0 / 3, 0.5 / 3, -6.0 / 3, 0.0])


def test_identical_policies_give_ratio_one_and_zero_kl():
    logprobs = t([[-0.3, -1.2]])
    out = policy_loss(logprobs, logprobs.clone(), t([[2.0, -1.0]]), t([[1, 1]]))
    assert out.ratio_mean.item() == 1.0 and out.approx_kl.item() == 0.0 and out.clip_fraction.item() == 0.0
    assert out.loss.item() == pytest.approx(-(2.0 - 1.0) / 2)


def test_dispatch_checks_what_each_estimator_needs():
    mask = torch.ones(2, 1)
    with pytest.raises(ValueError, match="reference log-probabilities"):
        advantages_for("reinforce_pp", rewards=t([1.0, 2.0]), mask=mask)
    with pytest.raises(ValueError, match="one group id per action"):
        advantages_for("grpo", rewards=t([1.0, 2.0]), mask=mask, group_ids=["a"])
    with pytest.raises(ValueError, match="choose one of reinforce_pp, grpo, rloo"):
        advantages_for("ppo", rewards=t([1.0, 2.0]), mask=mask)
    with pytest.raises(ValueError, match="no token in the mask"):
        advantages_for("reinforce_pp", rewards=t([1.0]), mask=t([[0, 0]]), logprobs=torch.zeros(1, 2), ref_logprobs=torch.zeros(1, 2))
    assert advantages_for("rloo", rewards=t([1.0, 3.0]), mask=mask, group_ids=[7, 7]).tolist() == [[-2.0], [2.0]]
