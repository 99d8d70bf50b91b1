"""Run configuration: defaults, shipped YAML files, command-line overrides, and errors that say what to fix."""

from __future__ import annotations

import argparse

import pytest

from mappa_train.config import ConfigError, TrainConfig, add_arguments, load_config, overrides_from_args


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
    assert gpu.optim.lr == 1e-6 and gpu.optim.betas == [0.9, 0.95] and gpu.algorithm.kl_coef == 0.01


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
    assert "unknown section 'optm'; did you mean 'optim'?" in message
    assert "optim has no field 'lrr'; did you mean 'lr'?" in message
    assert "run.steps: expected an integer, got 'two'" in message

    with pytest.raises(ConfigError) as info:
        parse("--algorithm.estimator", "grpo", "--rollout.samples_per_task", "1", "--policy.topology", "adapters")
    message = str(info.value)
    assert "set rollout.samples_per_task >= 2" in message and "policy.topology 'adapters': use shared, lora or separate" in message


def test_config_files_that_are_not_there_or_not_yaml_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="not found; shipped configs: cpu, mappa-gpu, tiny"):
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
