"""OpenAICoach against a real OpenAI-compatible server (SmolLM2-135M via `transformers serve`, see conftest).

What is checked is the plumbing: every action of a real episode is judged through the real server, the
reply is parsed strictly, tokens are counted, and a reply is cached only when it parsed. Left to itself
the 135M model almost never writes a valid `PROCESS_SCORE:` line (measured: 0 of 6 actions, even after
the re-ask), so its actions come back unscored with the reason `malformed` (or `truncated`, when cut at
the length limit), never with an invented
number. With constrained decoding (`LLMServer.score_line_body`) every action gets a score, and a second
identical evaluation is answered from the cache alone.
"""

from __future__ import annotations

import pytest

import mappa_env
from mappa_env.coach import OpenAICoach
from mappa_env.evaluation import evaluate, run_episode
from mappa_env.policies import make_policy
from mappa_env.records import requests_from_json

pytestmark = pytest.mark.llm_server


def coach_kwargs(llm_server, cache_dir):
    # short evidence and replies keep the CPU server at a few seconds per call
    return {"base_url": llm_server.base_url, "cache_dir": cache_dir, "max_tokens": 24,
            "max_observation_chars": 1200, "max_in_flight": 2}


@pytest.fixture(scope="module")
def recorded_requests():
    """The coach requests of one episode of the faulty team (recorded with the fast receipts coach)."""
    env = mappa_env.make("dsbench-v0", split="heldout")
    try:
        result = run_episode(env, make_policy("buggy-missing-x-test"), seed=0, record_requests=True)
    finally:
        env.close()
    return requests_from_json(result["coach_requests"], result["records"])


def test_unconstrained_replies_are_parsed_strictly_and_only_parsed_ones_cached(llm_server, recorded_requests, tmp_path):
    coach = OpenAICoach(llm_server.model, **coach_kwargs(llm_server, tmp_path / "cache"))
    try:
        picks = [recorded_requests[0], recorded_requests[-1]]  # the data engineer's first action, the analyst's crash
        verdicts = [coach.score(r) for r in picks]
        stats = coach.stats.snapshot()
        for verdict in verdicts:
            assert verdict.coach == f"openai:{llm_server.model}"
            assert verdict.details["prompt_tokens"] > 0  # the server really answered this action
            if verdict.score is None:  # malformed only after the re-ask; a first reply cut short is not re-asked
                reason = verdict.details["unscored_reason"]
                assert reason in ("malformed", "truncated")
                assert verdict.details["reasked"] is True or reason == "truncated"
            else:
                assert 0 <= verdict.score <= 10
        unscored = [v.details["unscored_reason"] for v in verdicts if v.score is None]
        assert stats["calls"] == 2 + stats["reasks"] and stats["unscored"] == len(unscored)
        assert stats["unscored_by_reason"] == {r: unscored.count(r) for r in set(unscored)}

        # the same request again: served from the cache only if the first reply parsed
        again = coach.score(picks[0])
        after = coach.stats.snapshot()
    finally:
        coach.close()
    assert again.score == verdicts[0].score
    if verdicts[0].score is not None:
        assert after["cache_hits"] == stats["cache_hits"] + 1 and after["calls"] == stats["calls"]
    else:
        assert after["cache_hits"] == stats["cache_hits"] and after["calls"] == stats["calls"] + 2


def test_constrained_coach_scores_every_action_and_a_repeat_evaluation_makes_no_calls(llm_server, tmp_path):
    if llm_server.score_line_body is None:
        pytest.skip("MAPPA_TEST_LLM_EXTRA_BODY is not set for this external server: it cannot be constrained")
    # constrained to open with the score line: that is where it is read
    options = {**coach_kwargs(llm_server, tmp_path / "cache"), "extra_body": llm_server.score_line_body, "score_line": "first"}
    env_kwargs = {"coach": f"openai:{llm_server.model}", "coach_kwargs": options}

    def one_evaluation():
        return evaluate("buggy-missing-x-test", split="heldout", episodes=1, env_kwargs=env_kwargs, progress=False)

    first = one_evaluation()
    coaching = first["summary"]["coach"]
    assert coaching["actions"] == 6 and coaching["scored"] == 6 and coaching["unscored"] == 0
    assert coaching["cache_hits"] == 0 and coaching["prompt_tokens"] > 0
    verdicts = [s["verdict"] for a in first["episodes"][0]["agents"].values() for s in a["steps"]]
    assert all(0 <= v["score"] <= 10 and v["reasked"] is False for v in verdicts)

    second = one_evaluation()
    again = second["summary"]["coach"]
    assert again["actions"] == 6 and again["cache_hits"] == 6  # every verdict came from the cache
    assert again["prompt_tokens"] == 0 and again["completion_tokens"] == 0 and again["cost_usd"] == 0.0
    scores = lambda result: [s["verdict"]["score"] for a in result["episodes"][0]["agents"].values() for s in a["steps"]]  # noqa: E731
    assert scores(second) == scores(first)
