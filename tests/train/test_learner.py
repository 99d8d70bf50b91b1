"""The update: each agent's parameters move on its own actions only; unscored and cut actions are left out."""

from __future__ import annotations

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
        initial = [p.detach().clone() for p in team.trainable_parameters("data_engineer")]
        calls = []
        original = team.completion_logprobs

        def counting(model, prompts, completions):
            calls.append(torch.is_grad_enabled())
            return original(model, prompts, completions)

        team.completion_logprobs = counting
        try:
            optimisation = Optimisation(team, OptimConfig(lr=1e-2, warmup_ratio=0.0), total_updates=1)
            stats = update(team, optimisation, batch, AlgorithmConfig(micro_batch_size=2, recompute_old_logprobs=recompute),
                           mask_truncated=False, seed=0)
        finally:
            del team.completion_logprobs
        after = [p.detach().clone() for p in team.trainable_parameters("data_engineer")]
        with torch.no_grad():
            for parameter, value in zip(team.trainable_parameters("data_engineer"), initial):
                parameter.copy_(value)  # put the adapter back for the other run
        return calls, stats["data_engineer"], after

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
