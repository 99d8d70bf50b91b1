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
