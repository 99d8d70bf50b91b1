"""TeamModel: topologies, batched generation with exact tokens and log-probs, and per-agent isolation of updates.

The model is ``tiny-random``: a 2-layer Llama with SmolLM2's tokenizer, initialised from a seed (no download).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("peft")

from mappa_train.config import ModelConfig, PolicyConfig  # noqa: E402
from mappa_train.policy import TeamModel  # noqa: E402

AGENTS = ["data_engineer", "modeler", "analyst"]
MESSAGES = [{"role": "system", "content": "You are the modeler."}, {"role": "user", "content": "Train a model on X_train.pkl."}]


def team(topology: str, **model) -> TeamModel:
    config = ModelConfig(**{"path": "tiny-random", "dtype": "float32", "device": "cpu", "max_new_tokens": 12, **model})
    return TeamModel(AGENTS, config, PolicyConfig(topology=topology, lora_rank=4, lora_alpha=8), seed=0)


@pytest.fixture(scope="module")
def lora_team():
    return team("lora")


def snapshot(parameters):
    return [p.detach().clone() for p in parameters]


def changed(before, parameters):
    return any(not torch.equal(a, b.detach()) for a, b in zip(before, parameters))


def test_recorded_log_probs_are_the_policy_log_probs_of_exactly_the_generated_tokens(lora_team):
    prompt = lora_team.encode_prompt(MESSAGES)
    generations = lora_team.generate([("modeler", prompt), ("analyst", prompt), ("modeler", prompt[3:])],
                                     temperature=1.0, seed=0)
    assert [g.agent for g in generations] == ["modeler", "analyst", "modeler"]  # request order kept
    for generation in generations:
        assert 1 <= len(generation.completion_ids) <= 12 and len(generation.sampling_logprobs) == len(generation.completion_ids)
        assert generation.truncated == (lora_team.tokenizer.eos_token_id not in generation.completion_ids)
        assert generation.text == lora_team.tokenizer.decode(generation.completion_ids, skip_special_tokens=True)
        with torch.no_grad(), lora_team.acting(generation.agent) as model:
            logprobs, mask = lora_team.completion_logprobs(model, [generation.prompt_ids], [generation.completion_ids])
        assert mask.sum().item() == len(generation.completion_ids)
        assert logprobs[0].tolist() == pytest.approx(generation.sampling_logprobs, abs=1e-4)
    assert generations[1].prompt_ids == prompt and generations[2].prompt_ids == prompt[3:]


def test_an_action_that_ends_its_turn_keeps_the_end_of_turn_token_it_is_trained_on(lora_team):
    """A reply ends with the end-of-turn token: it is part of the action (the model must learn when to stop)."""
    eos = lora_team.tokenizer.eos_token_id
    head = next(m for name, m in lora_team.module("modeler").named_modules() if name.endswith("lm_head"))

    def likes_to_stop(module, inputs, logits):  # part of the model: the policy itself prefers to stop
        logits[..., eos] += 11.0
        return logits

    hook = head.register_forward_hook(likes_to_stop)
    try:
        prompt = lora_team.encode_prompt(MESSAGES)
        generations = lora_team.generate([("modeler", prompt)] * 8, temperature=1.0, seed=1)
        ended = [g for g in generations if not g.truncated]
        assert ended and any(len(g.completion_ids) > 1 for g in ended)  # some stop at once, some later
        for generation in ended:
            assert generation.completion_ids[-1] == eos and eos not in generation.completion_ids[:-1]
            assert len(generation.sampling_logprobs) == len(generation.completion_ids)
            with torch.no_grad(), lora_team.acting("modeler") as model:
                logprobs, _ = lora_team.completion_logprobs(model, [generation.prompt_ids], [generation.completion_ids])
            assert logprobs[0].tolist() == pytest.approx(generation.sampling_logprobs, abs=1e-4)
    finally:
        hook.remove()


def saved_tiny_random(directory, **generation_config):
    """A tiny-random checkpoint in ``directory`` whose generation_config.json holds ``generation_config``."""
    from transformers import GenerationConfig

    from mappa_train.policy import load_tokenizer_and_model

    tokenizer, model = load_tokenizer_and_model(ModelConfig(path="tiny-random", dtype="float32", device="cpu"))
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    model.generation_config = GenerationConfig(**{**special, **generation_config})
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return tokenizer


@pytest.mark.parametrize("declared", ["list", "int"])
def test_a_turn_ends_at_every_end_of_turn_token_the_checkpoint_declares(tmp_path, declared):
    """Qwen-style: the tokenizer's EOS is <|im_end|>, and generation_config also lists <|endoftext|> (or only it).

    The model prefers <|endoftext|>: each action must stop there, end with it and not count as truncated.
    """
    tokenizer = saved_tiny_random(tmp_path)
    eos, other = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert other != eos
    saved_tiny_random(tmp_path, eos_token_id=[eos, other] if declared == "list" else other)
    subject = team("separate", path=str(tmp_path))
    assert subject.stop_ids == (eos, other)
    model = subject.module("modeler")

    def likes_the_other_stop(module, inputs, logits):
        logits[..., other] += 11.0
        return logits

    hook = model.lm_head.register_forward_hook(likes_the_other_stop)
    try:
        prompt = subject.encode_prompt(MESSAGES)
        generations = subject.generate([("modeler", prompt)] * 8, temperature=1.0, seed=1)
        assert any(len(g.completion_ids) > 1 for g in generations)  # some stop later than the first token
        for generation in generations:
            assert not generation.truncated and generation.completion_ids[-1] == other
            assert other not in generation.completion_ids[:-1] and eos not in generation.completion_ids
            assert len(generation.sampling_logprobs) == len(generation.completion_ids)
    finally:
        hook.remove()


def test_end_of_turn_ids_are_the_tokenizers_eos_and_every_declared_one_once():
    from types import SimpleNamespace

    from mappa_train.policy import end_of_turn_ids

    tokenizer = SimpleNamespace(eos_token_id=2)
    assert end_of_turn_ids(tokenizer, SimpleNamespace(eos_token_id=None)) == (2,)
    assert end_of_turn_ids(tokenizer, SimpleNamespace(eos_token_id=2)) == (2,)
    assert end_of_turn_ids(tokenizer, SimpleNamespace(eos_token_id=128009)) == (2, 128009)
    assert end_of_turn_ids(tokenizer, SimpleNamespace(eos_token_id=[1, 2, 106])) == (2, 1, 106)
    assert end_of_turn_ids(tokenizer, SimpleNamespace()) == (2,)


def test_log_probs_of_a_batch_with_prompts_of_different_lengths_equal_each_row_alone(lora_team):
    prompt = lora_team.encode_prompt(MESSAGES)
    prompts, completions = [prompt, prompt[7:], prompt[2:]], [[11, 12, 13], [14], [15, 16, 17, 18, 19]]
    with torch.no_grad(), lora_team.acting("modeler") as model:
        batch, mask = lora_team.completion_logprobs(model, prompts, completions)
        alone = [lora_team.completion_logprobs(model, [p], [c])[0][0] for p, c in zip(prompts, completions)]
    assert mask.sum(dim=1).tolist() == [3, 1, 5]
    for row, expected in enumerate(alone):
        assert batch[row, : len(expected)].tolist() == pytest.approx(expected.tolist(), abs=1e-4)
        assert all(v < 0 for v in expected.tolist())


def test_a_checkpoints_sampling_defaults_do_not_reshape_the_policy(tmp_path):
    """A repetition penalty, top-k or min-p in generation_config.json would make the recorded log-probs another distribution's."""
    from mappa_train.policy import load_tokenizer_and_model

    tokenizer, model = load_tokenizer_and_model(ModelConfig(path="tiny-random", dtype="float32", device="cpu"))
    from transformers import GenerationConfig

    with torch.no_grad():
        model.model.norm.weight.mul_(300.0)  # peaked logits: a random model's near-uniform ones hide any reshaping
    model.generation_config = GenerationConfig(  # as a checkpoint's generation_config.json may ship them
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        do_sample=True, repetition_penalty=1.5, top_k=3, min_p=0.2, no_repeat_ngram_size=2)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    saved = team("separate", path=str(tmp_path))
    prompt = saved.encode_prompt(MESSAGES)
    generation = saved.generate([("modeler", prompt)], temperature=1.0, max_new_tokens=12, seed=0)[0]
    with torch.no_grad(), saved.acting("modeler") as acting:
        logprobs, _ = saved.completion_logprobs(acting, [prompt], [generation.completion_ids])
    assert generation.from_policy
    assert logprobs[0].tolist() == pytest.approx(generation.sampling_logprobs, abs=1e-4)


def test_greedy_generation_is_deterministic(lora_team):
    prompt = lora_team.encode_prompt(MESSAGES)
    first = lora_team.generate([("analyst", prompt)], temperature=0)[0]
    assert lora_team.generate([("analyst", prompt)], temperature=0)[0].completion_ids == first.completion_ids


def test_seeded_generation_leaves_the_callers_random_state_as_it_was(lora_team):
    prompt = lora_team.encode_prompt(MESSAGES)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    lora_team.generate([("data_engineer", prompt), ("analyst", prompt)], temperature=1.0, seed=5)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_same_seed_gives_the_same_actions_whatever_the_global_random_state(lora_team):
    prompt = lora_team.encode_prompt(MESSAGES)
    requests = [("data_engineer", prompt), ("analyst", prompt)]
    torch.manual_seed(1)
    first = [g.completion_ids for g in lora_team.generate(requests, temperature=1.0, seed=5)]
    torch.manual_seed(2)
    again = [g.completion_ids for g in lora_team.generate(requests, temperature=1.0, seed=5)]
    other = [g.completion_ids for g in lora_team.generate(requests, temperature=1.0, seed=6)]
    assert again == first and other != first


def test_each_parameter_group_samples_its_own_stream_of_the_seed(lora_team):
    """Adapters start equal (LoRA B = 0): with one random stream for all, every agent would say the same."""
    prompt = lora_team.encode_prompt(MESSAGES)
    for agent in ("data_engineer", "analyst"):  # untouched by the other tests: still the base
        lora_b = [p for name, p in lora_team.module(agent).named_parameters() if f"lora_B.{agent}." in name]
        assert lora_b and not any(bool(p.any()) for p in lora_b)
    first, second = lora_team.generate([("data_engineer", prompt), ("analyst", prompt)], temperature=1.0, seed=5)
    assert first.completion_ids != second.completion_ids
    alone = lora_team.generate([("analyst", prompt)], temperature=1.0, seed=5)[0]
    assert alone.completion_ids == second.completion_ids  # a group's stream does not depend on who else acts


@pytest.mark.parametrize("topology", ["lora", "separate"])
def test_an_update_of_one_agent_changes_its_parameters_and_no_one_elses(topology, lora_team):
    subject = lora_team if topology == "lora" else team("separate")
    prompt = subject.encode_prompt(MESSAGES)
    completion = subject.generate([("modeler", prompt)], temperature=1.0, seed=1)[0].completion_ids
    groups = {g: snapshot(subject.trainable_parameters(g)) for g in subject.groups}
    with torch.no_grad(), subject.reference() as reference:
        ref_before, _ = subject.completion_logprobs(reference, [prompt], [completion])
        if topology == "lora":  # adapters start as the base (LoRA B = 0): policy == reference
            with subject.acting("analyst") as model:
                assert torch.allclose(subject.completion_logprobs(model, [prompt], [completion])[0], ref_before)

    lr = 0.5 if topology == "lora" else 0.01  # a full model moves far more per step than a rank-4 adapter
    optimizer = torch.optim.SGD(subject.trainable_parameters("modeler"), lr=lr)
    with subject.acting("modeler") as model:
        model.train()
        logprobs, mask = subject.completion_logprobs(model, [prompt], [completion])
        (-(logprobs * mask).sum()).backward()
    optimizer.step()
    optimizer.zero_grad()

    assert changed(groups["modeler"], subject.trainable_parameters("modeler"))
    for other in ("data_engineer", "analyst"):
        assert not changed(groups[other], subject.trainable_parameters(other)), f"{other} moved"
    with torch.no_grad():
        with subject.reference() as reference:
            assert torch.equal(subject.completion_logprobs(reference, [prompt], [completion])[0], ref_before)
        with subject.acting("modeler") as model:
            after, _ = subject.completion_logprobs(model, [prompt], [completion])
    assert after.sum() > ref_before.sum()  # the update made the sampled completion more likely


def test_shared_topology_has_one_parameter_group():
    shared = team("shared")
    assert shared.groups == ["shared"] and {shared.group_of(a) for a in AGENTS} == {"shared"}
    with pytest.raises(KeyError, match="unknown agent 'critic'"):
        shared.group_of("critic")


def test_long_prompts_keep_their_head_and_tail(lora_team):
    long_messages = [MESSAGES[0], {"role": "user", "content": " ".join(f"word{i}" for i in range(3000))}]
    full = lora_team.tokenizer.apply_chat_template(long_messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"]
    ids = lora_team.encode_prompt(long_messages)
    limit = lora_team.model_config.max_prompt_tokens
    assert len(full) > limit and len(ids) == limit
    assert ids[: limit // 4] == full[: limit // 4] and ids[limit // 4:] == full[len(full) - (limit - limit // 4):]


def test_a_reply_prefix_ends_the_prompt_even_when_the_prompt_is_cut(lora_team):
    prefix = "The answer is \\boxed{"
    prefix_ids = lora_team.tokenizer.encode(prefix, add_special_tokens=False)
    assert lora_team.encode_prompt(MESSAGES, prefix) == lora_team.encode_prompt(MESSAGES) + prefix_ids
    long_messages = [MESSAGES[0], {"role": "user", "content": " ".join(f"word{i}" for i in range(3000))}]
    cut = lora_team.encode_prompt(long_messages, prefix)
    assert cut[-len(prefix_ids):] == prefix_ids and cut[:-len(prefix_ids)] == lora_team.encode_prompt(long_messages)


def test_a_model_that_is_not_there_is_explained(tmp_path):
    with pytest.raises(OSError, match="nothing is downloaded"):
        TeamModel(AGENTS, ModelConfig(path=str(tmp_path / "missing"), device="cpu"), PolicyConfig())
