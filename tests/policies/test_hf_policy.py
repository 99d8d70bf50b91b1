"""The hf: team generates with a real (tiny, randomly initialised) transformers chat model built offline."""

from __future__ import annotations

import string

import pytest

torch = pytest.importorskip("torch", reason="hf: policies need torch (installed by the README's test line)")
transformers = pytest.importorskip("transformers")

from mappa_env.policies import HFChatTeam, make_policy  # noqa: E402


def test_hf_team_replies_with_new_text_only(tiny_chat_model):
    policy = make_policy(f"hf:{tiny_chat_model}", max_new_tokens=12)
    assert isinstance(policy, HFChatTeam) and policy.name == f"hf:{tiny_chat_model}"
    messages = [{"role": "system", "content": "You are the Modeler."}, {"role": "user", "content": "Train a model."}]
    torch.manual_seed(1)
    reply = policy.act("modeler", {"text": ""}, {"messages": messages})
    assert isinstance(reply, str)
    assert 0 < len(reply) <= 12  # one character per token, at most max_new_tokens, prompt not echoed
    assert "Train a model." not in reply
    assert set(reply) <= set(string.printable)


def test_hf_team_is_reproducible_under_the_same_torch_seed(tiny_chat_model):
    policy = make_policy(f"hf:{tiny_chat_model}", max_new_tokens=8)
    info = {"messages": [{"role": "user", "content": "hello"}]}
    torch.manual_seed(7)
    first = policy.act("analyst", {"text": ""}, info)
    torch.manual_seed(7)
    assert policy.act("analyst", {"text": ""}, info) == first


def test_hf_team_prefills_the_reply_prefix_and_returns_it_with_the_reply(tiny_chat_model):
    policy = make_policy(f"hf:{tiny_chat_model}", max_new_tokens=6)
    prefix = "The answer is \\boxed{"
    prompts = []
    generate = policy._model.generate

    def recording_generate(**kwargs):  # what the model was asked to continue
        prompts.append(kwargs["input_ids"][0].tolist())
        return generate(**kwargs)

    policy._model.generate = recording_generate
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    reply = policy.act("verifier", {"text": ""}, {"messages": messages, "reply_prefix": prefix})
    assert reply.startswith(prefix) and len(reply) <= len(prefix) + 6
    template = policy._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert policy._tokenizer.decode(prompts[-1]) == template + prefix  # the model continued the opened reply
    policy.act("solver", {"text": ""}, {"messages": messages})
    assert policy._tokenizer.decode(prompts[-1]) == template  # no prefix offered: none prefilled
