"""The step record is written once and never changed: the contract between env, coach, evaluation and re-coaching."""

from __future__ import annotations

import dataclasses
import json

import pytest
from episode_helpers import code, play

import mappa_env
from mappa_env.coach import SyncCoach, Verdict
from mappa_env.coach.offline import load_episodes
from mappa_env.evaluation import run_episode
from mappa_env.policies import make_policy
from mappa_env.records import RECORDS_FORMAT_VERSION, StepRecord, requests_from_json, requests_to_json

#: the keys of infos[agent]["step"], exactly as docs/environment.md's table lists them
DOCUMENTED_STEP_KEYS = {"agent", "action_index", "action", "code", "num_code_blocks", "stdout", "stderr", "error", "status",
                        "state_lost", "duration_s", "files_changed", "workspace", "ends_stage", "result", "findings", "verdict"}


class Recording(SyncCoach):
    name = "recording"

    def __init__(self):
        self.requests = []

    def score(self, request):
        self.requests.append(request)
        return Verdict(7.0, "fine", self.name)


def test_the_info_mapping_has_exactly_the_documented_keys_and_is_a_fresh_copy():
    record = StepRecord(agent="modeler", action_index=1, action="hi", files_changed=("a",), workspace_after={"a": 3},
                        verdict=Verdict(5.0, "ok", "c", {"rule": "x"}))
    info = record.to_info()
    assert set(info) == DOCUMENTED_STEP_KEYS
    assert info["verdict"] == {"rule": "x", "score": 5.0, "rationale": "ok", "coach": "c"}
    info["files_changed"].append("b")
    info["workspace"]["b"] = 1
    assert record.files_changed == ("a",) and dict(record.workspace_after) == {"a": 3}


def test_a_record_cannot_be_changed_and_a_new_verdict_makes_a_new_record():
    record = StepRecord(agent="modeler", action_index=0, action="hi", workspace_after={"a": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = "ok"
    with pytest.raises(TypeError):
        record.workspace_after["b"] = 1
    judged = record.with_verdict(Verdict(3.0, "meh", "c"))
    assert record.verdict is None and judged.verdict.score == 3.0 and judged.action == "hi"
    assert StepRecord.from_dict(json.loads(json.dumps(judged.to_dict()))) == judged


def test_coach_requests_hold_the_engines_records_by_reference_and_round_trip_through_json():
    coach = Recording()
    env = mappa_env.make("dsbench-v0", split="heldout", coach=coach)
    try:
        play(env, {"data_engineer": [code("print('x' * 10)"), "done"], "modeler": ["done"], "analyst": ["done"]})
        records = env.unwrapped.step_records()
        requests = env.unwrapped.coach_requests()
    finally:
        env.close()
    assert [(r.agent, r.action_index) for r in records] == [("data_engineer", 0), ("data_engineer", 1), ("modeler", 0),
                                                           ("analyst", 0)]
    modeler, analyst = requests[2], requests[3]
    assert modeler.upstream[0] is records[0] and modeler.upstream[1] is records[1]  # not copies
    assert [r.agent for r in analyst.upstream] == ["data_engineer", "data_engineer", "modeler"]
    assert requests[0].step.stdout == "x" * 10 + "\n" and requests[0].step.verdict is None
    stored = json.loads(json.dumps(requests_to_json(requests, records)))
    assert all(isinstance(r["step"], int) and "action" not in r for r in stored)  # each action's text stored once
    again = requests_from_json(stored, [r.to_dict() for r in records])
    assert again == requests


def test_recorded_episodes_carry_a_format_version_and_old_files_are_refused(tmp_path):
    env = mappa_env.make("dsbench-v0", split="heldout")
    try:
        episode = run_episode(env, make_policy("silent"), seed=0, record_requests=True)
    finally:
        env.close()
    assert episode["format_version"] == RECORDS_FORMAT_VERSION
    assert len(episode["records"]) == len(episode["coach_requests"]) == 3
    path = tmp_path / "new.json"
    path.write_text(json.dumps({"episodes": [episode]}))
    assert load_episodes(path)[0]["records"] == episode["records"]
    old = {k: v for k, v in episode.items() if k not in ("format_version", "records")}
    old["coach_requests"] = [{"role": "analyst", "action": "done"}]  # format 1: flat copies of every field
    path.write_text(json.dumps({"episodes": [old]}))
    with pytest.raises(ValueError, match=r"episode format 1; this release reads format 2.*evaluate"):
        load_episodes(path)


def test_records_pickle_and_deep_copy_as_they_are():
    import copy
    import pickle

    record = StepRecord(agent="modeler", action_index=0, action="hi", workspace_after={"a": 3},
                        verdict=Verdict(5.0, "ok", "c", {"rule": "x"}))
    assert pickle.loads(pickle.dumps(record)) == record and copy.deepcopy(record) == record


def test_a_status_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="step status must be one of"):
        StepRecord(agent="modeler", action_index=0, action="hi", status="crashed")
