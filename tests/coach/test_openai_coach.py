"""OpenAICoach: strict parsing, prompts, retries, re-asks, cache, cost, and faults as unscored data.

Faults come from a fault-injecting endpoint on loopback (fault_server.py); the happy path against a
real model server is in test_openai_coach_real_server.py.
"""

from __future__ import annotations

import threading

import pytest
from fault_server import FaultServer
from sample_requests import request

import mappa_env
from mappa_env.coach import OpenAICoach, make_coach
from mappa_env.coach.prompting import build_messages, parse_reply, parse_score, rationale_of
from mappa_env.evaluation import run_episode
from mappa_env.local_server import free_port
from mappa_env.policies import make_policy

def coach_for(server: FaultServer, tmp_path, **kwargs) -> OpenAICoach:
    options = dict(base_url=server.base_url, cache_dir=tmp_path / "cache", backoff_s=0.01, backoff_max_s=0.05)
    return OpenAICoach("tiny", **{**options, **kwargs})


#: Adversarial replies: (reply, truncated, position, expected score, expected problem).
ADVERSARIAL = [
    ("good work\nPROCESS_SCORE: 7", False, "last", 7.0, None),
    ("PROCESS_SCORE: 8.5", False, "last", 8.5, None),
    ("**PROCESS_SCORE:** 9/10", False, "last", 9.0, None),
    ("`PROCESS_SCORE: 7`", False, "last", 7.0, None),  # the backticked form the prompt itself shows
    ("analysis\n\n  PROCESS_SCORE: 6.  \n\n", False, "last", 6.0, None),  # trailing blank lines and a full stop
    ("first PROCESS_SCORE: 2\nthen\nPROCESS_SCORE: 6", False, "last", 6.0, None),
    ("process_score: 4", False, "last", 4.0, None),
    ("PROCESS_SCORE: 0", False, "last", 0.0, None),
    ("PROCESS_SCORE: 10/10", False, "last", 10.0, None),
    ("no score here", False, "last", None, "malformed"),
    ("", False, "last", None, "malformed"),
    ("PROCESS_SCORE: 11", False, "last", None, "malformed"),
    ("PROCESS_SCORE: -1", False, "last", None, "malformed"),
    ("PROCESS_SCORE: high", False, "last", None, "malformed"),
    ("PROCESS_SCORE: 3 or 4", False, "last", None, "malformed"),
    ("PROCESS_SCORE: 7/100", False, "last", None, "malformed"),
    ("PROCESS_SCORE: 8\nWait, the cap is 4. Final answer: 4", False, "last", None, "misplaced"),  # changed its mind
    ("PROCESS_SCORE: 9\nbecause the model is good", False, "last", None, "misplaced"),
    ("<think>PROCESS_SCORE: 9 ... But wait, the cap</think>\nThe cap applies.\nPROCESS_SCORE: 4", False, "last", 4.0, None),
    ("<think>draft PROCESS_SCORE: 9\nbut wait, the cap...", True, "last", None, "truncated"),  # cut inside thinking
    ("<think>PROCESS_SCORE: 9</think>", False, "last", None, "malformed"),  # a score only while thinking
    ("<think>\nlet me draft\nPROCESS_SCORE: 9", True, "last", None, "truncated"),  # cut while still thinking
    ("Long analysis that ran out of tokens before the", True, "last", None, "truncated"),
    ("analysis\nPROCESS_SCORE: 5", True, "last", 5.0, None),  # cut, but only after the score line
    ("PROCESS_SCORE: 3\nthe rationale follows", False, "first", 3.0, None),  # forced to open with it
    ("PROCESS_SCORE: 3\nthe rationale is cut", True, "first", 3.0, None),
    ("rationale first\nPROCESS_SCORE: 3", False, "first", None, "misplaced"),
    ("PROCESS_SCORE: 7\nPROCESS_SCORE: 2", False, "first", 7.0, None),
    ("Score: 7", False, "last", None, "malformed"),
]


def test_the_adversarial_table_has_at_least_25_replies():
    assert len(ADVERSARIAL) >= 25


@pytest.mark.parametrize("reply, truncated, position, score, problem", ADVERSARIAL)
def test_score_lines_are_read_strictly_where_the_rubric_puts_them(reply, truncated, position, score, problem):
    parsed = parse_reply(reply, truncated=truncated, position=position)
    assert (parsed.score, parsed.problem) == (score, problem)


def test_every_score_line_is_kept_and_a_revised_draft_stays_in_the_rationale():
    reply = "PROCESS_SCORE: 8 at first glance\nbut the cap is 4\nPROCESS_SCORE: 4"
    parsed = parse_reply(reply)
    assert parsed.score == 4.0 and parsed.score_lines == ("PROCESS_SCORE: 8 at first glance", "PROCESS_SCORE: 4")
    assert rationale_of(reply) == "PROCESS_SCORE: 8 at first glance\nbut the cap is 4"
    assert parse_score(reply) == 4.0


def test_prompt_carries_the_evidence_and_can_be_overridden(tmp_path):
    system, user = build_messages(request())
    assert "ANALYST" in system["content"] and "PROCESS_SCORE" in system["content"]
    evidence = user["content"]
    for fact in ("Predict species.", "X_test.pkl", "FileNotFoundError", "data_engineer action 1", "(not known yet)",
                 "data_engineer: reads train.csv, test.csv; must save X_train.pkl"):
        assert fact in evidence
    long_prompt = build_messages(request(observation="a" * 5000 + "END"), max_observation_chars=300)[1]["content"]
    assert "characters truncated" in long_prompt and "END" in long_prompt
    # the tool output is shown as the environment cut it (its max_output_chars): never cut a second time
    whole = build_messages(request(stdout="b" * 9000 + "END"), max_observation_chars=300)[1]["content"]
    assert "b" * 9000 + "END" in whole
    custom = tmp_path / "prompts" / "dsbench-v0"
    custom.mkdir(parents=True)
    (custom / "analyst.md").write_text("Custom rubric. PROCESS_SCORE: <0-10>")
    assert build_messages(request(), prompt_dir=tmp_path / "prompts")[0]["content"] == "Custom rubric. PROCESS_SCORE: <0-10>"
    # roles without a file of their own fall back to the packaged prompts
    assert "MODELER" in build_messages(request(role="modeler"), prompt_dir=tmp_path / "prompts")[0]["content"]


def test_score_cache_and_cost(tmp_path):
    with FaultServer(default="score:7") as server:
        coach = coach_for(server, tmp_path, prices={"tiny": (1.0, 2.0)})
        first = coach.score(request())
        second = coach.score(request())
        coach.close()
    assert first.score == 7.0 and first.rationale == "Analysis: ok." and first.coach == "openai:tiny"
    assert first.details["cost_usd"] == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)
    assert second.score == 7.0 and second.details["cached"] is True and second.details["cost_usd"] == 0.0
    assert len(server.requests) == 1
    stats = coach.stats.snapshot()
    assert (stats["calls"], stats["cache_hits"], stats["prompt_tokens"]) == (1, 1, 100)
    assert server.requests[0]["temperature"] == 0.0


def test_unknown_price_is_reported_unknown_not_zero(tmp_path):
    with FaultServer(default="score:7") as server:
        coach = coach_for(server, tmp_path, cache_dir=None)
        verdict = coach.score(request())
        coach.close()
    assert verdict.details["cost_usd"] is None and coach.stats.snapshot()["cost_usd"] is None


@pytest.mark.parametrize("fault", ["429", "500", "503", "drop", "timeout"])
def test_retryable_faults_are_retried(tmp_path, fault):
    with FaultServer(default="score:6", timeout_sleep_s=3) as server:
        server.script.extend([fault, fault])
        coach = coach_for(server, tmp_path, timeout_s=1)
        verdict = coach.score(request())
        coach.close()
    assert verdict.score == 6.0
    assert coach.stats.snapshot()["retries"] == 2


def test_persistent_failure_leaves_the_action_unscored_and_counted(tmp_path):
    with FaultServer(default="500") as server:
        coach = coach_for(server, tmp_path, max_retries=2)
        verdict = coach.score(request())
        coach.close()
    assert verdict.score is None and "gave up after 2 retries" in verdict.rationale
    assert verdict.details["unscored_reason"] == "api_error"
    assert len(server.requests) == 3
    assert coach.stats.snapshot()["unscored_by_reason"] == {"api_error": 1}


def test_client_errors_are_not_retried(tmp_path):
    with FaultServer(default="400") as server:
        coach = coach_for(server, tmp_path)
        verdict = coach.score(request())
        coach.close()
    assert verdict.score is None and "HTTP 400" in verdict.rationale and len(server.requests) == 1


def test_malformed_reply_is_asked_again_once(tmp_path):
    with FaultServer(default="score:4") as server:
        server.script.append("malformed")
        coach = coach_for(server, tmp_path)
        verdict = coach.score(request())
        coach.close()
    assert verdict.score == 4.0 and verdict.details["reasked"] is True
    reminder = server.requests[1]["messages"]
    assert reminder[-2]["role"] == "assistant" and "PROCESS_SCORE" in reminder[-1]["content"]


def test_malformed_twice_is_unscored_and_not_cached(tmp_path):
    with FaultServer(default="malformed") as server:
        coach = coach_for(server, tmp_path)
        first = coach.score(request())
        second = coach.score(request())  # not served from cache: asked again
        coach.close()
    assert first.score is None and first.details["unscored_reason"] == "malformed"
    assert second.score is None and len(server.requests) == 4
    assert coach.stats.snapshot()["unscored_by_reason"] == {"malformed": 2}


def test_connection_refused_is_unscored(tmp_path):
    port = free_port()  # a port nobody listens on
    coach = OpenAICoach("tiny", base_url=f"http://127.0.0.1:{port}/v1", cache_dir=None, max_retries=1, backoff_s=0.01)
    verdict = coach.score(request())
    coach.close()
    assert verdict.score is None and "APIConnectionError" in verdict.rationale


@pytest.mark.parametrize("limit", [2, 6])
def test_calls_in_flight_are_bounded_across_threads(tmp_path, limit):
    with FaultServer(default="timeout", timeout_sleep_s=0.5) as server:
        coach = coach_for(server, tmp_path, max_in_flight=limit, cache_dir=None)
        threads = [threading.Thread(target=coach.score, args=(request(action_index=i),)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        coach.close()
    assert len(server.requests) == 6 and coach.stats.snapshot()["calls"] == 6
    assert server.peak_active == limit  # never more than the limit at once, and the limit is used


def test_an_episode_under_faults_never_crashes_and_never_invents_a_score(tmp_path):
    with FaultServer(default="score:7") as server:
        server.script.extend(["500", "500", "500", "malformed", "malformed", "429"])
        env = mappa_env.make("dsbench-v0", split="heldout", coach="openai:tiny",
                             coach_kwargs={"base_url": server.base_url, "cache_dir": None, "max_retries": 2,
                                           "backoff_s": 0.01, "backoff_max_s": 0.02})
        try:
            result = run_episode(env, make_policy("scripted"), seed=0)
        finally:
            env.close()
    assert result["outcome"]["valid"]
    scores = [s for a in result["agents"].values() for s in a["scores"]]
    rewards = [r for a in result["agents"].values() for r in a["step_rewards"]]
    assert scores.count(None) == 2 and rewards.count(None) == 2  # api_error (3 × 500) and malformed twice
    assert all(s == 7.0 for s in scores if s is not None)
    unscored = [s["verdict"] for a in result["agents"].values() for s in a["steps"] if s["verdict"]["score"] is None]
    assert sorted(v["unscored_reason"] for v in unscored) == ["api_error", "malformed"]


def test_make_coach_builds_openai_coaches_and_auto_picks_them(tmp_path, monkeypatch):
    coach = make_coach("openai:tiny", base_url="http://127.0.0.1:9/v1", cache_dir=None, max_in_flight=3)
    assert isinstance(coach, OpenAICoach) and coach.max_in_flight == 3 and coach.api_key == "not-needed"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        make_coach("openai:gpt-4.1-mini")
    assert make_coach("auto").name == "receipts"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("MAPPA_COACH_MODEL", "tiny")
    assert make_coach("auto", cache_dir=None).name == "openai:tiny"


def test_extra_body_reaches_the_server_and_keys_the_cache(tmp_path):
    with FaultServer(default="score:5") as server:
        plain = coach_for(server, tmp_path)
        guided = coach_for(server, tmp_path, extra_body={"guided_regex": r"PROCESS_SCORE: \d+"})
        plain.score(request())
        guided.score(request())  # same prompt, different request: not served from the plain coach's cache
        plain.close()
        guided.close()
    assert "guided_regex" not in server.requests[0]
    assert server.requests[1]["guided_regex"] == r"PROCESS_SCORE: \d+"
    assert guided.stats.snapshot()["cache_hits"] == 0


def test_an_env_closes_the_coach_it_built_and_leaves_a_given_one_open():
    import mappa_env

    options = {"base_url": "http://127.0.0.1:9/v1", "cache_dir": None}
    env = mappa_env.make("dsbench-v0", split="heldout", coach="openai:judge", coach_kwargs=options)
    built = env.unwrapped.coach
    built._ensure_loop()  # what the first scored action does
    env.close()
    assert built._loop is None and not built._thread.is_alive()

    given = OpenAICoach("judge", **options)
    given._ensure_loop()
    env = mappa_env.make("dsbench-v0", split="heldout", coach=given)
    env.close()
    assert given._loop is not None and given._thread.is_alive()  # its owner closes it
    given.close()
    assert given._loop is None


def test_the_finalizer_stops_the_loop_without_waiting_for_the_backend():
    class SlowToClose(OpenAICoach):
        closed_backend = False

        async def _close_backend(self):  # close() waits for this; a finalizer must not
            type(self).closed_backend = True

    coach = SlowToClose("judge", base_url="http://127.0.0.1:9/v1", cache_dir=None)
    coach._ensure_loop()
    thread = coach._thread
    coach.__del__()
    thread.join(timeout=30)
    assert not thread.is_alive() and SlowToClose.closed_backend is False


def test_a_reply_cut_before_its_score_line_is_unscored_as_truncated_and_not_reasked():
    from mappa_env.coach.llm import Completion, LLMCoach

    class Scripted(LLMCoach):
        def __init__(self, replies, **options):
            super().__init__("scripted", name="scripted", cache_dir=None, **options)
            self.replies, self.asked = list(replies), 0

        async def _complete(self, messages):
            self.asked += 1
            return self.replies.pop(0)

    cut = Scripted([Completion(text="<think>PROCESS_SCORE: 9 but wait, the cap", truncated=True)])
    verdict = cut.score(request())
    assert verdict.score is None and verdict.details["unscored_reason"] == "truncated" and cut.asked == 1
    assert "raise the coach's max_tokens" in verdict.rationale
    revised = Scripted([Completion(text="PROCESS_SCORE: 8\nWait, cap is 4. Final answer: 4"),
                        Completion(text="The cap is 4.\nPROCESS_SCORE: 4")])
    verdict = revised.score(request())  # the score line not last: asked again, and the second reply counts
    assert verdict.score == 4.0 and verdict.details["reasked"] is True and revised.asked == 2
    assert verdict.details["score_lines"] == ["PROCESS_SCORE: 4"]
    for coach in (cut, revised):
        coach.close()


def test_the_token_limit_goes_out_under_the_field_the_endpoint_wants():
    assert OpenAICoach("o3", api_key="k", token_limit_param="max_completion_tokens").params == {
        "temperature": 0.0, "max_completion_tokens": 1024}
    with pytest.raises(ValueError, match="token_limit_param must be"):
        OpenAICoach("o3", api_key="k", token_limit_param="max_output_tokens")


def test_a_hindsight_prompt_shows_what_happened_after_the_action():
    from mappa_env.records import StepRecord

    engineer = StepRecord(agent="data_engineer", action_index=0, action="", status="ok", files_changed=("X_train.pkl",))
    analyst = StepRecord(agent="analyst", action_index=0, action="", status="error",
                         error="FileNotFoundError: [Errno 2] No such file or directory: 'X_test.pkl'")
    hindsight = request(role="data_engineer", upstream=(), trajectory=(engineer, analyst))
    evidence = build_messages(hindsight)[1]["content"]
    later = evidence.split("# What happened after this action")[1].split("#")[0]
    assert "- analyst action 1: status error; changed nothing; error: FileNotFoundError" in later
    assert "data_engineer action 1" not in later  # the action itself is not its own aftermath
    online = build_messages(request())[1]["content"]
    assert "(not known yet: this action is judged as it happens)" in online
