"""The update: each agent's parameters move on its own actions only; unscored and cut actions are left out."""

from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("peft")

from mappa_train.config import AlgorithmConfig, ModelConfig, OptimConfig, PolicyConfig  # noqa: E402
from mappa_train.learner import Optimisation, cosine_with_warmup, update  # noqa: E402
from mappa_train.policy import TeamModel  # noqa: E402
from mappa_train.rollout import ActionSample  # noqa: E402

AGENTS = ["data_engineer", "modeler", "analyst"]


@pytest.fixture(scope="module")
def team():
    config = ModelConfig(path="tiny-random", dtype="float32", device="cpu", max_new_tokens=8)
    return TeamModel(AGENTS, config, PolicyConfig(lora_rank=4, lora_alpha=8), seed=0)


@contextlib.contextmanager
def adapter_put_back(team, agent):
    """Whatever happens inside, ``agent``'s trainable parameters are as they were afterwards, and so is their
    version: samples of these weights are fresh again."""
    parameters = team.trainable_parameters(agent)
    initial = [p.detach().clone() for p in parameters]
    version = team.versions[team.group_of(agent)]
    try:
        yield parameters
    finally:
        with torch.no_grad():
            for parameter, value in zip(parameters, initial):
                parameter.copy_(value)
        team.versions[team.group_of(agent)] = version


@contextlib.contextmanager
def watching_logprob_calls(team, seen):
    """Each ``completion_logprobs`` call appends ``(grad enabled, completions)`` to ``seen``."""
    original = team.completion_logprobs

    def watched(model, prompts, completions):
        seen.append((torch.is_grad_enabled(), [tuple(c) for c in completions]))
        return original(model, prompts, completions)

    team.completion_logprobs = watched
    try:
        yield seen
    finally:
        del team.completion_logprobs


def as_fresh(team, batch):
    """``batch`` stamped with its groups' current weights versions: a test that reuses one batch over several
    updates (to watch the schedule, not the samples) would otherwise be refused it as stale after the first."""
    for sample in batch:
        sample.generation.policy_version = team.versions[team.group_of(sample.agent)]
    return batch


def samples_for(team, agent, rewards, *, truncated=False):
    prompt = team.encode_prompt([{"role": "user", "content": f"You are the {agent}. Act."}])
    generations = team.generate([(agent, prompt)] * len(rewards), temperature=1.0, seed=len(rewards))
    out = []
    for i, (generation, reward) in enumerate(zip(generations, rewards)):
        generation.truncated = truncated
        out.append(ActionSample(agent=agent, episode=i, task_id=f"t{i}", task_type="regression", action_index=0,
                                generation=generation, reward=reward))
    return out


def test_each_agent_moves_on_its_own_actions_and_unusable_actions_are_counted(team):
    batch = (samples_for(team, "data_engineer", [0.1, 0.9, 0.5])
             + samples_for(team, "modeler", [None, None])        # the coach could not score these
             + samples_for(team, "analyst", [0.2, 0.8], truncated=True))  # cut at the length limit
    before = {g: [p.detach().clone() for p in team.trainable_parameters(g)] for g in team.groups}
    optimisation = Optimisation(team, OptimConfig(lr=1e-2, warmup_ratio=0.0), total_updates=1)
    stats = update(team, optimisation, batch, AlgorithmConfig(micro_batch_size=2), mask_truncated=True, seed=0)

    def moved(group):
        return any(not torch.equal(a, b) for a, b in zip(before[group], team.trainable_parameters(group)))

    assert moved("data_engineer") and not moved("modeler") and not moved("analyst")
    assert stats["data_engineer"].actions == 3 and stats["data_engineer"].tokens > 0
    assert stats["modeler"].actions == 0 and stats["modeler"].unscored == 2
    assert stats["analyst"].actions == 0 and stats["analyst"].truncated_masked == 2
    assert abs(stats["data_engineer"].reward - 0.5) < 1e-6 and stats["data_engineer"].clip_fraction == 0.0


def test_old_log_probs_come_from_sampling_when_it_was_the_policy_and_the_update_is_the_same(team):
    """Sampling at temperature 1 and top-p 1 records the policy's own log-probs: no second forward pass for them."""
    batch = samples_for(team, "data_engineer", [0.1, 0.9, 0.5])
    assert all(s.generation.from_policy for s in batch)
    cooler = team.generate([("data_engineer", batch[0].generation.prompt_ids)], temperature=0.7, seed=3)[0]
    assert not cooler.from_policy  # a tempered distribution is not the policy's

    def run(recompute):
        seen = []
        with adapter_put_back(team, "data_engineer") as parameters, watching_logprob_calls(team, seen):
            optimisation = Optimisation(team, OptimConfig(lr=1e-2, warmup_ratio=0.0), total_updates=1)
            stats = update(team, optimisation, batch, AlgorithmConfig(micro_batch_size=2, recompute_old_logprobs=recompute),
                           mask_truncated=False, seed=0)
            after = [p.detach().clone() for p in parameters]
        return [grad for grad, _ in seen], stats["data_engineer"], after

    recorded_calls, recorded_stats, recorded_after = run(recompute=False)
    recomputed_calls, recomputed_stats, recomputed_after = run(recompute=True)
    # 3 actions in micro-batches of 2: reference (2 no-grad) + loss (2 with grad); recomputing adds 2 no-grad
    assert recorded_calls.count(False) == 2 and recomputed_calls.count(False) == 4
    assert recorded_calls.count(True) == recomputed_calls.count(True) == 2
    assert recorded_stats.kl_to_reference == pytest.approx(recomputed_stats.kl_to_reference, abs=1e-4)
    for a, b in zip(recorded_after, recomputed_after):
        assert torch.allclose(a, b, atol=1e-4)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    values = [cosine_with_warmup(step, 100, warmup_ratio=0.1, min_lr_ratio=0.1) for step in range(101)]
    assert values[0] == pytest.approx(1 / 11) and values[9] == pytest.approx(10 / 11)  # 10 warm-up steps
    assert values[10] == pytest.approx(1.0) and values[55] == pytest.approx(0.55) and values[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


# ---------------------------------------------------------------------- the glue between samples and the loss
def run_update(team, batch, *, agent="data_engineer", mask_truncated=False, lr=1e-2, **algorithm):
    """One update of ``agent``'s group on ``batch``: its stats and the gradient it summed over its micro-batches.

    The group's parameters are put back afterwards. The gradient, not the parameters after the step, is
    what to compare: Adam's first step is about ``lr * sign(gradient)``, which hides most differences.
    """

    def summing_into(total):
        def hook(gradient):
            total.add_(gradient)  # and return None: the gradient itself goes on unchanged
        return hook

    with adapter_put_back(team, agent) as parameters:
        gradients = [torch.zeros_like(p) for p in parameters]
        hooks = [p.register_hook(summing_into(total)) for p, total in zip(parameters, gradients)]
        try:
            optimisation = Optimisation(team, OptimConfig(lr=lr, warmup_ratio=0.0), total_updates=1)
            stats = update(team, optimisation, batch, AlgorithmConfig(**algorithm), mask_truncated=mask_truncated, seed=0)
        finally:
            for hook in hooks:
                hook.remove()
    return stats[agent], gradients


def same_gradient(first, second, rel=1e-4):
    """Equal to float tolerance: the difference is tiny next to the gradient (summation order differs)."""
    difference = sum(float((a - b).pow(2).sum()) for a, b in zip(first, second)) ** 0.5
    return difference <= rel * sum(float(a.pow(2).sum()) for a in first) ** 0.5


def uneven_batch(team, tasks_and_rewards, lengths, *, agent="data_engineer", temperature=1.0, top_p=1.0):
    """Samples of ``agent`` on the given ``(task_id, reward)`` pairs, completions cut to ``lengths`` tokens."""
    prompt = team.encode_prompt([{"role": "user", "content": f"You are the {agent}. Act."}])
    generations = team.generate([(agent, prompt)] * len(lengths), temperature=temperature, top_p=top_p, seed=7)
    batch = []
    for i, ((task_id, reward), generation, length) in enumerate(zip(tasks_and_rewards, generations, lengths)):
        assert len(generation.completion_ids) >= length
        generation.completion_ids = generation.completion_ids[:length]  # a prefix: still exactly what was sampled
        generation.sampling_logprobs = generation.sampling_logprobs[:length]
        batch.append(ActionSample(agent=agent, episode=i, task_id=task_id, task_type="regression", action_index=0,
                                  generation=generation, reward=reward))
    return batch


LENGTHS = [2, 8, 5, 3]
TWO_TASKS = [("task-a", 0.2), ("task-a", 0.6), ("task-b", 0.9), ("task-b", 0.1)]


@pytest.mark.parametrize("micro_batch_size", [1, 2, 4])
def test_the_loss_is_a_token_mean_over_real_tokens_whatever_the_micro_batch(team, micro_batch_size):
    """GRPO, two tasks of two samples with completions of 2, 8, 5 and 3 tokens, worked out by hand.

    Per task the rewards are (0.2, 0.6) and (0.9, 0.1): advantages (−1, +1)/√2 and (+1, −1)/√2 (sample
    std). Over the 18 real tokens the mean advantage is (−2 + 8 + 5 − 3)/(18 √2) = 0.3143, and at the first
    optimiser step (ratio 1) the loss is minus that, whatever the micro-batches the gradient is summed over.
    """
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    stats, _ = run_update(team, batch, estimator="grpo", micro_batch_size=micro_batch_size)
    expected = 8 / (18 * 2 ** 0.5)
    assert stats.tokens == sum(LENGTHS) and stats.response_tokens == pytest.approx(sum(LENGTHS) / len(LENGTHS))
    assert stats.advantage == pytest.approx(expected, rel=1e-4)
    assert stats.policy_loss == pytest.approx(-expected, rel=1e-3)


def test_gradient_accumulation_gives_the_update_of_one_big_batch(team):
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    whole, whole_gradient = run_update(team, batch, estimator="grpo", micro_batch_size=4)
    for micro in (1, 3):
        split, split_gradient = run_update(team, batch, estimator="grpo", micro_batch_size=micro)
        assert split.grad_norm == pytest.approx(whole.grad_norm, rel=1e-4)
        assert same_gradient(whole_gradient, split_gradient), f"micro-batches of {micro}"
    assert whole.grad_norm > 0 and any(bool(g.abs().sum() > 0) for g in whole_gradient)


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_group_baselines_compare_samples_of_the_same_task_only(team, estimator):
    """Adding a constant to one task's rewards changes nothing: each task is its own baseline."""
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    shifted = uneven_batch(team, [(t, r + 3.0 if t == "task-b" else r) for t, r in TWO_TASKS], LENGTHS)
    plain, plain_gradient = run_update(team, batch, estimator=estimator)
    moved, moved_gradient = run_update(team, shifted, estimator=estimator)
    assert moved.reward == pytest.approx(plain.reward + 1.5)
    assert moved.advantage == pytest.approx(plain.advantage, abs=1e-6)
    assert moved.policy_loss == pytest.approx(plain.policy_loss, abs=1e-6)
    assert moved.grad_norm == pytest.approx(plain.grad_norm, rel=1e-5)
    assert same_gradient(plain_gradient, moved_gradient)


def test_reward_scale_multiplies_the_rewards_the_advantages_are_computed_from(team):
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    plain, _ = run_update(team, batch, estimator="rloo")
    scaled, _ = run_update(team, batch, estimator="rloo", reward_scale=3.0)
    assert plain.reward == pytest.approx(0.45) and scaled.reward == pytest.approx(1.35)
    # RLOO: r − mean(others): (−0.4, 0.4, 0.8, −0.8) per action, token mean (−0.8 + 3.2 + 4 − 2.4)/18
    assert plain.advantage == pytest.approx(4.0 / 18, rel=1e-4)
    assert scaled.advantage == pytest.approx(3 * 4.0 / 18, rel=1e-4)
    assert scaled.policy_loss == pytest.approx(3 * plain.policy_loss, rel=1e-3)


@pytest.mark.parametrize("sampling", [{"temperature": 0.7}, {"top_p": 0.5}])
def test_log_probs_recorded_under_tempered_sampling_are_not_taken_for_the_policys(team, sampling):
    """A tempered or nucleus distribution is not the policy: the update recomputes the old log-probs."""
    batch = uneven_batch(team, TWO_TASKS, LENGTHS, **sampling)
    assert not any(s.generation.from_policy for s in batch)
    recorded, recorded_gradient = run_update(team, batch, estimator="grpo", recompute_old_logprobs=False)
    recomputed, recomputed_gradient = run_update(team, batch, estimator="grpo", recompute_old_logprobs=True)
    assert recorded.entropy == pytest.approx(recomputed.entropy, abs=1e-5)
    assert recorded.kl_to_reference == pytest.approx(recomputed.kl_to_reference, abs=1e-6)
    assert recorded.approx_kl == pytest.approx(0.0, abs=1e-6)  # the ratio starts at 1: old = current policy
    assert same_gradient(recorded_gradient, recomputed_gradient)


def test_each_optimiser_step_moves_the_schedule_and_leaves_no_gradient_behind(team):
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    optimisation = Optimisation(team, OptimConfig(lr=1e-2, warmup_ratio=0.5, min_lr_ratio=0.1), total_updates=4)
    rates = []
    with adapter_put_back(team, "data_engineer") as parameters:
        for step in range(3):
            stats = update(team, optimisation, as_fresh(team, batch), AlgorithmConfig(estimator="grpo"), mask_truncated=False,
                           seed=step)
            rates.append(stats["data_engineer"].learning_rate)
            assert all(p.grad is None for p in parameters)  # the next step's gradient starts from nothing
    assert rates == pytest.approx([1e-2 * cosine_with_warmup(k, 4, 0.5, 0.1) for k in (1, 2, 3)])


def test_the_logged_loss_is_the_mean_over_the_mini_batches_that_trained(team):
    """REINFORCE++ without KL on actions of 2, 8, 5 and 3 tokens, worked out by hand; lr 0 keeps the ratio at 1.

    Every token of an action carries its reward whitened over the batch's 18 tokens, so a mini-batch of
    one action has minus that as its loss. Six update slots for four actions leave two mini-batches
    empty: the logged loss is still the mean over the four that trained, as with four slots.
    """
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    rewards = [reward for _, reward in TWO_TASKS]
    mean = sum(r * n for r, n in zip(rewards, LENGTHS)) / sum(LENGTHS)
    std = (sum(n * (r - mean) ** 2 for r, n in zip(rewards, LENGTHS)) / sum(LENGTHS)) ** 0.5
    expected = -sum((r - mean) / std for r in rewards) / len(rewards)
    assert expected == pytest.approx(0.3675, abs=1e-4)
    for slots in (4, 6):
        stats, _ = run_update(team, batch, estimator="reinforce_pp", kl_coef=0.0, updates_per_step=slots, lr=0.0)
        assert stats.policy_loss == pytest.approx(expected, rel=1e-3), f"{slots} update slots"


def test_every_agents_schedule_moves_once_per_update_slot_whatever_it_had_to_train_on(team, recwarn):
    """Three slots per step: data_engineer fills them, modeler's one action leaves two mini-batches empty and
    analyst has no usable action. All three schedules follow the run's: three slots a step, six in all."""
    batch = (uneven_batch(team, TWO_TASKS, LENGTHS)
             + uneven_batch(team, TWO_TASKS[:1], LENGTHS[:1], agent="modeler")
             + samples_for(team, "analyst", [None, None]))
    optimisation = Optimisation(team, OptimConfig(lr=1e-2, warmup_ratio=0.5, min_lr_ratio=0.1), total_updates=6)
    with adapter_put_back(team, "data_engineer"), adapter_put_back(team, "modeler"):
        for step in range(2):
            stats = update(team, optimisation, as_fresh(team, batch), AlgorithmConfig(updates_per_step=3),
                           mask_truncated=False, seed=step)
            slots = 3 * (step + 1)
            assert {g: s.last_epoch for g, s in optimisation.schedulers.items()} == {g: slots for g in team.groups}
            expected = 1e-2 * cosine_with_warmup(slots, 6, 0.5, 0.1)
            assert stats["data_engineer"].learning_rate == pytest.approx(expected)
            assert stats["modeler"].learning_rate == pytest.approx(expected)
            assert optimisation.schedulers["analyst"].get_last_lr()[0] == pytest.approx(expected)
    assert stats["analyst"].actions == 0 and stats["modeler"].actions == 1
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]  # skipping a slot is no mistake


def test_several_updates_per_step_use_every_action_once(team):
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    seen = []
    with watching_logprob_calls(team, seen):
        stats, _ = run_update(team, batch, estimator="grpo", updates_per_step=2, micro_batch_size=1)
    trained = [c for grad, completions in seen if grad for c in completions]
    assert sorted(trained) == sorted(tuple(s.generation.completion_ids) for s in batch)
    assert stats.actions == 4


def token_mean_kl_to_base(team, batch, agent="data_engineer"):
    """log π − log π_base over ``batch``'s completion tokens, averaged per token, computed here."""
    prompts = [s.generation.prompt_ids for s in batch]
    completions = [s.generation.completion_ids for s in batch]
    with torch.no_grad():
        with team.acting(agent) as model:
            model.eval()
            policy, mask = team.completion_logprobs(model, prompts, completions)
        with team.reference() as reference:
            base, _ = team.completion_logprobs(reference, prompts, completions)
    return float(((policy - base) * mask).sum() / mask.sum())


def test_the_kl_to_the_reference_is_measured_against_the_frozen_base(team):
    """Once an adapter has moved, ``kl_to_reference`` is the token mean of log π − log π_base, computed here."""
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    noise = torch.Generator().manual_seed(0)
    with adapter_put_back(team, "data_engineer") as parameters:
        with torch.no_grad():
            for parameter in parameters:  # LoRA's B starts at 0: the adapter now differs from the base
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=noise))
        stats, _ = run_update(team, batch, estimator="grpo", recompute_old_logprobs=True)
        expected = token_mean_kl_to_base(team, batch)
    assert abs(expected) > 1e-3
    assert stats.kl_to_reference == pytest.approx(expected, rel=1e-3)


def test_without_a_kl_penalty_the_reference_is_run_on_the_first_micro_batch_only(team):
    """``kl_coef`` 0: the update is the same, the reference runs on one micro-batch, and ``kl_to_reference``
    is the token mean of log π − log π_base over that micro-batch's actions."""
    batch = uneven_batch(team, TWO_TASKS, LENGTHS)
    noise = torch.Generator().manual_seed(1)
    with adapter_put_back(team, "data_engineer") as parameters:
        with torch.no_grad():
            for parameter in parameters:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=noise))
        seen = []
        with watching_logprob_calls(team, seen):
            stats, gradient = run_update(team, batch, estimator="reinforce_pp", kl_coef=0.0, micro_batch_size=2,
                                         recompute_old_logprobs=True)
        _, full_gradient = run_update(team, batch, estimator="reinforce_pp", kl_coef=1e-12, micro_batch_size=2,
                                      recompute_old_logprobs=True)
        without_grad = [completions for grad, completions in seen if not grad]
        # the old policy on both micro-batches, the reference on the first one only
        assert len(without_grad) == 3
        first = [tuple(s.generation.completion_ids) for s in batch[:2]]
        assert without_grad.count(first) == 2
        expected = token_mean_kl_to_base(team, batch[:2])
    assert abs(expected) > 1e-3
    assert stats.kl_to_reference == pytest.approx(expected, rel=1e-3)
    assert same_gradient(full_gradient, gradient, rel=1e-3)  # the reference changed no advantage


def test_samples_of_weights_an_update_replaced_are_refused_or_masked_and_counted(team):
    """Each update counts a new weights version; a sample of an older one (a stale adapter) never trains silently."""
    from mappa_train.learner import StaleSampleError

    with adapter_put_back(team, "modeler"):
        batch = samples_for(team, "modeler", [0.1, 0.9])
        assert {s.generation.policy_version for s in batch} == {team.versions["modeler"]}
        optimisation = Optimisation(team, OptimConfig(lr=1e-2, warmup_ratio=0.0), total_updates=4)
        versions = dict(team.versions)
        update(team, optimisation, batch, AlgorithmConfig(), mask_truncated=False, seed=0)
        # only the group that trained has new weights (the others had no samples: nothing changed)
        assert team.versions == {**versions, "modeler": versions["modeler"] + 1}
        with pytest.raises(StaleSampleError, match=r"2 of 2 samples of modeler were generated by weights version"):
            update(team, optimisation, batch, AlgorithmConfig(), mask_truncated=False, seed=0)
        before = [p.detach().clone() for p in team.trainable_parameters("modeler")]
        fresh = samples_for(team, "modeler", [0.2, 0.6, 0.9])
        stats = update(team, optimisation, batch + fresh, AlgorithmConfig(stale_samples="mask"), mask_truncated=False, seed=0)
        assert (stats["modeler"].stale_masked, stats["modeler"].actions) == (2, 3)  # the fresh ones trained alone
        assert any(not torch.equal(a, b) for a, b in zip(before, team.trainable_parameters("modeler")))


def test_truncated_importance_sampling_weighs_the_update_by_the_learner_over_the_sampler_capped(team):
    """With algorithm.tis_cap, tokens a sampler thought likelier than the learner does count less, and the
    weight of those it thought less likely stops at the cap: here visible in the gradient's norm."""
    import math

    batch = samples_for(team, "analyst", [0.1, 0.9, 0.5])
    recorded = [list(s.generation.sampling_logprobs) for s in batch]

    def run(shift, cap=2.0):
        for sample, logprobs in zip(batch, recorded):  # the sampler's log-probs, off the policy's by shift
            sample.generation.sampling_logprobs = [x + shift for x in logprobs]
        with adapter_put_back(team, "analyst"):
            optimisation = Optimisation(team, OptimConfig(lr=1e-2, warmup_ratio=0.0, max_grad_norm=1e6), total_updates=1)
            return update(team, optimisation, batch, AlgorithmConfig(kl_coef=0.0, micro_batch_size=2, tis_cap=cap),
                          mask_truncated=False, seed=0)["analyst"]

    agreed, likelier, unlikelier = run(0.0), run(math.log(2.0)), run(-math.log(4.0))
    assert agreed.tis_weight == pytest.approx(1.0, abs=1e-3)  # the recorded log-probs are the policy's
    assert likelier.tis_weight == pytest.approx(0.5, rel=1e-3) and unlikelier.tis_weight == pytest.approx(2.0, rel=1e-3)
    # one mini-batch, ratio 1: the gradient is the weights times the unweighted one
    assert likelier.grad_norm == pytest.approx(agreed.grad_norm * 0.5, rel=1e-3)
    assert unlikelier.grad_norm == pytest.approx(agreed.grad_norm * 2.0, rel=1e-3)  # 4, capped at 2
