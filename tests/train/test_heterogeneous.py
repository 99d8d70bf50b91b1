"""Heterogeneous teams: agents on different base models (``model.per_agent``), each with its own tokenizer.

The two bases are the suite's character-level tiny chat model (103 tokens) and the packaged SmolLM2-135M
(a 49,152-token BPE): what one agent's prompt ids mean is not what the other's mean, so any place that
tokenised, generated, scored or exported with the wrong base's tokenizer or model would show.
"""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("peft")

import toy_env  # noqa: E402
from test_learning import toy_config  # noqa: E402

from mappa_env.hf_models import load_exported_base  # noqa: E402
from mappa_train.config import ConfigError, ModelConfig, PolicyConfig, TrainConfig  # noqa: E402
from mappa_train.policy import TeamModel  # noqa: E402
from mappa_train.rollout import EpisodeSpec, collect  # noqa: E402
from mappa_train.trainer import train  # noqa: E402

import mappa_env  # noqa: E402

SMOLLM2_VOCAB = 49152


def team_of(tiny_chat_model, topology: str) -> TeamModel:
    """The toy team: the writer on the tiny character-level model, the checker on SmolLM2."""
    config = ModelConfig(path=str(tiny_chat_model), per_agent={"checker": "smollm2"}, dtype="float32", device="cpu",
                         max_new_tokens=6)
    return TeamModel(["writer", "checker"], config, PolicyConfig(topology=topology, lora_rank=4, lora_alpha=8), seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["lora", "separate"])
def test_each_agent_acts_with_its_own_bases_tokens_and_is_scored_by_its_own_model(tiny_chat_model, topology):
    team = team_of(tiny_chat_model, topology)
    writer, checker = team.base_of("writer"), team.base_of("checker")
    assert len(team.bases) == 2 and len(writer.tokenizer) == 103 and len(checker.tokenizer) == SMOLLM2_VOCAB
    toy_env.register()
    episodes, _ = collect(team, [mappa_env.make(toy_env.ENV_ID) for _ in range(2)],
                          [EpisodeSpec(task.id, seed=0) for task in toy_env.TASKS[:2]], temperature=1.0, seed=0)
    samples = [s for e in episodes for s in e.samples]
    assert {s.agent for s in samples} == {"writer", "checker"}
    for sample in samples:
        own = team.base_of(sample.agent)
        generation = sample.generation
        # the prompt is the agent's own base's chat template, and what it generated decodes with that tokenizer
        text = own.tokenizer.decode(generation.prompt_ids)
        assert "digit" in text.lower(), text
        assert generation.text == own.tokenizer.decode(generation.completion_ids, skip_special_tokens=True)
        assert max(generation.prompt_ids + generation.completion_ids) < len(own.tokenizer)
        # the recorded sampling log-probs are the acting model's: each agent's own model scores its own tokens
        with torch.no_grad(), team.acting(sample.agent) as model:
            logprobs, _ = team.completion_logprobs(model, [generation.prompt_ids], [generation.completion_ids])
        assert logprobs[0].tolist() == pytest.approx(generation.sampling_logprobs, abs=1e-4)
    # SmolLM2's BPE needs ids beyond the character model's 103: the checker did not borrow the writer's tokenizer
    assert max(i for s in samples if s.agent == "checker" for i in s.generation.prompt_ids) >= 103
    with team.reference("writer") as reference:
        assert reference.config.vocab_size == 103
    with team.reference("checker") as reference:
        assert reference.config.vocab_size == SMOLLM2_VOCAB


@pytest.mark.slow
def test_a_tiny_random_and_smollm2_team_trains_two_steps_and_exports_each_agent_on_its_base(tiny_chat_model, tmp_path):
    toy_env.register()
    config = toy_config(tiny_chat_model, tmp_path / "run", "reinforce_pp", steps=2).to_dict()
    config["model"].update(path="tiny-random", per_agent={"checker": "smollm2"})
    config["policy"]["lora_target_modules"] = ["q_proj", "v_proj"]  # no lm_head: SmolLM2's adapter stays small
    config["rollout"].update(tasks_per_step=2, samples_per_task=2, envs_in_flight=2)
    config["run"]["checkpoint_every"] = 1
    out = train(TrainConfig.from_dict(config).validate())

    from mappa_train.report import read_scalars

    scalars = read_scalars(out)
    for agent in ("writer", "checker"):
        assert [step for step, _ in scalars[f"agent/{agent}/policy_loss"]] == [1, 2], agent
        assert [step for step, _ in scalars[f"agent/{agent}/response_tokens"]] == [1, 2], agent
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]
    assert "lora policies from tiny-random (checker from smollm2)," in (out / "report.md").read_text()

    final = out / "final"
    record = json.loads((final / "base_model.json").read_text())
    assert record["per_agent"]["writer"]["name"] == "tiny-random" and record["per_agent"]["writer"]["weights"]
    assert record["per_agent"]["checker"]["name"] == "smollm2" and record["per_agent"]["checker"]["weights"] is None
    for agent, base in (("writer", "tiny-random"), ("checker", "HuggingFaceTB/SmolLM2-135M-Instruct")):
        assert json.loads((final / agent / "adapter_config.json").read_text())["base_model_name_or_path"] == base
        # both agents trained: LoRA's B starts at zero and moves only under an update
        adapter = load_file(final / agent / "adapter_model.safetensors")
        assert any(name.endswith("lora_B.weight") and tensor.abs().max() > 0 for name, tensor in adapter.items()), agent
    with pytest.raises(ValueError, match="different base models.*agent=.*writer, checker"):
        load_exported_base(final)
    tokenizer, base = load_exported_base(final, agent="writer")  # the copy written beside the adapters
    assert len(tokenizer) == SMOLLM2_VOCAB and base.config.hidden_size == 64  # tiny-random: SmolLM2's tokenizer


def test_per_agent_models_are_checked_against_the_team_and_the_topology(tiny_chat_model):
    with pytest.raises(ValueError, match="model.per_agent names analyst, not an agent of this team \\(writer, checker\\)"):
        TeamModel(["writer", "checker"], ModelConfig(path=str(tiny_chat_model), per_agent={"analyst": "smollm2"}),
                  PolicyConfig(), seed=0)
    with pytest.raises(ConfigError, match="model.per_agent gives agents different base models: use policy.topology lora"):
        TrainConfig.from_dict({"model": {"per_agent": {"writer": "smollm2"}}, "policy": {"topology": "shared"}}).validate()


def test_the_command_line_takes_one_option_per_agent_on_top_of_the_config(tmp_path):
    import yaml

    from mappa_train.config import load_config, per_agent_models

    models, rest = per_agent_models(["--model.per_agent.modeler", "tiny-random", "--model.per_agent.analyst=x/y",
                                     "--run.steps", "3"])
    assert models == {"modeler": "tiny-random", "analyst": "x/y"} and rest == ["--run.steps", "3"]
    with pytest.raises(ConfigError, match="needs a value"):
        per_agent_models(["--model.per_agent.modeler", "--run.steps", "3"])
    with pytest.raises(ConfigError, match="name the agent"):
        per_agent_models(["--model.per_agent.=x"])
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({"model": {"per_agent": {"analyst": "smollm2", "data_engineer": "smollm2"}}}))
    config = load_config(file, {}, per_agent=models)
    assert config.model.per_agent == {"analyst": "x/y", "data_engineer": "smollm2", "modeler": "tiny-random"}
