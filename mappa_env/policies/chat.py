"""Chat-model teams for evaluation: every agent is the same chat model, prompted by its role.

* ``openai:<model>``: any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...). The endpoint
  comes from ``base_url``/``api_key`` arguments or the ``OPENAI_BASE_URL``/``OPENAI_API_KEY`` variables.
* ``hf:<path-or-id>``: a local transformers chat model, or a ``.gguf`` file (dequantised by transformers;
  needs ``gguf``). Imported only when used; needs ``torch`` and ``transformers``, which ``mappa_env``
  itself never imports.

Both send ``info["messages"]``, the same content as the text observation, and return the reply text.
The local model prefills its reply with ``info["reply_prefix"]`` (returned as part of the reply); an
endpoint cannot prefill through the chat completions API and leaves it out.
An unreachable endpoint raises :class:`PolicyError` with what to check, rather than feeding the team an
empty reply that would look like a model decision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mappa_env.error import Error


class PolicyError(Error):
    """The policy's model could not be reached or failed to answer."""


class OpenAIChatTeam:
    """All agents answered by one model behind an OpenAI-compatible chat completions endpoint."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.6,
        max_tokens: int = 2048,
        timeout_s: float = 120.0,
    ):
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise PolicyError("openai policies need the openai package: pip install 'mappa[openai]'") from exc
        self.name = f"openai:{model}"
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client = openai.OpenAI(
            base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            timeout=timeout_s,
            max_retries=2,
        )

    def act(self, agent: str, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        import openai

        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=list(info["messages"]),
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except openai.APIConnectionError as exc:
            raise PolicyError(
                f"cannot reach the endpoint {self._client.base_url} for {self.name}: {exc}. "
                "Start the server or set OPENAI_BASE_URL / --base-url to a running one."
            ) from exc
        except openai.APIStatusError as exc:
            raise PolicyError(f"{self.name} answered HTTP {exc.status_code}: {exc.message}") from exc
        return response.choices[0].message.content or ""


class HFChatTeam:
    """All agents answered by one local transformers chat model (sampled at temperature 0.6)."""

    def __init__(self, path: str, *, temperature: float = 0.6, max_new_tokens: int = 1024, gguf_file: str | None = None):
        from mappa_env.hf_models import load_chat_model

        try:
            self._tokenizer, self._model = load_chat_model(path, gguf_file=gguf_file, what="hf: policies")
        except ImportError as exc:
            raise PolicyError(str(exc)) from exc
        self.name = f"hf:{path}"
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens

    def act(self, agent: str, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        import torch

        prefix = info.get("reply_prefix") or ""
        ids = self._tokenizer.apply_chat_template(list(info["messages"]), add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]
        ids = list(ids) + self._tokenizer.encode(prefix, add_special_tokens=False)  # the reply opens with it
        input_ids = torch.tensor([ids], device=self._model.device)
        with torch.no_grad():
            out = self._model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                pad_token_id=self._tokenizer.eos_token_id,
            )
        return prefix + self._tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
