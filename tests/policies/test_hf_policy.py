"""The hf: team generates with a real (tiny, randomly initialised) transformers chat model built offline."""

from __future__ import annotations

import string

import pytest

torch = pytest.importorskip("torch", reason="hf: policies need torch (installed by the README's test line)")
transformers = pytest.importorskip("transformers")

from mappa_env.policies import HFChatTeam, make_policy  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    """A character-level tokenizer with a chat template and a 1-layer Llama, saved like a hub model."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(string.printable)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = TEMPLATE
    path = tmp_path_factory.mktemp("tiny-chat")
    tokenizer.save_pretrained(path)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


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
