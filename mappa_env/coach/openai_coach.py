"""``OpenAICoach``: an LLM coach behind any OpenAI-compatible chat completions endpoint.

Works with OpenAI, vLLM, llama.cpp, Ollama or any provider with an OpenAI-compatible API. Calls are
asynchronous with at most ``max_in_flight`` in flight, so coaching many parallel episodes runs
concurrently; the synchronous :meth:`OpenAICoach.score` the environment uses submits to the coach's own
event loop thread, so calls from many threads share the same limit.

Robustness, and nothing silently faked:

* the score is parsed strictly (:func:`mappa_env.coach.prompting.parse_score`); a malformed reply is
  asked again once with a format reminder;
* 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter (a
  ``Retry-After`` header is honoured); other errors are not retried;
* when it still fails, the verdict has ``score=None`` and says why; every such case is counted in
  :attr:`OpenAICoach.stats`.

Cost and speed: replies are cached on disk by the full request (``cache_dir``, default
``<mappa cache>/coach``; ``cache_dir=None`` disables it); tokens, dollars (from a per-model price table)
and latency are recorded per call, in each verdict's details and in the running :attr:`stats`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mappa_env.coach.accounting import DEFAULT_PRICES, CoachStats, ResponseCache, call_cost
from mappa_env.coach.base import CoachRequest, Timing, Verdict
from mappa_env.coach.prompting import FORMAT_REMINDER, build_messages, parse_score, rationale_of, request_key_material

_SENTINEL_KEY = "not-needed"  # local servers accept any key; the client library insists on one


class OpenAICoach:
    """Scores actions with a chat model behind an OpenAI-compatible endpoint.

    Args:
        model: the model name the endpoint serves.
        base_url: endpoint (``.../v1``); default ``$OPENAI_BASE_URL``, else OpenAI's.
        api_key: default ``$OPENAI_API_KEY``; may be omitted for a server on this machine.
        temperature: sampling temperature (0 by default: reproducible, cacheable judgements).
        max_tokens: cap on the coach's reply.
        max_retries: retries of a retryable API error before the action is left unscored.
        timeout_s: per-call timeout.
        max_in_flight: calls in flight at once, across every thread that uses this coach.
        cache_dir: on-disk response cache; ``"default"`` is ``<mappa cache>/coach``, None disables it.
        timing: ``"online"`` (score right after each action) or ``"hindsight"`` (after the episode).
        prices: dollars per million (input, output) tokens per model, merged over :data:`DEFAULT_PRICES`.
        prompt_dir: directory whose prompt files override the packaged ones.
        max_output_chars: stdout/stderr kept (head+tail) in the evidence.
        max_observation_chars: the agent's prompt and reply kept (head+tail) in the evidence.
        backoff_s: first retry delay; doubles each attempt (with jitter), capped at ``backoff_max_s``.
        extra_body: extra request fields for the server, sent with every call and part of the cache
            key, e.g. constrained decoding (vLLM ``guided_regex``, llama.cpp ``grammar``) so that a small
            model always writes the score line.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 400,
        max_retries: int = 5,
        timeout_s: float = 120.0,
        max_in_flight: int = 8,
        cache_dir: str | Path | None = "default",
        timing: Timing = "online",
        prices: Mapping[str, tuple[float, float]] | None = None,
        prompt_dir: str | Path | None = None,
        max_output_chars: int = 2000,
        max_observation_chars: int = 6000,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
    ):
        import openai  # noqa: F401  (fail here, with the fix, if it is missing)

        if not model:
            raise ValueError("OpenAICoach needs a model name, e.g. coach='openai:gpt-4.1-mini'")
        if timing not in ("online", "hindsight"):
            raise ValueError(f"timing must be 'online' or 'hindsight', got {timing!r}")
        if max_in_flight < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError("max_in_flight must be >= 1, max_retries >= 0 and timeout_s > 0")
        self.model = model
        self.name = f"openai:{model}"
        self.timing: Timing = timing
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self.api_key:
            if self.base_url is None or not _is_local(self.base_url):
                raise ValueError(
                    f"coach {self.name!r} needs an API key: set OPENAI_API_KEY or pass coach_kwargs={{'api_key': ...}} "
                    "(a server on this machine needs none: pass its base_url, e.g. http://127.0.0.1:8000/v1)"
                )
            self.api_key = _SENTINEL_KEY
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        self.extra_body = dict(extra_body or {})
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.prices = {**DEFAULT_PRICES, **dict(prices or {})}
        self.prompt_dir = prompt_dir
        self.max_output_chars = max_output_chars
        self.max_observation_chars = max_observation_chars
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.cache = ResponseCache(_default_cache_dir() if cache_dir == "default" else cache_dir) if cache_dir else None
        self.stats = CoachStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()

    # ------------------------------------------------------------------ public API
    def score(self, request: CoachRequest) -> Verdict:
        """Score one action (blocking). Safe to call from many threads at once."""
        return asyncio.run_coroutine_threadsafe(self.ascore(request), self._ensure_loop()).result()

    async def ascore(self, request: CoachRequest) -> Verdict:
        """Score one action. Runs on the coach's own event loop, whatever loop awaits it."""
        loop = self._ensure_loop()
        if asyncio.get_running_loop() is loop:
            return await self._score(request)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._score(request), loop))

    def close(self) -> None:
        """Close the HTTP client and stop the coach's event loop thread. Idempotent."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
            if loop is None or loop.is_closed():
                return
            try:
                asyncio.run_coroutine_threadsafe(self._client.close(), loop).result(timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                self._thread.join(timeout=10)
                loop.close()

    # ------------------------------------------------------------------ one request
    async def _score(self, request: CoachRequest) -> Verdict:
        messages = build_messages(
            request, prompt_dir=self.prompt_dir, max_output_chars=self.max_output_chars,
            max_observation_chars=self.max_observation_chars,
        )
        key = ResponseCache.key(request_key_material(self.model, messages, {**self.params, **self.extra_body}))
        cached = self.cache.get(key) if self.cache else None
        if cached is not None and parse_score(cached.get("reply", "")) is not None:
            self.stats.count("cache_hits")
            return self._verdict(cached["reply"], cached=True, prompt_tokens=0, completion_tokens=0, latency_s=0.0, reasked=False)

        reply, usage, latency, error = await self._complete(messages)
        reasked = False
        if error is None and parse_score(reply) is None:
            self.stats.count("reasks")
            reasked = True
            retry_messages = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": FORMAT_REMINDER}]
            reply2, usage2, latency2, error = await self._complete(retry_messages)
            usage = (usage[0] + usage2[0], usage[1] + usage2[1])
            latency += latency2
            reply = reply2 if error is None else reply
        if error is not None:
            message = f"coach call failed after {self.max_retries} retries: {error}"
            return self._unscored("api_error", message, usage, latency, reasked=reasked)
        if parse_score(reply) is None:
            message = f"malformed reply (no valid PROCESS_SCORE line, even after a reminder): {rationale_of(reply, 300)}"
            return self._unscored("malformed", message, usage, latency, reasked=reasked)
        if self.cache:
            self.cache.put(key, {"model": self.model, "reply": reply})
        return self._verdict(reply, cached=False, prompt_tokens=usage[0], completion_tokens=usage[1], latency_s=latency, reasked=reasked)

    async def _complete(self, messages: list[dict[str, str]]) -> tuple[str, tuple[int, int], float, str | None]:
        """One completion with retries: (reply, (prompt_tokens, completion_tokens), seconds, error or None)."""
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
                    return "", (0, 0), time.perf_counter() - started, f"HTTP {exc.status_code}: {_short(exc)} (not retried)"
                retry_after, error = _retry_after(exc), f"HTTP {exc.status_code}: {_short(exc)}"
            else:
                latency = time.perf_counter() - started
                usage = response.usage
                tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
                cost = call_cost(self.model, tokens[0], tokens[1], self.prices)
                self.stats.record_call(prompt_tokens=tokens[0], completion_tokens=tokens[1], cost=cost, latency_s=latency)
                content = response.choices[0].message.content if response.choices else ""
                return content or "", tokens, latency, None
            if attempt >= self.max_retries:
                return "", (0, 0), time.perf_counter() - started, error
            attempt += 1
            self.stats.count("retries")
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random())
            await asyncio.sleep(min(self.backoff_max_s, retry_after) if retry_after is not None else delay)

    def _verdict(self, reply: str, *, cached: bool, prompt_tokens: int, completion_tokens: int,
                 latency_s: float, reasked: bool) -> Verdict:
        cost = 0.0 if cached else call_cost(self.model, prompt_tokens, completion_tokens, self.prices)
        return Verdict(
            parse_score(reply), rationale_of(reply), self.name,
            {"cached": cached, "reasked": reasked, "prompt_tokens": prompt_tokens,
             "completion_tokens": completion_tokens, "cost_usd": cost, "latency_s": round(latency_s, 4)},
        )

    def _unscored(self, reason: str, message: str, usage: tuple[int, int], latency_s: float, *, reasked: bool) -> Verdict:
        self.stats.count("unscored", reason)
        return Verdict(
            None, message, self.name,
            {"unscored_reason": reason, "cached": False, "reasked": reasked,
             "prompt_tokens": usage[0], "completion_tokens": usage[1],
             "cost_usd": call_cost(self.model, usage[0], usage[1], self.prices), "latency_s": round(latency_s, 4)},
        )

    # ------------------------------------------------------------------ event loop
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                import openai

                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name=f"coach-{self.model}", daemon=True)
                self._thread.start()

                async def setup() -> None:
                    self._semaphore = asyncio.Semaphore(self.max_in_flight)
                    self._client = openai.AsyncOpenAI(
                        base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=0
                    )

                asyncio.run_coroutine_threadsafe(setup(), loop).result()
                self._loop = loop
            return self._loop

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


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


def _default_cache_dir() -> Path:
    from mappa_env.tasks.cache import cache_root

    return cache_root() / "coach"
