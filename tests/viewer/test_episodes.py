"""Reading what the viewer shows: evaluation results of both teams, directories, training runs, and bad inputs."""

from __future__ import annotations

import json
import re

import pytest

from mappa_env.__main__ import main
from mappa_env.viewer import ViewError, episode_entry, read_collection, write_episode_file
from mappa_env.viewer.episodes import EPISODE_FILE_TEXT_LIMIT, action_entry, old_step_files
from mappa_env.viewer.page import page_html


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def page_data(html):
    """The episodes the page carries (its JSON block, parsed as the browser parses it)."""
    block = re.search(r'<script type="application/json" id="episodes-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


@pytest.mark.parametrize("name, agents", [("eval-dsbench.json", ["data_engineer", "modeler", "analyst"]),
                                          ("eval-math.json", ["problem_solver", "code_executor", "verifier"])])
def test_each_teams_results_become_timelines_in_the_order_played_with_verdicts_and_rewards(results_dir, name, agents):
    results = load(results_dir / name)
    episodes = read_collection(results_dir / name).episodes
    assert [e["task_id"] for e in episodes] == [e["task_id"] for e in results["episodes"]]
    for episode, recorded in zip(episodes, results["episodes"]):
        assert [(a["agent"], a["index"]) for a in episode["actions"]] == \
            [(r["agent"], r["action_index"]) for r in recorded["records"]]  # the order they were taken
        assert [a["agent"] for a in episode["actions"] if a["index"] == 0] == agents
        for agent in agents:
            mine = [a for a in episode["actions"] if a["agent"] == agent]
            steps = recorded["agents"][agent]["steps"]
            assert [a["reward"] for a in mine] == recorded["agents"][agent]["step_rewards"]
            assert [a["reply"] for a in mine] == [s["action"] for s in steps]
            assert [a["stdout"] for a in mine] == [s["stdout"] for s in steps]
            assert [a["verdict"]["rationale"] for a in mine] == [s["verdict"]["rationale"] for s in steps]
        assert episode["outcome"]["valid"] == recorded["outcome"]["valid"]
        assert episode["label"] == results["policy"] and episode["source"] == name


def test_the_fault_and_the_blame_reach_the_page(results_dir):
    episode = read_collection(results_dir / "eval-dsbench.json").episodes[0]
    analyst = [a for a in episode["actions"] if a["agent"] == "analyst"]
    assert any(a["status"] == "error" and "X_test.pkl" in a["stderr"] + a["error"] for a in analyst)
    engineer = [a for a in episode["actions"] if a["agent"] == "data_engineer"]
    assert min(a["verdict"]["score"] for a in engineer) < max(a["verdict"]["score"] for a in analyst)
    assert all(a["verdict"]["coach"] == "receipts" for a in episode["actions"])


def test_a_directory_of_results_and_the_command_line_write_one_page_with_every_episode(results_dir, capsys):
    collection = read_collection(results_dir)
    assert sorted({e["source"] for e in collection.episodes}) == ["eval-dsbench.json", "eval-math.json"]
    assert len(collection.episodes) == 4
    assert main(["view", str(results_dir)]) == 0
    assert "4 episodes" in capsys.readouterr().out
    page = (results_dir / "episodes.html").read_text(encoding="utf-8")
    assert page_data(page)["episodes"] == json.loads(json.dumps(collection.episodes))  # the data as read, whole
    assert not re.search(r"https?://", page)  # nothing to fetch: no CDN, no font, no script from elsewhere
    out = results_dir / "math.html"
    assert main(["view", str(results_dir / "eval-math.json"), "--output", str(out)]) == 0
    assert len(page_data(out.read_text(encoding="utf-8"))["episodes"]) == 2


def test_untrusted_text_cannot_end_the_data_block_or_add_markup():
    hostile = '</script><script>alert(1)</script><img src=x onerror="alert(2)"> &amp; \u2028'
    action = action_entry({"agent": "modeler", "action": hostile, "stdout": hostile, "verdict": {"rationale": hostile}}, 0.5)
    collection = read_collection_of([episode_entry(task_id=hostile, task_type="t", seed=1, outcome={}, actions=[action])])
    page = page_html(collection)
    assert page.count("</script>") == 2 and "<script>alert" not in page and "<img" not in page  # only the page's own
    assert page_data(page)["episodes"][0]["actions"][0]["reply"] == hostile  # and shown as it was written


def read_collection_of(episodes):
    from mappa_env.viewer import Collection

    return Collection(title="<b>title</b>", episodes=episodes)


def test_bad_inputs_are_refused_with_what_to_do(tmp_path, results_dir, capsys):
    with pytest.raises(ViewError, match="no such file or directory; give an evaluation results file"):
        read_collection(tmp_path / "nothing.json")
    text = (results_dir / "eval-math.json").read_text(encoding="utf-8")
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(ViewError, match=r"cut.json is not complete JSON .* a file cut off while it was written"):
        read_collection(cut)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**json.loads(text), "format_version": 1}), encoding="utf-8")
    with pytest.raises(ViewError, match="format_version 1; this viewer reads 2. It was written by an older version"):
        read_collection(old)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"summary": {}}), encoding="utf-8")
    with pytest.raises(ViewError, match="neither evaluation results nor an episode file"):
        read_collection(other)
    future = write_episode_file(tmp_path / "future" / "step-000001.json", [], kind="training", label="step 1", step=1,
                                env_id="dsbench-v0")
    future.write_text(future.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ViewError, match="format_version 99; this viewer reads 1. It was written by another version"):
        read_collection(future)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ViewError, match="holds no .json results and no episodes/ directory"):
        read_collection(tmp_path / "empty")
    assert main(["view", str(cut)]) == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "cut.html").exists()  # no page from half a file


def test_a_runs_episode_files_are_read_in_step_order_with_its_curves(tmp_path):
    run = tmp_path / "run"
    episode = episode_entry(task_id="t1", task_type="regression", seed=3, outcome={"valid": True}, actions=[])
    for name, kind, label, step in [("eval-step-000002.json", "evaluation", "after", 2), ("step-000010.json", "training", "step 10", 10),
                                    ("step-000002.json", "training", "step 2", 2), ("eval-step-000000.json", "evaluation", "before", 0)]:
        write_episode_file(run / "episodes" / name, [{**episode, "label": label, "step": step, "kind": kind}], kind=kind,
                           label=label, step=step, env_id="dsbench-v0")
    (run / "curves.png").write_bytes(b"\x89PNG fake")
    collection = read_collection(run)
    assert [e["label"] for e in collection.episodes] == ["before", "step 2", "after", "step 10"]
    assert collection.curves_png == b"\x89PNG fake"
    assert page_data(page_html(collection))["curves"].startswith("data:image/png;base64,")


def test_episode_file_text_is_cut_head_and_tail_and_old_training_steps_are_the_ones_let_go(tmp_path):
    long = "a" * 10_000 + "THE END"
    action = action_entry({"agent": "analyst", "stdout": long}, None, limit=EPISODE_FILE_TEXT_LIMIT)
    assert len(action["stdout"]) < EPISODE_FILE_TEXT_LIMIT + 100 and action["stdout"].endswith("THE END")
    assert "characters cut" in action["stdout"]
    files = [tmp_path / f"step-{n:06d}.json" for n in (9, 10, 11, 2)] + [tmp_path / "eval-step-000000.json"]
    assert [p.name for p in old_step_files(files, 2)] == ["step-000002.json", "step-000009.json"]


def test_serve_answers_with_the_page_on_loopback_and_nothing_else(results_dir, tmp_path):
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    page = tmp_path / "served.html"
    proc = subprocess.Popen([sys.executable, "-m", "mappa_env", "view", str(results_dir / "eval-math.json"), "--output",
                             str(page), "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert "2 episodes" in proc.stdout.readline()
        url = re.search(r"serving (http://127\.0\.0\.1:\d+/served\.html)", proc.stdout.readline()).group(1)
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.read().decode("utf-8") == page.read_text(encoding="utf-8")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url.rsplit("/", 1)[0] + "/../eval-math.json", timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
