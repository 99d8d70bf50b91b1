"""``LLMCoach``: what every coach backed by a chat model shares, whatever serves the model.

One action is judged like this, the same for an API endpoint (:class:`~mappa_env.coach.OpenAICoach`)
and a local model (:class:`~mappa_env.coach.HFCoach`):

1. the prompt is built from the role's rubric and the evidence (:mod:`mappa_env.coach.prompting`);
2. the on-disk cache is looked up by the full request (model, messages, parameters); only replies
   that parsed are ever cached, so a cached reply always yields a score;
3. otherwise the backend completes the messages (:meth:`LLMCoach._complete`); a reply without a
   valid ``PROCESS_SCORE:`` line is asked again once, with a format reminder;
4. a reply that still does not parse, or a backend that failed, gives a verdict with ``score=None``
   and the reason (``malformed`` or ``api_error``), counted in :attr:`LLMCoach.stats`: never a guess.

Calls run on the coach's own event loop thread with at most ``max_in_flight`` at once, so the
synchronous :meth:`LLMCoach.score` can be used from many environment threads and the asynchronous
:meth:`LLMCoach.ascore` from any event loop, all sharing the same limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mappa_env.arguments import accepted_parameters
from mappa_env.coach.accounting import DEFAULT_PRICES, CoachStats, ResponseCache, call_cost
from mappa_env.coach.base import CoachRequest, Timing, Verdict
from mappa_env.coach.prompting import (
    FORMAT_REMINDER, ParsedReply, ScorePosition, build_messages, parse_reply, rationale_of, request_key_material,
)


@dataclass(frozen=True)
class Completion:
    """One reply from the backend, or why there is none (``error`` set, ``text`` empty)."""

    text: str = ""
    truncated: bool = False  # cut at the length limit (max_tokens / max_new_tokens)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None


class LLMCoach:
    """Base of the chat-model coaches. Subclasses implement :meth:`_complete` (and may hook the loop).

    Args:
        model: the model's name, as the backend knows it; part of the cache key.
        name: the coach's name in verdicts and logs (``openai:<model>``, ``hf:<path>``).
        timing: ``"online"`` (score right after each action) or ``"hindsight"`` (after the episode).
        max_in_flight: completions in flight at once, across every thread that uses this coach.
        cache_dir: on-disk response cache; ``"default"`` is ``<mappa cache>/coach``, None disables it.
        prices: dollars per million (input, output) tokens per model, merged over :data:`DEFAULT_PRICES`.
        prompt_dir: directory whose prompt files override the packaged ones.
        score_line: where a reply's ``PROCESS_SCORE:`` line must be: ``"last"`` (the rubric's rule: the
            final non-empty line) or ``"first"`` (replies forced to open with it by constrained decoding).
        max_observation_chars: the agent's prompt, reply and code kept (head+tail) in the evidence; the
            tool output is shown as the environment cut it (its ``max_output_chars``).
        cache_params: the generation parameters that change replies (part of the cache key).

    Subclasses take these options (all but ``model``, ``name`` and ``cache_params``) as keyword
    arguments and pass them on unchanged, so they are declared, defaulted and checked here only
    (:data:`SHARED_OPTIONS`).
    """

    #: the unscored reason of a verdict whose backend failed (after its own retries)
    error_reason = "api_error"

    def __init__(
        self,
        model: str,
        *,
        name: str,
        timing: Timing = "online",
        max_in_flight: int = 8,
        cache_dir: str | Path | None = "default",
        prices: Mapping[str, tuple[float, float]] | None = None,
        prompt_dir: str | Path | None = None,
        max_observation_chars: int = 6000,
        score_line: ScorePosition = "last",
        cache_params: Mapping[str, Any] | None = None,
    ):
        if timing not in ("online", "hindsight"):
            raise ValueError(f"timing must be 'online' or 'hindsight', got {timing!r}")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        if score_line not in ("last", "first"):
            raise ValueError(f"score_line must be 'last' (the final line of the reply) or 'first', got {score_line!r}")
        if not isinstance(max_observation_chars, int) or max_observation_chars < 200:
            raise ValueError(f"max_observation_chars must be an integer >= 200, got {max_observation_chars!r}")
        self.model = model
        self.name = name
        self.timing: Timing = timing
        self.max_in_flight = max_in_flight
        self.prices = {**DEFAULT_PRICES, **dict(prices or {})}
        self.prompt_dir = prompt_dir
        self.score_line: ScorePosition = score_line
        self.max_observation_chars = max_observation_chars
        self.cache_params = dict(cache_params or {})
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
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.ascore(request), loop))

    def close(self) -> None:
        """Release the backend and stop the coach's event loop thread. Idempotent."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
            if loop is None or loop.is_closed():
                return
            try:
                asyncio.run_coroutine_threadsafe(self._close_backend(), loop).result(timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                self._thread.join(timeout=10)
                loop.close()

    # ------------------------------------------------------------------ backend hooks
    async def _complete(self, messages: list[dict[str, str]]) -> Completion:
        """Complete ``messages`` once, retrying transient failures as the backend sees fit.

        Implementations hold ``self._semaphore`` while a completion is actually running (not while
        waiting to retry), which is what bounds the calls in flight.
        """
        raise NotImplementedError

    async def _open_backend(self) -> None:
        """Called once on the coach's event loop before the first completion."""

    async def _close_backend(self) -> None:
        """Called once on the coach's event loop by :meth:`close`."""

    # ------------------------------------------------------------------ one request
    async def _score(self, request: CoachRequest) -> Verdict:
        messages = build_messages(request, prompt_dir=self.prompt_dir, max_observation_chars=self.max_observation_chars)
        key = ResponseCache.key(request_key_material(self.model, messages, self.cache_params))
        cached = self.cache.get(key) if self.cache else None
        if cached is not None and self._parse(cached.get("reply", "")).score is not None:
            self.stats.count("cache_hits")
            return self._verdict(cached["reply"], Completion(), cached=True, reasked=False)

        first = await self._complete(messages)
        self._record(first)
        reply, total, reasked = first.text, first, False
        if first.error is None and self._parse(first.text, first.truncated).problem in ("malformed", "misplaced"):
            self.stats.count("reasks")
            reasked = True
            retry_messages = [*messages, {"role": "assistant", "content": first.text}, {"role": "user", "content": FORMAT_REMINDER}]
            second = await self._complete(retry_messages)
            self._record(second)
            total = Completion(
                prompt_tokens=first.prompt_tokens + second.prompt_tokens,
                completion_tokens=first.completion_tokens + second.completion_tokens,
                latency_s=first.latency_s + second.latency_s, error=second.error,
                truncated=second.truncated if second.error is None else first.truncated,
            )
            reply = second.text if second.error is None else first.text
        if total.error is not None:
            return self._unscored(self.error_reason, f"coach call failed: {total.error}", total, reasked=reasked)
        parsed = self._parse(reply, total.truncated)
        if parsed.problem == "truncated":
            message = (f"the reply was cut at the length limit before its score line (raise the coach's max_tokens / "
                       f"max_new_tokens): {rationale_of(reply, 300)}")
            return self._unscored("truncated", message, total, reasked=reasked, score_lines=parsed.score_lines)
        if parsed.score is None:
            where = "its final line" if self.score_line == "last" else "its first line"
            message = (f"malformed reply (no valid PROCESS_SCORE line as {where}, even after a reminder): "
                       f"{rationale_of(reply, 300)}")
            return self._unscored("malformed", message, total, reasked=reasked, score_lines=parsed.score_lines)
        if self.cache:
            self.cache.put(key, {"model": self.model, "reply": reply})
        return self._verdict(reply, total, cached=False, reasked=reasked)

    def _record(self, completion: Completion) -> None:
        if completion.error is None:
            cost = call_cost(self.model, completion.prompt_tokens, completion.completion_tokens, self.prices)
            self.stats.record_call(prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                                   cost=cost, latency_s=completion.latency_s)

    def _parse(self, reply: str, truncated: bool = False) -> ParsedReply:
        return parse_reply(reply, truncated=truncated, position=self.score_line)

    def _verdict(self, reply: str, usage: Completion, *, cached: bool, reasked: bool) -> Verdict:
        parsed = self._parse(reply)
        return Verdict(parsed.score, rationale_of(reply), self.name,
                       {**self._details(usage, cached=cached, reasked=reasked), "score_lines": list(parsed.score_lines)})

    def _unscored(self, reason: str, message: str, usage: Completion, *, reasked: bool,
                  score_lines: tuple[str, ...] = ()) -> Verdict:
        self.stats.count("unscored", reason)
        return Verdict(None, message, self.name, {"unscored_reason": reason, "score_lines": list(score_lines),
                                                  **self._details(usage, cached=False, reasked=reasked)})

    def _details(self, usage: Completion, *, cached: bool, reasked: bool) -> dict[str, Any]:
        cost = 0.0 if cached else call_cost(self.model, usage.prompt_tokens, usage.completion_tokens, self.prices)
        return {"cached": cached, "reasked": reasked, "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens, "cost_usd": cost, "latency_s": round(usage.latency_s, 4)}

    # ------------------------------------------------------------------ event loop
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name=f"coach-{self.name}", daemon=True)
                self._thread.start()

                async def setup() -> None:
                    self._semaphore = asyncio.Semaphore(self.max_in_flight)
                    await self._open_backend()

                try:
                    asyncio.run_coroutine_threadsafe(setup(), loop).result()
                except BaseException:
                    loop.call_soon_threadsafe(loop.stop)
                    self._thread.join(timeout=10)
                    loop.close()
                    raise
                self._loop = loop
            return self._loop

    def __del__(self) -> None:
        # A finalizer must never block (it can run on any thread, inside any allocation): stop the loop
        # thread and return. Releasing the backend cleanly is close()'s job, called by whoever built us.
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # the loop closed meanwhile
                pass


def _default_cache_dir() -> Path:
    from mappa_env.paths import cache_root

    return cache_root() / "coach"


#: The options every chat-model coach takes, declared once by :class:`LLMCoach` (``coach_kwargs``).
SHARED_OPTIONS: tuple[str, ...] = tuple(
    accepted_parameters(LLMCoach.__init__, exclude=("self", "model", "name", "cache_params"))
)
