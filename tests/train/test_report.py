"""What a run tells its user: the per-step figures (logged and printed from one computation), report.md's
facts, and the curves.png it embeds; on hand-made inputs, plus one tiny run of the toy environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("matplotlib", reason="the report's curves need matplotlib (installed by the README's lines)")

from mappa_env.scorecard import MATH_SCORECARD, Scorecard  # noqa: E402
from mappa_train.config import TrainConfig  # noqa: E402
from mappa_train.report import CURVES, RunFacts, no_code_note, plot_curves, step_figures, write_report  # noqa: E402
from mappa_train.rollout import ActionSample, EpisodeResult  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
AGENTS = ("problem_solver", "code_executor", "verifier")


def action(agent, reward, *, score=None, status="no_code", tokens=4, truncated=False):
    generation = SimpleNamespace(completion_ids=[0] * tokens, truncated=truncated)
    verdict = {"score": score if score is not None else (None if reward is None else 10 * reward)}
    return ActionSample(agent=agent, episode=0, task_id="t", task_type="arith", action_index=0, generation=generation,
                        reward=reward, step={"status": status, "verdict": verdict})


def run_scalars(rewards, code_shares, success=(0.0, 0.5, 1.0)):
    """Scalars as a 3-step run logs them: ``rewards[agent]`` and ``code_shares[agent]`` per step."""
    scalars = {"train/success_rate": list(enumerate(success, start=1))}
    for agent in AGENTS:
        scalars[f"agent/{agent}/reward"] = list(enumerate(rewards[agent], start=1))
        scalars[f"agent/{agent}/coach_score"] = [(s, 10 * r) for s, r in enumerate(rewards[agent], start=1)]
        scalars[f"agent/{agent}/code_share"] = list(enumerate(code_shares[agent], start=1))
    return scalars


def evaluations(*rates):
    """``before``, ``step 2``, ``after`` (step 3) with these accuracies, as evaluate_team returns them."""
    names, steps = ("before", "step 2", "after"), (0, 2, 3)
    return {name: {"step": step, "summary": {"n_episodes": 4, "success_rate": rate, "unparsed_rate": 0.25,
                                             "unscored_actions": 0, "actions": 12}}
            for name, step, rate in zip(names, steps, rates)}


def facts(**overrides):
    values = {"steps": 3, "wall_s": 150.0, "coach": "openai:gpt-4o", "agents": AGENTS,
              "code_agents": ("code_executor",), "actions": 36, "unscored": 2}
    return RunFacts(**{**values, **overrides})


def assert_a_real_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(str(path))
    assert pixels.shape[0] > 0 and pixels.shape[1] > 0
    assert (pixels != pixels[0, 0]).any()  # something is drawn


def test_one_step_figures_feed_both_the_logged_scalars_and_the_screen_line():
    samples = [action("problem_solver", 0.4, score=6.0), action("problem_solver", None),
               action("code_executor", 0.5, status="ok"), action("code_executor", 0.3, status="error", truncated=True)]
    episodes = [EpisodeResult(0, "t", "arith", 0, {"correct": True}, samples[:2]),
                EpisodeResult(1, "t", "arith", 0, {"correct": False, "valid": True}, samples[2:])]
    figures = step_figures(3, AGENTS, episodes, samples)
    assert list(figures.agents) == ["problem_solver", "code_executor"]  # the verifier did not act
    solver, executor = figures.agents["problem_solver"], figures.agents["code_executor"]
    assert (solver.actions, solver.unscored, solver.reward, solver.coach_score, solver.code_share) == (2, 1, 0.4, 6.0, 0.0)
    assert solver.exec_error_rate is None and executor.exec_error_rate == 0.5 and executor.truncated_share == 0.5
    scalars = figures.scalars()
    assert scalars["train/success_rate"] == 0.5 and scalars["agent/code_executor/code_share"] == 1.0
    assert scalars["agent/problem_solver/unscored_actions"] == 1 and "agent/verifier/reward" not in scalars
    line = figures.line(12)
    assert line == ("step 3/12  success 0.50  problem_solver r=0.40 s=6.0 code=0.00  "
                    "code_executor r=0.40 s=4.0 code=1.00")
    assert "\n" not in line


def test_the_report_embeds_its_curves_and_says_the_real_coach_the_time_and_the_first_and_last_step(tmp_path):
    config = TrainConfig.from_dict({"env": {"id": "mathchat-v0", "coach": "auto"}, "run": {"steps": 3}})
    scalars = run_scalars({"problem_solver": [0.1, 0.5, 0.9], "code_executor": [0.2, 0.2, 0.3], "verifier": [0.0, 0.5, 1.0]},
                          {"problem_solver": [0.0, 0.0, 0.0], "code_executor": [0.0, 0.5, 0.25], "verifier": [0.0] * 3})
    write_report(tmp_path, config, evaluations(0.25, 0.5, 0.75), facts=facts(), scorecard=MATH_SCORECARD,
                 coaching=["The coach scored 34 of 36 training actions."], scalars=scalars)
    assert_a_real_png(tmp_path / CURVES)
    report = (tmp_path / "report.md").read_text()
    assert f"![curves]({CURVES})" in report
    assert "coach openai:gpt-4o (`env.coach` auto)" in report and "- Coach that scored: openai:gpt-4o" in report
    assert "- Wall-clock time: 2.5 min (150 s)." in report
    assert "- Unscored training actions: 2 of 36." in report
    assert "(step 1 → step 3" in report
    assert "| problem_solver | 0.10 → 0.90 | 1.0 → 9.0 | 0.00 → 0.00 |" in report
    assert "| code_executor | 0.20 → 0.30 | 2.0 → 3.0 | 0.00 → 0.25 |" in report
    assert "| before | 4 | 25.0 | 25.0 |" in report and "| after | 4 | 75.0 | 25.0 |" in report
    assert "No code ran" not in report  # the code executor ran code at step 2
    assert "did not change" not in report  # the accuracy moved
    assert "The coach scored 34 of 36 training actions." in report


def test_a_run_where_no_role_that_can_run_code_ran_any_says_so_plainly(tmp_path):
    none = {agent: [0.0, 0.0, 0.0] for agent in AGENTS}
    scalars = run_scalars({agent: [0.1, 0.2, 0.3] for agent in AGENTS}, none)
    note = no_code_note(scalars, ("code_executor",))
    assert note == ("No code ran: in 3 training steps (steps 1-3) not one action of code_executor (the role whose code "
                    "runs) ran code (code share 0 at every step).")
    assert "problem_solver or code_executor (the roles" in no_code_note(scalars, ("problem_solver", "code_executor"))
    assert no_code_note(scalars, ()) is None  # no role can run code: nothing to warn about
    assert no_code_note({}, ("code_executor",)) is None  # no step logged: nothing was observed
    write_report(tmp_path, TrainConfig(), {}, facts=facts(), scorecard=MATH_SCORECARD, scalars=scalars)
    assert f"**Warning: {note}**" in (tmp_path / "report.md").read_text()


def test_a_resumed_run_says_its_whole_time_and_the_time_of_this_process(tmp_path):
    scalars = run_scalars({agent: [0.1, 0.2, 0.3] for agent in AGENTS}, {agent: [1.0] * 3 for agent in AGENTS})
    write_report(tmp_path, TrainConfig(), {}, facts=facts(wall_s=600.0, resumed_at=2, process_s=60.0),
                 scorecard=MATH_SCORECARD, scalars=scalars)
    report = (tmp_path / "report.md").read_text()
    assert "- Wall-clock time: 10.0 min (600 s) in all (1.0 min (60 s) in this process, resumed at step 2)." in report


def test_a_run_with_nothing_to_plot_still_writes_a_valid_report(tmp_path):
    (tmp_path / CURVES).write_bytes(b"stale")
    write_report(tmp_path, TrainConfig(), {}, facts=facts(steps=0, wall_s=3.0), scorecard=Scorecard(task_types=("a",)),
                 scalars={})
    report = (tmp_path / "report.md").read_text()
    assert "Nothing to plot: no training step was logged and no evaluation ran." in report
    assert "No training step was logged." in report and "(no evaluation was configured)" in report
    assert "![curves]" not in report and not (tmp_path / CURVES).exists()
    assert "0 steps of" in report and "- Wall-clock time: 0.1 min (3 s)." in report


def test_an_evaluation_alone_is_plotted(tmp_path):
    only = {"before": evaluations(0.25, 0.5, 0.75)["before"]}
    assert plot_curves(tmp_path / CURVES, MATH_SCORECARD, only, {}, AGENTS) == tmp_path / CURVES
    assert_a_real_png(tmp_path / CURVES)


def test_importing_the_trainer_does_not_load_matplotlib():
    code = "import sys, mappa_train, mappa_train.report, mappa_train.trainer; print('LOADED', 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])  # this checkout's packages
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED False" in out.stdout


@pytest.mark.parametrize("counters", [(1, 2), (9, 10), (99, 100)])
def test_the_history_read_back_from_the_event_files_is_the_resumed_runs_whole_history(tmp_path, counters):
    """A file's name ends in its writer's per-process counter, not zero-padded: CI once read a run resumed in the
    same second by writer 10 after writer 9 in name order (10 first), and got the purged step 3 as the last."""
    pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
    from torch.utils.tensorboard import SummaryWriter

    from mappa_train.report import read_scalars

    first = SummaryWriter(str(tmp_path))
    for step in (1, 2, 3):  # a run killed after logging step 3, whose last checkpoint is step 2
        first.add_scalar("agent/verifier/reward", step / 10, step)
    first.close()
    (first_file,) = tmp_path.iterdir()
    resumed = SummaryWriter(str(tmp_path), purge_step=3)  # as train() opens it on --resume from step 2
    for step in (3, 4):
        resumed.add_scalar("agent/verifier/reward", 1 + step / 10, step)
    resumed.close()
    # the names these two files get from a process whose earlier writers used the counters before them
    (resumed_file,) = set(tmp_path.iterdir()) - {first_file}
    for path, counter in zip((first_file, resumed_file), counters):
        path.rename(tmp_path / f"events.out.tfevents.1796000000.host.4242.{counter}")
    assert read_scalars(tmp_path)["agent/verifier/reward"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)),
                                                                (3, pytest.approx(1.3)), (4, pytest.approx(1.4))]


def test_a_tiny_run_prints_a_line_per_step_and_reports_its_curves_and_real_coach(tiny_chat_model, tmp_path, capsys,
                                                                                   monkeypatch):
    pytest.importorskip("peft")
    import toy_env
    from test_learning import toy_config

    from mappa_train.trainer import train

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "MAPPA_COACH_MODEL"):  # so that "auto" is the receipts coach
        monkeypatch.delenv(name, raising=False)
    toy_env.register()
    config = toy_config(tiny_chat_model, tmp_path / "run", "reinforce_pp", steps=2).to_dict()
    config["env"]["coach"] = "auto"
    config["rollout"].update(tasks_per_step=1, samples_per_task=1, envs_in_flight=1)  # as small as a run gets
    out = train(TrainConfig.from_dict(config).validate())
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("step ")]
    assert [line.split("  ")[0] for line in lines] == ["step 1/2", "step 2/2"]
    assert all(" writer r=" in line and " checker r=" in line and "code=0.00" in line for line in lines)
    assert "Warning: No code ran: in 2 training steps" in captured.err  # the toy agents write no code
    assert_a_real_png(out / CURVES)
    report = (out / "report.md").read_text()
    assert f"![curves]({CURVES})" in report and "coach receipts (`env.coach` auto)" in report
    assert "- Wall-clock time: " in report and "(step 1 → step 2" in report and "**Warning: No code ran" in report


def test_a_run_whose_held_out_results_did_not_move_says_so_and_where_to_see_a_team_improve(tmp_path):
    config = TrainConfig.from_dict({"env": {"id": "mathchat-v0", "coach": "receipts"}, "run": {"steps": 3}})
    scalars = run_scalars({a: [0.2, 0.2, 0.2] for a in AGENTS}, {a: [0.5] * 3 for a in AGENTS})
    write_report(tmp_path, config, evaluations(0.25, 0.5, 0.25), facts=facts(), scorecard=MATH_SCORECARD, scalars=scalars)
    report = (tmp_path / "report.md").read_text()
    assert "**The held-out results did not change over 3 training steps" in report
    assert "--config cpu-math" in report and "docs/benchmarks.md" in report
    # one evaluation only: nothing to compare, nothing said
    write_report(tmp_path, config, {"after": evaluations(0.25)["before"]}, facts=facts(), scorecard=MATH_SCORECARD,
                 scalars=scalars)
    assert "did not change" not in (tmp_path / "report.md").read_text()
