"""Make a small chat model open its reply with a valid score line, without a grammar engine.

A coach of about a hundred million parameters rarely writes ``PROCESS_SCORE: <0-10>`` on its own (the
packaged SmolLM2-135M: 0 of 6 actions, even after the re-ask). Servers with a grammar engine can force
the line (vLLM ``guided_regex``, llama.cpp ``grammar``, via ``extra_body``). ``transformers serve`` and a
local transformers model have no grammar engine, but both take a *sequence bias*: an additive logit bias
on a token when the tokens before it match. Biasing each token of the score line, keyed on the
generation prompt so that it fires only at the very start of the reply, makes the reply open with
``PROCESS_SCORE: <n>`` and a newline. The model still chooses the number among 0–10 (all eleven are
biased alike) and writes its rationale after it.

The score then comes before the reasoning, which costs judgement quality: use this for small local
models whose alternative is no score at all, not for a capable coach.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from mappa_env.coach.prompting import SCORE_LINE_PREFIX

#: Logit bias on each allowed token: large enough that greedy and sampled decoding both follow it.
DEFAULT_STRENGTH = 100.0


class ChatTokenizer(Protocol):
    """What is needed of a Hugging Face tokenizer (duck-typed: mappa_env does not import transformers)."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...


def generation_prompt_ids(tokenizer: ChatTokenizer) -> list[int]:
    """The tokens the chat template appends to open the assistant's turn (``<|im_start|>assistant\\n``)."""
    conversation = [{"role": "user", "content": "x"}]
    closed = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    opened = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    if not opened.startswith(closed) or opened == closed:
        raise ValueError(
            "the tokenizer's chat template has no separable generation prompt, so the score line cannot be "
            "keyed on the start of the reply; use a server with a grammar engine (extra_body) instead"
        )
    ids = tokenizer.encode(opened[len(closed):], add_special_tokens=False)
    if not ids:
        raise ValueError("the chat template's generation prompt encodes to no tokens")
    return list(ids)


def score_line_sequence_bias(tokenizer: ChatTokenizer, *, strength: float = DEFAULT_STRENGTH) -> list[list[Any]]:
    """``sequence_bias`` entries (``[[token ids...], bias]``) that force a reply to open with the score line.

    The eleven lines ``PROCESS_SCORE: 0\\n`` … ``PROCESS_SCORE: 10\\n`` are tokenized and merged into a
    prefix tree; every edge of the tree becomes one entry keyed on the generation prompt plus the path
    to it. Where the tree branches (the number) every branch gets the same bias, so the model's own
    preference decides.
    """
    if strength <= 0:
        raise ValueError(f"strength must be positive, got {strength}")
    opening = generation_prompt_ids(tokenizer)
    entries: dict[tuple[int, ...], float] = {}
    for score in range(11):
        line = tokenizer.encode(f"{SCORE_LINE_PREFIX}{score}\n", add_special_tokens=False)
        for end in range(1, len(line) + 1):
            entries[tuple(opening + list(line[:end]))] = float(strength)
    return [[list(ids), bias] for ids, bias in entries.items()]


def transformers_serve_extra_body(tokenizer: ChatTokenizer, *, strength: float = DEFAULT_STRENGTH) -> dict[str, str]:
    """``extra_body`` for an :class:`~mappa_env.coach.OpenAICoach` talking to ``transformers serve``.

    ``transformers serve`` takes a whole generation config as a JSON string in the request; it replaces
    the model's own, so the end-of-turn token is carried over here. ``tokenizer`` must be the served
    model's: pass it as ``coach_kwargs={"extra_body": transformers_serve_extra_body(tokenizer)}``.
    """
    config: dict[str, Any] = {"sequence_bias": score_line_sequence_bias(tokenizer, strength=strength)}
    if tokenizer.eos_token_id is not None:
        config["eos_token_id"] = tokenizer.eos_token_id
        config["pad_token_id"] = getattr(tokenizer, "pad_token_id", None) or tokenizer.eos_token_id
    return {"generation_config": json.dumps(config)}
