"""The coach's evidence (prompting.evidence_fields / build_messages) and the re-coaching comparison.

Each test builds the agent's observation the way the engine does (mappa_env.envs.transcript), so the
prompt is checked on what a coach really receives: the task once, every earlier action's code and outcome
on a late action, the code as code, no host paths, a code-less rule in every rubric, the graded result and
the checks of the saved files, a bounded hindsight trajectory with the most relevant actions first, and
the score changes `python -m mappa_env coach` reports.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from sample_requests import request

from mappa_env.__main__ import main
from mappa_env.coach.offline import change_summary, change_text, rows_table
from mappa_env.coach.prompting import LATER_CHARS, PACKAGED_PROMPTS, build_messages, scrub_paths
from mappa_env.envs import transcript
from mappa_env.envs.dsbench.roles import ROLES
from mappa_env.records import CoachRequest, Finding, Outcome, StepRecord, Verdict, requests_to_json

TASK = ("# Penguin species\n\nEach row is one penguin measured near Palmer Station.\n\n## Task\n\n"
        "Task type: classification\n\nPredict the target column `species` for every row of `test.csv`.\n")
ANALYST = next(r for r in ROLES if r.name == "analyst")


def observation(task: str, earlier: tuple[StepRecord, ...] = (), handoff: str = "Done. I saved model.pkl.") -> str:
    """The analyst's prompt as the engine renders it: opening messages, then each earlier reply and its result."""
    messages = transcript.opening_messages(
        instructions=ANALYST.instructions, title=ANALYST.title, task_prompt=task,
        workspace={"train.csv": 100, "model.pkl": 50}, handoff=("Modeler", handoff), max_actions=4, persistent=True)
    for step in earlier:
        messages += [{"role": "assistant", "content": step.action},
                     {"role": "user", "content": transcript.result_message(step, max_actions=4)}]
    return transcript.render_messages(messages)


def evidence(req: CoachRequest, **kwargs) -> str:
    return build_messages(req, **kwargs)[1]["content"]


#: the evidence's headings, as the packaged template writes them (code in the evidence has "# " lines too)
HEADINGS = [line[2:].split(" (")[0] for line in (PACKAGED_PROMPTS / "evidence.md").read_text().splitlines()
            if line.startswith("# ")]


def section(text: str, title: str) -> str:
    """The body of the heading ``# title`` up to the next heading of the template."""
    body = text.split(f"# {title}", 1)[1]
    ends = [body.find(f"\n# {h}") for h in HEADINGS if h != title and f"\n# {h}" in body]
    return body[:min(ends)] if ends else body


# ---- 1. the task once -------------------------------------------------------------------------------


def test_the_task_text_and_the_instructions_appear_once():
    req = request(task_description=TASK, role_instructions=ANALYST.instructions, observation=observation(TASK))
    user = evidence(req)
    assert user.count("Predict the target column `species`") == 1
    assert user.count(ANALYST.instructions) == 1
    seen = section(user, "What the agent saw before acting")
    assert "(the task text, shown under # Task)" in seen and "Message from the Modeler" in seen


# ---- 2. earlier turns summarised, not cut blind ------------------------------------------------------


def earlier_action(k: int, status: str = "ok") -> StepRecord:
    code = f"# action {k} starts\n" + "\n".join(f"x{k}_{i} = {i}" for i in range(300)) + f"\nprint('action {k} ends')"
    return StepRecord(
        agent="analyst", action_index=k - 1, action=f"Step {k}.\n```python\n{code}\n```", code=code, num_code_blocks=1,
        status=status, stdout="o" * 2500 + f"\nstdout of action {k} ends", ends_stage=False,
        error="ValueError: bad shape in action 2" if status == "error" else "",
        files_changed=(f"part{k}.csv",), workspace_after={"train.csv": 100, f"part{k}.csv": 10},
        verdict=Verdict(2.0 if status == "error" else 6.0, "r", "receipts"),
    )


def test_each_earlier_actions_code_and_outcome_survive_on_the_fourth_action():
    earlier = (earlier_action(1), earlier_action(2, "error"), earlier_action(3))
    req = request(task_description=TASK, role_instructions=ANALYST.instructions, observation=observation(TASK, earlier),
                  earlier=earlier, action_index=3)
    user = evidence(req)
    for k in (1, 2, 3):
        assert f"# action {k} starts" in user and f"print('action {k} ends')" in user
        assert f"stdout of action {k} ends" in user
        assert f"## Its action {k}: status {'error' if k == 2 else 'ok'}; coach score {2 if k == 2 else 6}" in user
        assert f"Changed: part{k}.csv" in user
    assert "ValueError: bad shape in action 2" in user
    seen = section(user, "What the agent saw before acting") + section(user, "Its earlier actions in this turn")
    assert len(seen) < 6000 * 1.15  # within max_observation_chars, give or take the headings


# ---- 3. the code as code -----------------------------------------------------------------------------


def test_the_code_that_ran_is_shown_as_one_python_block_and_not_repeated_in_the_reply():
    action = "First the data.\n```python\na = 1\n```\nThen the sum.\n```py\nb = a + 1\n```\nDone."
    user = evidence(request(action=action, code="a = 1\n\nb = a + 1", num_code_blocks=2))
    assert "```python\na = 1\n\nb = a + 1\n```" in user
    judged = section(user, "The action judged")
    assert "Code run:\n```python\na = 1\n\nb = a + 1\n```" in judged
    assert judged.count("a = 1") == 1  # the reply points at the code instead of repeating it
    assert '[python block 2: under "Code run"]' in judged and "Then the sum." in judged


# ---- 4. host paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, clean", [
    ("No such file or directory: '/tmp/mappa-ws-abc123/X_test.pkl'", "No such file or directory: 'X_test.pkl'"),
    ("cwd is /tmp/mappa-ws-k2_9q", "cwd is ."),
    ('File "/workspace/helper.py", line 3', 'File "helper.py", line 3'),
    ('File "/work/venv/lib/python3.12/site-packages/sklearn/base.py", line 1', 'File ".../sklearn/base.py", line 1'),
    ('File "/usr/lib/python3/dist-packages/numpy/core.py"', 'File ".../numpy/core.py"'),
    ('File "/usr/lib/python3.11/json/decoder.py", line 355', 'File ".../json/decoder.py", line 355'),
    ('File "/root/.local/share/uv/python/cpython-3.12.3/lib/python3.12/pickle.py"', 'File ".../pickle.py"'),
    ("open('/data/raw/train.csv')", "open('/data/raw/train.csv')"),  # a path the agent chose is evidence
    ('File "<action-1>", line 10', 'File "<action-1>", line 10'),
    ("site-packages/ and mappa-ws-notes.txt", "site-packages/ and mappa-ws-notes.txt"),
])
def test_scrub_paths(raw, clean):
    assert scrub_paths(raw) == clean


def test_host_paths_never_reach_the_coach_but_the_agents_code_is_left_as_written():
    trace = ('Traceback (most recent call last):\n  File "/work/venv/lib/python3.12/site-packages/pandas/io/pickle.py", '
             "line 185, in read_pickle\nFileNotFoundError: [Errno 2] No such file or directory: '/tmp/mappa-ws-abc123/X_test.pkl'")
    engineer = StepRecord(agent="data_engineer", action_index=0, action="", status="error",
                          error="OSError: /tmp/mappa-ws-abc123/raw is not a directory")
    first = StepRecord(agent="analyst", action_index=0, action="```python\nx\n```", code="x", status="error",
                       stderr=trace, error="FileNotFoundError: '/tmp/mappa-ws-abc123/X_test.pkl'", ends_stage=False)
    code = "open('/tmp/mappa-ws-abc123/X_test.pkl')"
    req = request(stderr=trace, error="FileNotFoundError: '/tmp/mappa-ws-abc123/X_test.pkl'", code=code,
                  upstream=(engineer,), earlier=(first,), action_index=1)
    user = evidence(req)
    outside_code = user.replace(code, "")
    assert "mappa-ws-" not in outside_code and "site-packages" not in outside_code
    assert "No such file or directory: 'X_test.pkl'" in user and ".../pandas/io/pickle.py" in user
    assert code in section(user, "The action judged")


# ---- 5. a code-less rule for every role ---------------------------------------------------------------


RUBRICS = sorted(PACKAGED_PROMPTS.glob("*/*.md")) + [PACKAGED_PROMPTS / "generic.md"]
#: the rubrics of teams that pass work along in files (the math team passes answers in words)
FILE_TEAM_RUBRICS = [p for p in RUBRICS if p.parent.name != "mathchat-v0"]


@pytest.mark.parametrize("rubric", RUBRICS, ids=lambda p: str(p.relative_to(PACKAGED_PROMPTS)))
def test_every_rubric_says_how_to_score_an_action_without_code(rubric: Path):
    assert "An action without code" in " ".join(rubric.read_text().split())


@pytest.mark.parametrize("rubric", FILE_TEAM_RUBRICS, ids=lambda p: str(p.relative_to(PACKAGED_PROMPTS)))
def test_every_file_team_rubric_scores_diagnoses_and_false_claims_about_files(rubric: Path):
    text = " ".join(rubric.read_text().split())
    assert "a correct diagnosis of an upstream fault that names the file and" in text and "about 5" in text
    assert "a false claim about files" in text and "0-1" in text
    assert "a closing message whose claims are true" in text


# ---- 6. the graded result and the checks, and caps by rpg -----------------------------------------------


def test_the_graded_result_of_the_action_and_the_standing_findings_are_in_the_evidence():
    engineer = StepRecord(agent="data_engineer", action_index=0, action="", status="ok",
                          files_changed=("X_train.pkl", "test_ids.pkl"),
                          findings=(Finding("ids_not_in_test", "test_ids.pkl", "7 of 10 ids are not in test.csv"),))
    result = Outcome(True, "ok", {"accuracy": 0.5, "rpg": 0.61, "primary": 0.5}, "builtin/x", "classification")
    req = request(upstream=(engineer,), status="ok", error="", stderr="", files_changed=("submission.csv",))
    user = evidence(replace(req, step=replace(req.step, result=result)))
    assert "rpg=0.61" in section(user, "Graded result of this action")
    assert ("- test_ids.pkl (saved by data_engineer): ids_not_in_test: 7 of 10 ids are not in test.csv"
            in section(user, "Checks on the saved files"))
    plain = evidence(request())
    assert "(none: this action did not write the result)" in section(plain, "Graded result of this action")
    assert "(none found)" in section(plain, "Checks on the saved files")


@pytest.mark.parametrize("rubric", ["dsbench-v0/analyst.md", "generic.md"])
def test_quality_caps_are_by_rpg_the_same_for_every_task_type(rubric):
    text = " ".join((PACKAGED_PROMPTS / rubric).read_text().split())
    assert "rpg >= 0.75 → at most 9, >= 0.5 → 8, >= 0.25 → 6, > 0 → 4, <= 0 → 3" in text
    assert "RMSE" not in text and "accuracy) >=" not in text


# ---- 7. hindsight: the trajectory bounded, the most relevant first --------------------------------------


def test_the_hindsight_trajectory_is_bounded_and_puts_the_final_error_and_related_actions_first():
    engineer = StepRecord(agent="data_engineer", action_index=0, action="", code="save()", status="ok",
                          files_changed=("X_train.pkl", "y_train.pkl", "test_ids.pkl"))
    filler = [StepRecord(agent="modeler", action_index=i, action="", code="print('tuning')", status="ok",
                         stdout="tuning") for i in range(60)]
    reader = StepRecord(agent="modeler", action_index=60, action="", code="pd.read_pickle('X_train.pkl')", status="ok")
    crash = StepRecord(agent="analyst", action_index=0, action="", status="error",
                       error="FileNotFoundError: [Errno 2] No such file or directory: 'X_test.pkl'")
    final = StepRecord(agent="analyst", action_index=1, action="Done.", status="no_code")
    trajectory = (engineer, *filler[:30], crash, reader, *filler[30:], final)
    req = request(role="data_engineer", upstream=(), code="save()", action_index=0, status="ok", error="", stderr="",
                  files_changed=engineer.files_changed, trajectory=trajectory)
    later = section(evidence(req), "What happened after this action").strip().splitlines()
    assert len("\n".join(later)) < LATER_CHARS + 200
    assert later[0].startswith("- analyst action 2: status no_code")
    assert later[1].startswith("- modeler action 61: status ok") and "involves X_train.pkl" in later[1]
    assert later[2].startswith("- analyst action 1: status error; changed nothing; error: FileNotFoundError")
    assert later[3].startswith("- modeler action 60")  # then the rest, newest first
    assert later[-1].endswith("less relevant later actions left out for length)")
    assert all(not line.startswith("- data_engineer action 1") for line in later)


def test_rubrics_of_the_roles_whose_files_others_use_read_the_trajectory():
    for role in ("data_engineer", "modeler"):
        text = " ".join((PACKAGED_PROMPTS / "dsbench-v0" / f"{role}.md").read_text().split())
        assert '"What happened after this action"' in text and '"not known yet"' in text


# ---- 8. re-coaching: the change against the recorded scores ---------------------------------------------


def row(role: str, recorded: float | None, score: float | None) -> dict:
    return {"episode": 0, "task_id": "t", "role": role, "action": 1, "status": "ok", "recorded_score": recorded,
            "score": score, "rationale": "r"}


def test_the_change_summary_compares_only_actions_scored_both_times():
    rows = [row("data_engineer", 8, 2), row("data_engineer", 6, 6), row("analyst", 2, 5), row("analyst", None, 4),
            row("modeler", 8, None)]
    summary = change_summary(rows)
    assert summary == {
        "compared": 3, "unscored": 2, "changed": 2, "mean_abs_change": 3.0, "mean_change": -1.0,
        "by_agent": {"data_engineer": {"compared": 2, "mean_change": -3.0}, "analyst": {"compared": 1, "mean_change": 3.0}},
    }
    text = change_text(summary)
    assert "3 actions compared, 2 changed, mean absolute change 3.00, mean change -1.00; 2 left out, unscored" in text
    assert "  data_engineer: mean change -3.00 over 2 actions" in text
    table = rows_table(rows).splitlines()
    assert table[0].endswith("| rationale | change |")
    assert table[2].endswith("| -6 |") and table[4].endswith("| +3 |") and table[5].endswith("| - |")
    assert change_text(change_summary([row("analyst", None, 3)])) == (
        "change: no action scored by both coaches; 1 left out, unscored by the recorded or the new coach")


def test_the_coach_cli_prints_the_change_for_recorded_episodes(tmp_path, capsys):
    # one recorded episode of two actions, both recorded with a 7: the engineer's code-less stage end
    # without its files, the analyst's crash on the X_test.pkl the engineer never saved
    engineer = StepRecord(agent="data_engineer", action_index=0, action="Done.", status="no_code")
    analyst = request(upstream=(engineer,))
    records = [engineer.with_verdict(Verdict(7.0, "recorded", "old")), analyst.step.with_verdict(Verdict(7.0, "recorded", "old"))]
    requests = [request(role="data_engineer", upstream=(), action="Done.", code="", status="no_code", error="",
                        stderr="", ends_stage=True), analyst]
    episode = {"format_version": 2, "outcome": {"valid": False}, "records": [r.to_dict() for r in records],
               "coach_requests": requests_to_json(requests, records)}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"episodes": [episode]}))
    out_path = tmp_path / "rows.json"
    assert main(["coach", "--episodes", str(path), "--coach", "receipts", "--output", str(out_path)]) == 0
    out = capsys.readouterr().out
    table = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 0 |")]
    assert [cells[2].strip() for cells in table] == ["data_engineer", "analyst"]
    changes = [float(cells[-1]) for cells in table]
    assert changes == [float(cells[6]) - 7.0 for cells in table] and all(c < 0 for c in changes)
    assert f"change (new - recorded): 2 actions compared, 2 changed, mean absolute change {-sum(changes) / 2:.2f}" in out
    assert f"  analyst: mean change {changes[1]:+.2f} over 1 actions" in out
    assert json.loads(out_path.read_text())["change"]["compared"] == 2
