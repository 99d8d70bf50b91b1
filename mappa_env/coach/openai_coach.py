"""``OpenAICoach``: an LLM coach behind any OpenAI-compatible chat completions endpoint.

Works with OpenAI, vLLM, llama.cpp, Ollama or any provider with an OpenAI-compatible API. Calls are
asynchronous with at most ``max_in_flight`` in flight, so coaching many parallel episodes runs
concurrently; the synchronous :meth:`OpenAICoach.score` the environment uses submits to the coach's own
event loop thread, so calls from many threads share the same limit.

Parsing, the re-ask, the cache and the accounting are :class:`~mappa_env.coach.llm.LLMCoach`'s; this
module adds the endpoint: 429, 5xx, timeouts and connection errors are retried with exponential backoff
and jitter (a ``Retry-After`` header is honoured); other errors are not retried; when it still fails,
the action is left unscored with reason ``api_error``. Tokens and dollars (from a per-model price table)
come from the endpoint's usage report.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from mappa_env.coach.llm import Completion, LLMCoach

_SENTINEL_KEY = "not-needed"  # local servers accept any key; the client library insists on one


class OpenAICoach(LLMCoach):
    """Scores actions with a chat model behind an OpenAI-compatible endpoint.

    Args:
        model: the model name the endpoint serves.
        base_url: endpoint (``.../v1``); default ``$OPENAI_BASE_URL``, else OpenAI's.
        api_key: default ``$OPENAI_API_KEY``; may be omitted for a server on this machine.
        temperature: sampling temperature (0 by default: reproducible, cacheable judgements).
        max_tokens: cap on the coach's reply, thinking included (1024: room for a short chain of thought
            before the score line; a reply cut at it before its score line is unscored as ``truncated``).
        token_limit_param: the request field the cap is sent as: ``"max_tokens"``, or
            ``"max_completion_tokens"`` for endpoints that refuse the former (OpenAI's reasoning models).
        max_retries: retries of a retryable API error before the action is left unscored.
        timeout_s: per-call timeout.
        backoff_s: first retry delay; doubles each attempt (with jitter), capped at ``backoff_max_s``.
        extra_body: extra request fields for the server, sent with every call and part of the cache
            key, e.g. constrained decoding (vLLM ``guided_regex``, llama.cpp ``grammar``, or for
            ``transformers serve`` :func:`mappa_env.coach.constrain.transformers_serve_extra_body`) so
            that a small model always writes the score line.
        **options: ``max_in_flight``, ``cache_dir``, ``timing``, ``prices``, ``prompt_dir``,
            ``max_observation_chars``: see :class:`~mappa_env.coach.llm.LLMCoach`.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        token_limit_param: str = "max_tokens",
        max_retries: int = 5,
        timeout_s: float = 120.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        **options: Any,
    ):
        import openai  # noqa: F401  (fail here, with the fix, if it is missing)

        if not model:
            raise ValueError("OpenAICoach needs a model name, e.g. coach='openai:gpt-4.1-mini'")
        if max_retries < 0 or timeout_s <= 0:
            raise ValueError("max_retries must be >= 0 and timeout_s > 0")
        if token_limit_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(f"token_limit_param must be 'max_tokens' or 'max_completion_tokens', got {token_limit_param!r}")
        self.params = {"temperature": temperature, token_limit_param: max_tokens}
        self.extra_body = dict(extra_body or {})
        super().__init__(model, name=f"openai:{model}", cache_params={**self.params, **self.extra_body}, **options)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self.api_key:
            if self.base_url is None or not _is_local(self.base_url):
                raise ValueError(
                    f"coach {self.name!r} needs an API key: set OPENAI_API_KEY or pass coach_kwargs={{'api_key': ...}} "
                    "(a server on this machine needs none: pass its base_url, e.g. http://127.0.0.1:8000/v1)"
                )
            self.api_key = _SENTINEL_KEY
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s

    async def _open_backend(self) -> None:
        import openai

        self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=0)

    async def _close_backend(self) -> None:
        await self._client.close()

    async def _complete(self, messages: list[dict[str, str]]) -> Completion:
        import openai

        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                async with self._semaphore:
                    response = await self._client.chat.completions.create(
                        model=self.model, messages=messages, extra_body=self.extra_body or None, **self.params
                    )
            except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                retry_after = _retry_after(exc)
                error = f"{type(exc).__name__}: {_short(exc)}"
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code != 429:
                    return Completion(latency_s=time.perf_counter() - started,
                                      error=f"HTTP {exc.status_code}: {_short(exc)} (not retried)")
                retry_after, error = _retry_after(exc), f"HTTP {exc.status_code}: {_short(exc)}"
            else:
                usage = response.usage
                choice = response.choices[0] if response.choices else None
                return Completion(
                    text=(choice.message.content if choice else "") or "",
                    truncated=choice is not None and choice.finish_reason == "length",
                    prompt_tokens=usage.prompt_tokens if usage else 0,
                    completion_tokens=usage.completion_tokens if usage else 0, latency_s=time.perf_counter() - started,
                )
            if attempt >= self.max_retries:
                return Completion(latency_s=time.perf_counter() - started,
                                  error=f"{error} (gave up after {self.max_retries} retries)")
            attempt += 1
            self.stats.count("retries")
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random())
            await asyncio.sleep(min(self.backoff_max_s, retry_after) if retry_after is not None else delay)


def _is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _short(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc).splitlines()[0][:300]
