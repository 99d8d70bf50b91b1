"""Learning sanity: on a toy text environment, a tiny character-level model learns what the reward asks.

The toy environment (toy_env.py) rewards each action with the share of its characters that are digits;
a randomly initialised model writes about 1 digit in 10. With a fixed seed, twelve steps of each
estimator must lift both agents' rewards by a wide margin. The trainer runs on it unchanged: it only
uses the AEC API and the per-action reward channel.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("peft")

import toy_env  # noqa: E402

from mappa_train.config import TrainConfig  # noqa: E402
from mappa_train.trainer import train  # noqa: E402


def toy_config(model_dir, out, estimator: str, steps: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "model": {"path": str(model_dir), "dtype": "float32", "device": "cpu", "max_new_tokens": 8, "max_prompt_tokens": 256},
        # the output layer is adapted too: a one-layer model's attention alone can hardly move its vocabulary
        "policy": {"topology": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj", "lm_head"]},
        "env": {"id": toy_env.ENV_ID, "coach": "receipts"},
        "rollout": {"tasks_per_step": 4, "samples_per_task": 4, "envs_in_flight": 4, "mask_truncated": False},
        "algorithm": {"estimator": estimator},
        "optim": {"lr": 0.05, "warmup_ratio": 0.0, "min_lr_ratio": 1.0},
        "eval": {"before": False, "after": False},
        "run": {"steps": steps, "seed": 0, "output_dir": str(out), "checkpoint_every": 0, "progress": False, "sample_every": 0},
    }).validate()


#: Steps of the toy runs. 12 sufficed for all three estimators at run.seed 0 until the seeds became named
#: streams (mappa_train.seeding); then GRPO's writer averaged 0.550 over its last two steps at seed 0
#: (needed: 0.5675; 0.73 at step 12), while 13 of 14 seeds passed (the old seeds: 14 of 14, seed 13 slowest).
#: Seed luck, not slower learning: the runs are given 16 steps rather than a weaker assertion. Measured
#: with 16 steps: both agents pass for all three estimators at each of run.seed 0-9 (60 of 60).
STEPS = 16


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["reinforce_pp", "grpo", "rloo"])
def test_reward_rises_clearly_on_the_toy_environment(estimator, tiny_chat_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    toy_env.register()
    out = train(toy_config(tiny_chat_model, tmp_path / "run", estimator, steps=STEPS))
    events = EventAccumulator(str(out))
    events.Reload()
    for agent in ("writer", "checker"):
        rewards = [e.value for e in events.Scalars(f"agent/{agent}/reward")]
        assert len(rewards) == STEPS
        first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
        assert first < 0.2 and last > first + 0.5, f"{agent} under {estimator}: {rewards}"
    assert (out / "report.md").read_text().count("(no evaluation was configured)") == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{STEPS}"]  # checkpoint_every 0: at the end only
