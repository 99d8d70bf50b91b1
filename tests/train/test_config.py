"""Run configuration: defaults, shipped YAML files, command-line overrides, and errors that say what to fix."""

from __future__ import annotations

import argparse

import pytest

from mappa_env.envs.rewards import REWARD_MODES
from mappa_env.tasks.task import SPLITS
from mappa_train.config import (
    SHADOWED_ENV_KWARGS,
    ConfigError,
    TrainConfig,
    add_arguments,
    apply_threads,
    load_config,
    overrides_from_args,
)


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    add_arguments(parser)
    args = parser.parse_args(list(argv))
    return load_config(args.config, overrides_from_args(args))


def test_the_shipped_cpu_config_is_the_embedded_default_and_all_shipped_configs_validate():
    assert TrainConfig.from_yaml("cpu") == TrainConfig()
    assert TrainConfig().validate().model.path == "smollm2" and TrainConfig().policy.topology == "lora"
    tiny, gpu = TrainConfig.from_yaml("tiny").validate(), TrainConfig.from_yaml("mappa-gpu.yaml").validate()
    assert (tiny.model.path, tiny.env.coach, tiny.run.steps) == ("tiny-random", "receipts", 2)
    # MAPPA's schedule: 64 tasks x 30 passes / 16 tasks per step
    assert (gpu.rollout.tasks_per_step, gpu.rollout.samples_per_task, gpu.run.steps) == (16, 2, 120)
    # LoRA adapters at MAPPA's full-fine-tuning rate (1e-6) would barely move: the file says why 2e-5
    assert gpu.optim.lr == 2e-5 and gpu.optim.betas == [0.9, 0.95] and gpu.algorithm.kl_coef == 0.01
    math = TrainConfig.from_yaml("cpu-math").validate()
    assert (math.env.id, math.model.path, math.policy.topology, math.env.kwargs["suite_kwargs"]["levels"]) == \
        ("mathchat-v0", "smollm2", "lora", [1])
    assert math.run.max_minutes > 0 and math.eval.episodes == math.env.kwargs["suite_kwargs"]["heldout_per_level"]


def test_command_line_overrides_win_over_the_file_and_are_typed():
    config = parse("--config", "tiny", "--optim.lr", "3e-5", "--run.steps", "5", "--eval.episodes", "null",
                   "--policy.lora_target_modules", "q_proj,v_proj", "--optim.betas", "[0.8, 0.99]",
                   "--env.coach_kwargs", '{"base_url": "http://127.0.0.1:8000/v1"}', "--rollout.stratify", "false")
    assert config.optim.lr == 3e-5 and config.run.steps == 5 and config.eval.episodes is None
    assert config.policy.lora_target_modules == ["q_proj", "v_proj"] and config.optim.betas == [0.8, 0.99]
    assert config.env.coach_kwargs == {"base_url": "http://127.0.0.1:8000/v1"} and config.rollout.stratify is False
    assert config.model.path == "tiny-random"  # untouched fields keep the file's values


def test_every_problem_is_reported_at_once_with_a_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optm: {lr: 1}\noptim: {lrr: 1}\nrun: {steps: two}\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(bad)
    message = str(info.value)
    assert "unknown section 'optm'. Did you mean 'optim'?" in message  # mappa_env.arguments.did_you_mean's wording
    assert "optim has no field 'lrr'. Did you mean 'lr'?" in message
    assert "run.steps: expected an integer, got 'two'" in message

    with pytest.raises(ConfigError) as info:
        parse("--algorithm.estimator", "grpo", "--rollout.samples_per_task", "1", "--policy.topology", "adapters")
    message = str(info.value)
    assert "set rollout.samples_per_task >= 2" in message and "policy.topology 'adapters': use shared, lora or separate" in message
    with pytest.raises(ConfigError, match=r"algorithm.tis_cap 0.5: 0 \(off\) or a cap C >= 1"):
        parse("--algorithm.tis_cap", "0.5")


def test_config_files_that_are_not_there_or_not_yaml_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="not found; shipped configs: cpu, cpu-math, mappa-gpu, tiny"):
        TrainConfig.from_yaml("huge")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.from_yaml(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- model\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        TrainConfig.from_yaml(listing)


def test_flat_view_names_every_setting_once():
    flat = TrainConfig().flat()
    assert flat["algorithm.estimator"] == "reinforce_pp" and flat["optim.betas"] == [0.9, 0.95]
    assert len(flat) == sum(len(v) for v in TrainConfig().to_dict().values())


def test_fixed_vocabularies_come_from_the_modules_that_own_them_and_reach_validation_and_help():
    assert parse("--env.reward_mode", "mixed", "--eval.split", "all").env.reward_mode == "mixed"  # every mode the env has
    with pytest.raises(ConfigError) as info:
        parse("--env.split", "test", "--env.reward_mode", "outcom", "--model.dtype", "fp16", "--env.sandbox", "dockr")
    message = str(info.value)
    assert f"env.split 'test': use {', '.join(SPLITS[:-1])} or {SPLITS[-1]}." in message
    assert f"env.reward_mode 'outcom': use {', '.join(REWARD_MODES[:-1])} or {REWARD_MODES[-1]}. Did you mean 'outcome'?" in message
    assert "model.dtype 'fp16': use auto, float32, bfloat16 or float16." in message
    assert "env.sandbox 'dockr': use local, unisolated or docker. Did you mean 'docker'?" in message

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    usage = parser.format_help()
    assert "--env.reward_mode {" + ",".join(REWARD_MODES) + "}" in usage and "--eval.split {" + ",".join(SPLITS) + "}" in usage
    assert "--policy.topology {shared,lora,separate}" in usage


def test_env_kwargs_may_not_shadow_the_settings_the_trainer_passes_itself():
    assert set(SHADOWED_ENV_KWARGS) == {"split", "coach", "coach_kwargs", "reward_mode", "sandbox", "exec_timeout_s"}
    shadowing = {"split": "heldout", "coach": "receipts", "coach_kwargs": {}, "reward_mode": "outcome", "sandbox": "docker",
                 "exec_timeout_s": 5}
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"env": {"kwargs": shadowing}}).validate()
    message = str(info.value)
    assert "env.kwargs['split']: set env.split (or eval.split for evaluation) instead" in message
    for key in ("coach", "coach_kwargs", "reward_mode", "sandbox", "exec_timeout_s"):
        assert f"env.kwargs[{key!r}]: set env.{key} instead" in message
    assert TrainConfig.from_dict({"env": {"kwargs": {"outcome_weight": 0.3}}}).validate().env.kwargs == {"outcome_weight": 0.3}


def test_run_threads_is_validated_and_sets_torchs_intra_op_threads():
    torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
    with pytest.raises(ConfigError, match=r"run.threads must be >= 0 \(0: torch's default\), got -1"):
        parse("--run.threads", "-1")
    before = torch.get_num_threads()
    try:
        apply_threads(parse("--run.threads", "0"))
        assert torch.get_num_threads() == before
        wanted = 2 if before == 1 else 1
        apply_threads(parse("--run.threads", str(wanted)))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)
