"""The trainer's episode files: what the update got per action, and only the newest steps kept."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")

from mappa_env.viewer import read_collection  # noqa: E402
from mappa_train import episode_files  # noqa: E402
from mappa_train.rollout import ActionSample, EpisodeResult  # noqa: E402


def episode(step_reward, *, lost=False):
    step = {"action": "```python\nprint(1)\n```", "code": "print(1)", "stdout": "1\n" * 5000, "status": "ok",
            "duration_s": 0.25, "files_changed": ["X_train.pkl"],
            "verdict": {"score": None, "rationale": "the coach timed out", "coach": "openai:judge",
                        "unscored_reason": "timeout"}}
    samples = [] if lost else [ActionSample(agent="data_engineer", episode=0, task_id="t1", task_type="regression",
                                            action_index=0, generation=None, reward=step_reward, step=step)]
    return EpisodeResult(episode=0, task_id="t1", task_type="regression", seed=7, lost=lost, samples=samples,
                         outcome={"valid": False, "reason": "worker lost" if lost else "no submission", "metrics": {}})


def test_each_step_keeps_what_the_update_got_and_only_the_newest_steps_stay(tmp_path):
    for step in range(1, 5):
        episode_files.record_step(tmp_path, [episode(None), episode(None, lost=True)], step=step, keep=2, env_id="dsbench-v0")
    episode_files.record_evaluation(tmp_path, [episode(0.4)], label="before", step=0, env_id="dsbench-v0")
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == [
        "eval-step-000000.json", "step-000003.json", "step-000004.json"]  # evaluations are all kept
    episodes = read_collection(tmp_path).episodes
    assert [(e["label"], e["lost"]) for e in episodes] == [("before", False), ("step 3", False), ("step 3", True),
                                                           ("step 4", False), ("step 4", True)]
    action = episodes[1]["actions"][0]
    assert action["reward"] is None and action["verdict"] == {"score": None, "rationale": "the coach timed out",
                                                              "coach": "openai:judge", "unscored_reason": "timeout"}
    assert (action["agent"], action["index"], action["files_changed"]) == ("data_engineer", 0, ["X_train.pkl"])
    assert len(action["stdout"]) < 5000 and "characters cut" in action["stdout"]  # the file stays bounded
    assert episodes[0]["actions"][0]["reward"] == 0.4
    assert episode_files.write_run_page(tmp_path) == tmp_path / "episodes.html"
    assert episode_files.write_run_page(tmp_path / "elsewhere") is None  # no episode file: no page
