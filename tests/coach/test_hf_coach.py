"""HFCoach: a local transformers model as coach, batched; same parsing, re-ask, cache and counters as the API coach.

Plumbing runs on a randomly initialised one-layer chat model (conftest ``tiny_chat_model``): its replies
are noise, which is what the strict parser and the score-line constraint are tested against. The real
judge is SmolLM2-135M-Instruct in-process (``smollm2_dir``), coaching a whole dsbench-v0 episode.
"""

from __future__ import annotations

import asyncio

import pytest
from sample_requests import request

torch = pytest.importorskip("torch", reason="the hf: coach needs torch (installed by the README's test line)")
pytest.importorskip("transformers")

from mappa_env.coach import HFCoach, make_coach  # noqa: E402
from mappa_env.coach.constrain import generation_prompt_ids, score_line_sequence_bias  # noqa: E402
from mappa_env.evaluation import evaluate  # noqa: E402

# the tiny model reads characters: short evidence keeps its prompts near 2,000 tokens
SHORT = {"max_observation_chars": 200}


def distinct_requests(n: int):
    return [request(stdout=f"run {i}") for i in range(n)]


def score_all(coach, requests):
    async def gather():
        return await asyncio.gather(*(coach.ascore(r) for r in requests))

    return asyncio.run(gather())


@pytest.fixture
def tiny_coach(tiny_chat_model, tmp_path):
    coaches = []

    def build(**kwargs):
        options = {"cache_dir": tmp_path / "cache", "max_new_tokens": 24, **SHORT, **kwargs}
        coach = make_coach(f"hf:{tiny_chat_model}", **options)
        coaches.append(coach)
        return coach

    yield build
    for coach in coaches:
        coach.close()


def test_score_line_bias_is_keyed_on_the_reply_start_and_covers_0_to_10(tiny_chat_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    opening = generation_prompt_ids(tokenizer)
    assert tokenizer.decode(opening) == "<s>assistant: "
    entries = score_line_sequence_bias(tokenizer, strength=50.0)
    assert all(ids[: len(opening)] == opening and bias == 50.0 for ids, bias in entries)
    lines = {tokenizer.decode(ids[len(opening):]) for ids, _ in entries}
    assert {f"PROCESS_SCORE: {n}\n" for n in range(11)} <= lines  # every complete line is reachable
    assert "PROCESS_SCORE: 11" not in lines and "PROCESS_SCORE: 1" in lines  # "1" may go on to "10", nothing else


def test_forced_score_line_scores_noise_and_concurrent_requests_share_batches(tiny_coach):
    coach = tiny_coach(force_score_line=True, batch_size=4, batch_wait_s=0.2)
    assert isinstance(coach, HFCoach) and coach.name.startswith("hf:")
    verdicts = score_all(coach, distinct_requests(6))
    assert all(v.score is not None and 0 <= v.score <= 10 for v in verdicts)
    assert all(v.details["reasked"] is False and v.details["cost_usd"] == 0.0 for v in verdicts)
    assert sorted(coach.batch_sizes) == [2, 4]  # 6 requests at once: one full batch of 4, then the other 2
    stats = coach.stats.snapshot()
    assert stats["calls"] == 6 and stats["unscored"] == 0 and stats["cost_usd"] == 0.0
    # the line alone is 17-18 characters, one token each; the rest of the 24 is noise or an early end
    assert stats["prompt_tokens"] > 6 * 1000 and 6 * 17 <= stats["completion_tokens"] <= 6 * 24


def test_unconstrained_noise_cut_at_the_length_limit_is_unscored_as_truncated_never_given_a_number(tiny_coach):
    coach = tiny_coach()  # a random model writes noise until max_new_tokens: no end of turn, no score line
    verdicts = score_all(coach, distinct_requests(3))
    for verdict in verdicts:
        assert verdict.score is None and verdict.details["unscored_reason"] == "truncated"
        assert verdict.details["reasked"] is False and "cut at the length limit" in verdict.rationale
    stats = coach.stats.snapshot()  # not asked again: the same budget would cut the reply again
    assert stats["calls"] == 3 and stats["reasks"] == 0 and stats["unscored_by_reason"] == {"truncated": 3}


def test_parsed_replies_are_cached_and_served_without_generating(tiny_coach):
    first = tiny_coach(force_score_line=True).score(request())
    fresh = tiny_coach(force_score_line=True)  # a new coach, same cache directory
    second = fresh.score(request())
    assert second.score == first.score and second.details["cached"] is True
    assert fresh.batch_sizes == [] and fresh.stats.snapshot()["calls"] == 0
    other = tiny_coach(force_score_line=True, max_new_tokens=25)  # other generation parameters: other key
    assert other.score(request()).details["cached"] is False and other.batch_sizes == [1]


def test_a_failing_generation_leaves_the_batch_unscored_with_the_reason(tiny_coach, monkeypatch):
    coach = tiny_coach(force_score_line=True, cache_dir=None)

    def out_of_memory(**kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(coach.chat_model, "generate", out_of_memory)
    verdicts = score_all(coach, distinct_requests(2))
    for verdict in verdicts:
        assert verdict.score is None and verdict.details["unscored_reason"] == "generation_error"
        assert "RuntimeError: CUDA out of memory" in verdict.rationale
    assert coach.stats.snapshot()["unscored_by_reason"] == {"generation_error": 2}
    monkeypatch.undo()
    assert coach.score(request()).score is not None  # the generation thread survived the failure


def test_sampled_replies_come_from_the_coachs_seed_and_leave_the_global_random_state_alone(tiny_coach):
    """The coach generates in its own thread while a trainer samples in another: it must not use their generator."""
    coach = tiny_coach(temperature=1.0, seed=3, cache_dir=None)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    assert coach.score(request()).details["unscored_reason"] == "truncated"  # noise: a sampled generation ran
    assert torch.equal(torch.get_rng_state(), before)

    conversations = [[{"role": "user", "content": f"Rate run {i}."}] for i in range(2)]
    first = [c.text for c in coach._generate(conversations)]
    torch.manual_seed(12)  # whatever the global state, the coach's draws come from its seed
    assert [c.text for c in coach._generate(conversations)] == first
    assert [c.text for c in tiny_coach(temperature=1.0, seed=4, cache_dir=None)._generate(conversations)] != first
    assert [c.text for c in tiny_coach(cache_dir=None)._generate(conversations)] != first  # it does sample


def test_bad_hf_coach_options_and_paths_are_refused_clearly(tiny_chat_model, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        HFCoach(str(tiny_chat_model), batch_size=0)
    with pytest.raises(ValueError, match="cannot hold the forced score line .18 tokens"):
        HFCoach(str(tiny_chat_model), force_score_line=True, max_new_tokens=12, cache_dir=None)
    with pytest.raises(OSError, match="could not load the chat model"):
        make_coach(f"hf:{tmp_path / 'no-such-model'}")


@pytest.mark.llm_server
@pytest.mark.slow
def test_smollm2_coaches_a_dsbench_episode_in_process(smollm2_dir, tmp_path):
    coach_kwargs = {"cache_dir": tmp_path / "cache", "force_score_line": True, "max_new_tokens": 24,
                    "max_observation_chars": 1200}
    env_kwargs = {"coach": f"hf:{smollm2_dir}", "coach_kwargs": coach_kwargs}
    first = evaluate("buggy-missing-x-test", split="heldout", episodes=1, env_kwargs=env_kwargs, progress=False)
    coaching = first["summary"]["coach"]
    assert coaching["coaches"] == [f"hf:{smollm2_dir}"]
    assert coaching["actions"] == 6 and coaching["scored"] == 6 and coaching["cache_hits"] == 0
    assert coaching["prompt_tokens"] > 6 * 300 and coaching["cost_usd"] == 0.0

    second = evaluate("buggy-missing-x-test", split="heldout", episodes=1, env_kwargs=env_kwargs, progress=False)
    assert second["summary"]["coach"]["cache_hits"] == 6 and second["summary"]["coach"]["prompt_tokens"] == 0


def test_a_closed_coach_answers_with_the_reason_instead_of_waiting_forever(tiny_coach):
    coach = tiny_coach(force_score_line=True, cache_dir=None)
    assert coach.score(request()).score is not None
    coach.close()
    verdict = coach.score(request())  # an env reset after it closed the coach it built, say
    assert verdict.score is None and verdict.details["unscored_reason"] == "generation_error"
    assert "the coach was closed" in verdict.rationale
