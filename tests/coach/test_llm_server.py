"""Smoke test: the real local LLM server answers OpenAI chat completions deterministically."""

import pytest

pytestmark = pytest.mark.llm_server


def _ask(client, model: str) -> str:
    resp = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a terse grader."},
            {"role": "user", "content": "Score this action from 0 to 10: the agent printed df.head()."},
        ],
        max_tokens=16,
        temperature=0,
    )
    return resp.choices[0].message.content


def test_llm_server_chat_completion_is_deterministic(llm_server):
    from openai import OpenAI

    assert llm_server.base_url.endswith("/v1")
    client = OpenAI(base_url=llm_server.base_url, api_key="not-needed", timeout=120, max_retries=0)
    first = _ask(client, llm_server.model)
    assert isinstance(first, str) and first.strip()
    assert _ask(client, llm_server.model) == first
