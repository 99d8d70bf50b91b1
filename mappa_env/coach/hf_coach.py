"""``HFCoach``: a local transformers chat model as coach, generating for many actions in one batch.

``coach="hf:<path-or-id>"`` loads the model once (a directory, a hub id already in the local cache, or a
``.gguf`` file). Requests from every thread and event loop that use the coach meet in one queue; a
generation thread takes whatever is waiting (up to ``batch_size``, after at most ``batch_wait_s`` for
more to arrive) and answers it with one left-padded ``generate`` call. Coaching many episodes at once,
or re-coaching recorded ones (:func:`mappa_env.coach.offline.recoach`), therefore runs in batches.

Prompting, strict parsing, the re-ask, the cache and the counters are
:class:`~mappa_env.coach.llm.LLMCoach`'s, exactly as for the API coach. A generation that raises (out
of memory, a prompt longer than the model's context) leaves the action unscored with reason
``generation_error``. A local model has no per-token bill: its calls cost $0.

Small models rarely write the score line on their own; ``force_score_line=True`` makes every reply open
with it (:mod:`mappa_env.coach.constrain`), at some cost to judgement since the score then comes first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from typing import Any

from mappa_env.coach.constrain import DEFAULT_STRENGTH, generation_prompt_ids, score_line_sequence_bias
from mappa_env.coach.llm import Completion, LLMCoach

_STOP = object()


class HFCoach(LLMCoach):
    """Scores actions with a local transformers chat model, batching concurrent requests.

    Args:
        path: model directory, hub id in the local cache, or ``.gguf`` file.
        gguf_file: GGUF file name inside ``path`` (alternative to a ``.gguf`` path).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        dtype: ``"float32"``, ``"bfloat16"``, ... (default: the checkpoint's).
        max_new_tokens: cap on each reply.
        temperature: 0 (default) decodes greedily: reproducible, cacheable judgements.
        batch_size: most requests answered by one ``generate`` call; also the default ``max_in_flight``.
        batch_wait_s: how long the first request of a batch waits for others to join it.
        force_score_line: bias decoding so every reply opens with ``PROCESS_SCORE: <0-10>``.
        seed: seed of each sampled batch (``temperature > 0``): the batch draws from a generator of its own
            seeded with it, never from torch's global one, which belongs to the process that hosts the coach.
        **options: ``max_in_flight`` (default: ``batch_size``), ``cache_dir``, ``timing``, ``prices``,
            ``prompt_dir``, ``max_observation_chars``: see :class:`~mappa_env.coach.llm.LLMCoach`.
    """

    error_reason = "generation_error"

    def __init__(
        self,
        path: str,
        *,
        gguf_file: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_new_tokens: int = 400,
        temperature: float = 0.0,
        batch_size: int = 8,
        batch_wait_s: float = 0.01,
        force_score_line: bool = False,
        seed: int = 0,
        **options: Any,
    ):
        if not path:
            raise ValueError("HFCoach needs a model, e.g. coach='hf:/path/to/model' or coach='hf:/path/model.gguf'")
        if batch_size < 1 or max_new_tokens < 1 or temperature < 0 or batch_wait_s < 0:
            raise ValueError("batch_size and max_new_tokens must be >= 1, temperature and batch_wait_s >= 0")
        from mappa_env.hf_models import load_chat_model

        generation = {"max_new_tokens": max_new_tokens, "temperature": temperature, "force_score_line": force_score_line}
        options.setdefault("max_in_flight", batch_size)
        if force_score_line:  # the forced line opens the reply: that is where the score is read
            options.setdefault("score_line", "first")
        options["prices"] = {path: (0.0, 0.0), **dict(options.get("prices") or {})}  # a local model bills nothing
        super().__init__(path, name=f"hf:{path}", cache_params=generation, **options)
        self.tokenizer, self.chat_model = load_chat_model(path, gguf_file=gguf_file, device=device, dtype=dtype, what="hf: coaches")
        self.tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.seed = seed
        self.sequence_bias = score_line_sequence_bias(self.tokenizer, strength=DEFAULT_STRENGTH) if force_score_line else None
        if self.sequence_bias is not None:
            opening = len(generation_prompt_ids(self.tokenizer))
            line_tokens = max(len(ids) for ids, _ in self.sequence_bias) - opening
            if max_new_tokens < line_tokens:
                raise ValueError(
                    f"max_new_tokens={max_new_tokens} cannot hold the forced score line ({line_tokens} tokens for this "
                    f"tokenizer): raise it to at least {line_tokens}, more to leave room for a rationale"
                )
        #: size of every batch generated so far (for logging and tests)
        self.batch_sizes: list[int] = []
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._generate_forever, name=f"{self.name}-generate", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ LLMCoach hooks
    async def _complete(self, messages: list[dict[str, str]]) -> Completion:
        if not self._worker.is_alive():  # closed: nobody would ever answer the queue
            return Completion(error="the coach was closed (its generation thread has stopped); make a new one")
        async with self._semaphore:
            future: concurrent.futures.Future = concurrent.futures.Future()
            self._queue.put((messages, future))
            return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the generation thread (after the batch in progress) and the event loop. Idempotent."""
        super().close()
        if self._worker.is_alive():
            self._queue.put(_STOP)
            self._worker.join(timeout=60)

    # ------------------------------------------------------------------ generation thread
    def _generate_forever(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            stop = False
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._answer(batch)
            if stop:
                return

    def _answer(self, batch: list[tuple[list[dict[str, str]], concurrent.futures.Future]]) -> None:
        started = time.perf_counter()
        try:
            completions = self._generate([messages for messages, _ in batch])
        except Exception as exc:  # noqa: BLE001 - any generation failure is this batch's verdict, not a crash
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            completions = [Completion(latency_s=time.perf_counter() - started, error=error)] * len(batch)
        self.batch_sizes.append(len(batch))
        for (_, future), completion in zip(batch, completions):
            future.set_result(completion)

    def _generate(self, conversations: list[list[dict[str, str]]]) -> list[Completion]:
        import torch

        started = time.perf_counter()
        inputs = self.tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True,
        ).to(self.chat_model.device)
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                                   "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if self.temperature > 0:  # sampled, but by our own generator: what generate sees is a greedy choice
            options["logits_processor"] = _seeded_sampling(self.temperature, self.seed)
        if self.sequence_bias is not None:
            options["sequence_bias"] = self.sequence_bias
        with torch.no_grad():
            output = self.chat_model.generate(**inputs, **options)
        prompt_width = inputs["input_ids"].shape[1]
        latency = time.perf_counter() - started
        completions = []
        for row, new_tokens in enumerate(output[:, prompt_width:].tolist()):
            length = _length_until(new_tokens, {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id})
            completions.append(Completion(
                text=self.tokenizer.decode(new_tokens[:length], skip_special_tokens=True),
                truncated=length == self.max_new_tokens,  # no end of turn before the limit
                prompt_tokens=int(inputs["attention_mask"][row].sum()), completion_tokens=length, latency_s=latency,
            ))
        return completions


def _seeded_sampling(temperature: float, seed: int) -> Any:
    """Logits processors: one that samples each next token at ``temperature`` from its own ``torch.Generator``.

    transformers' sampling draws from torch's global generator, shared with whatever else runs in the
    process (a trainer sampling its policies in another thread while this coach's thread generates):
    reseeding or even forking it here would move their random stream, and theirs ours. So the draw is
    made here, from a generator seeded with ``seed``, and every other token is ruled out: ``generate``
    then decodes greedily what was sampled. It samples the model's distribution at ``temperature``
    (after ``sequence_bias``), without the checkpoint's top-k or top-p.
    """
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class SeededSampling(LogitsProcessor):
        generator: torch.Generator | None = None

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if self.generator is None:  # made on the device the logits come out on
                self.generator = torch.Generator(device=scores.device).manual_seed(seed)
            probabilities = torch.softmax(scores.float() / temperature, dim=-1)
            chosen = torch.multinomial(probabilities, 1, generator=self.generator)
            return torch.full_like(scores, float("-inf")).scatter_(1, chosen, 0.0)

    return LogitsProcessorList([SeededSampling()])


def _length_until(tokens: list[int], stops: set[int | None]) -> int:
    """Tokens generated before the first end-of-turn (or padding), which is what the reply is."""
    for index, token in enumerate(tokens):
        if token in stops:
            return index
    return len(tokens)
