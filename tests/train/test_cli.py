"""``python -m mappa_train`` as a user runs it: the shipped tiny config end to end, and bad input explained."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from mappa_train.__main__ import main

AGENTS = ("data_engineer", "modeler", "analyst")


def test_bad_settings_are_refused_before_any_work_with_how_to_fix(capsys, tmp_path):
    assert main(["--config", "tiny", "--optim.lr", "-1", "--policy.topology", "adapters",
                 "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "optim.lr must be > 0" in err and "use shared, lora or separate" in err
    assert not (tmp_path / "run").exists()
    assert main(["--config", "tiny", "--run.steps", "two"]) == 2
    assert "run.steps: expected an integer, got 'two'" in capsys.readouterr().err


def test_an_unknown_option_is_a_short_error_naming_the_closest_valid_ones(capsys):
    assert main(["--algorithm.name", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "See python -m mappa_train --help." in err
    assert "unknown option --algorithm.name: algorithm has no field 'name'. Fields: estimator, kl_coef" in err
    assert main(["--algo.estimator", "grpo"]) == 2
    assert "unknown section 'algo'. Did you mean 'algorithm'?" in capsys.readouterr().err
    assert main(["--optim.lrr=3"]) == 2
    assert "optim has no field 'lrr'. Did you mean 'lr'?" in capsys.readouterr().err
    assert main(["--print-confg"]) == 2
    assert "unknown option --print-confg. Did you mean '--print-config'?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse's own errors come with the short usage line only
        main(["--run.steps"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 2 and "expected one argument" in err


def test_print_config_shows_the_resolved_settings(capsys):
    assert main(["--config", "tiny", "--algorithm.estimator", "rloo", "--rollout.samples_per_task", "2", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "estimator: rloo" in out and "path: tiny-random" in out and "samples_per_task: 2" in out


@pytest.mark.slow
def test_the_tiny_config_trains_two_steps_and_leaves_logs_checkpoints_exports_and_the_report(tmp_path):
    pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "mappa_train", "--config", "tiny", "--output-dir", str(out),
                           "--run.progress", "false"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"done: {out}" in proc.stdout

    report = (out / "report.md").read_text()
    assert "| Policy/Run | Episodes | Success Rate (%) | Accuracy (Fair) | F1 (Fair) | RMSE (Fair) (%) | RPG |" in report
    assert "| before | 2 |" in report and "| after | 2 |" in report
    assert "Lower is better for RMSE (Fair) (%)" in report  # the columns and their direction come from the env
    assert re.search(r"The coach scored (\d+) of \1 training actions; none unscored\.", report) and "Bias alert: not fired" in report
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]
    for agent in AGENTS:
        assert (out / "final" / agent / "adapter_config.json").is_file()
        assert (out / "final" / agent / "adapter_model.safetensors").is_file()

    events = EventAccumulator(str(out))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for agent in AGENTS:
        for name in ("reward", "coach_score", "policy_loss", "kl_to_reference", "entropy", "clip_fraction",
                     "response_tokens", "code_share"):
            tag = f"agent/{agent}/{name}"
            assert tag in tags and [e.step for e in events.Scalars(tag)] == [1, 2], tag
    for tag in ("train/success_rate", "coach/unscored_actions", "time/generation_s", "time/update_s",
                "eval/heldout/success_rate", "throughput/generated_tokens_per_s"):
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("eval/heldout/success_rate")] == [0, 2]
    assert [e.value for e in events.Scalars("coach/bias/flags")] == [0.0, 0.0]  # the unbiased receipts coach
    assert "sample/trajectory" in events.Tags()["tensors"] or "sample/trajectory/text_summary" in events.Tags()["tensors"]

    # the viewer's files: both evaluations and both steps, every action with its verdict and reward; the page
    from mappa_env.viewer import read_collection

    assert sorted(p.name for p in (out / "episodes").iterdir()) == [
        "eval-step-000000.json", "eval-step-000002.json", "step-000001.json", "step-000002.json"]
    episodes = read_collection(out).episodes
    assert [(e["label"], e["kind"]) for e in episodes] == [("before", "evaluation")] * 2 + [("step 1", "training")] * 2 + \
        [("step 2", "training")] * 2 + [("after", "evaluation")] * 2
    trained = [a for e in episodes if e["kind"] == "training" for a in e["actions"]]
    assert trained and all(a["verdict"]["coach"] == "receipts" and a["reward"] is not None for a in trained)
    assert (out / "episodes.html").is_file() and "[episodes.html](episodes.html)" in report


def _scalars(directory):
    """Every scalar of a run as ``{tag: [(step, value), ...]}``, its event files in the order they were begun."""
    from mappa_train.report import read_scalars

    return read_scalars(directory)


def _scalar_steps(directory):
    return {tag: [step for step, _ in points] for tag, points in _scalars(directory).items()}


def _report_table(directory):
    return [line for line in (directory / "report.md").read_text().splitlines() if line.startswith("|")]


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly_the_run_that_was_killed(tmp_path):
    """A run killed mid-step and resumed logs what the uninterrupted run logs, value for value, and ends equal.

    Checkpoints every 2 of 4 steps, and the kill comes once step 3 is logged: the resumed run must drop
    the killed run's step-3 logs (after its last checkpoint) and redo step 3 exactly. One episode in
    flight: which episodes share a generation batch then depends on nothing but the seed (with several
    in flight it depends on thread timing, and so do the sampled tokens).
    """
    import os
    import signal
    import time

    torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
    from safetensors.torch import load_file

    common = [sys.executable, "-m", "mappa_train", "--config", "tiny", "--run.steps", "4", "--run.checkpoint_every", "2",
              "--eval.episodes", "1", "--rollout.envs_in_flight", "1", "--run.progress", "false"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert subprocess.run([*common, "--output-dir", str(whole)], capture_output=True, timeout=900).returncode == 0

    proc = subprocess.Popen([*common, "--output-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while not killed.is_dir() or 3 not in _scalar_steps(killed).get("train/success_rate", []):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "step 3 not logged after 10 minutes"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way through step 4: step 3 is logged, its checkpoint not written
    proc.wait(timeout=60)
    assert not (killed / "report.md").exists()
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-2"]

    resumed = subprocess.run([*common, "--output-dir", str(killed), "--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # every scalar, step by step and value by value (wall-clock times and speeds aside)
    whole_scalars, killed_scalars = _scalars(whole), _scalars(killed)
    assert set(killed_scalars) == set(whole_scalars)
    for tag, points in whole_scalars.items():
        assert [s for s, _ in killed_scalars[tag]] == [s for s, _ in points], tag
        if not tag.startswith(("time/", "throughput/")):
            assert [v for _, v in killed_scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-5, abs=1e-7), tag
    assert [s for s, _ in whole_scalars["agent/modeler/reward"]] == [1, 2, 3, 4]  # step 3 once, not twice
    assert [s for s, _ in whole_scalars["eval/heldout/success_rate"]] == [0, 4]
    assert _report_table(killed) == _report_table(whole) and "| after | 1 |" in "\n".join(_report_table(whole))

    # the last checkpoints hold the same parameters, optimiser moments and task sampler position
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-2", "step-4"]
    ends = [torch.load(run / "checkpoints" / "step-4" / "state.pt", weights_only=False) for run in (whole, killed)]
    assert ends[0]["sampler"] == ends[1]["sampler"]
    for group, tensors in ends[0]["parameters"].items():
        for name, tensor in tensors.items():
            assert torch.allclose(tensor, ends[1]["parameters"][group][name], atol=1e-6), name
    for group, parts in ends[0]["optimisation"].items():
        other = ends[1]["optimisation"][group]
        assert parts["scheduler"]["last_epoch"] == other["scheduler"]["last_epoch"] == 4
        for index, moments in parts["optimizer"]["state"].items():
            assert int(moments["step"]) == int(other["optimizer"]["state"][index]["step"]) == 4
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.allclose(moments[key], other["optimizer"]["state"][index][key], rtol=1e-4, atol=1e-10), key

    # and the exported adapters are the same
    for agent in AGENTS:
        first = load_file(str(whole / "final" / agent / "adapter_model.safetensors"))
        second = load_file(str(killed / "final" / agent / "adapter_model.safetensors"))
        assert first.keys() == second.keys() and first
        for name in first:
            assert torch.allclose(first[name], second[name], atol=1e-6), (agent, name)
    # and the run did train (else the equalities above prove nothing): LoRA's B starts at zero and moves
    # exactly for the agents that got a gradient. Which agents those are depends on the tiny random
    # model's sampled tokens (an agent whose every action got the same score has advantage 0), so the
    # test asserts that at least one agent trained and that the gradient logs agree with the weights.
    trained = {agent for agent in AGENTS if any(v > 0 for _, v in whole_scalars.get(f"agent/{agent}/grad_norm", []))}
    assert trained, "no agent got a gradient in 4 steps"
    for agent in AGENTS:
        lora_b = [tensor for name, tensor in ends[0]["parameters"][agent].items() if "lora_B" in name]
        assert lora_b and any(bool(t.abs().sum() > 0) for t in lora_b) == (agent in trained), agent


@pytest.mark.slow
def test_a_time_limit_stops_after_the_step_that_reaches_it_and_still_evaluates_and_exports(tmp_path, capsys):
    pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
    out = tmp_path / "run"
    assert main(["--config", "tiny", "--run.steps", "5", "--run.max_minutes", "0.001", "--eval.before", "false",
                 "--eval.episodes", "1", "--run.progress", "false", "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1"]
    report = (out / "report.md").read_text()
    assert report.count("| after | 1 |") == 1 and "| before |" not in report
    assert "1 step of reinforce_pp" in report
    assert _scalar_steps(out)["agent/analyst/reward"] == [1]
    assert all((out / "final" / agent / "adapter_config.json").is_file() for agent in AGENTS)


def test_a_coach_that_cannot_answer_is_a_short_error_before_any_work(capsys, tmp_path):
    options = '{"base_url": "http://127.0.0.1:9/v1", "cache_dir": null, "max_retries": 0, "timeout_s": 5}'
    assert main(["--config", "tiny", "--env.coach", "openai:judge", "--env.coach_kwargs", options,
                 "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the coach openai:judge at http://127.0.0.1:9/v1 could not score a probe action")
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoints").exists()


def test_the_tiny_math_config_trains_the_math_team_with_the_same_trainer(tmp_path):
    """mathchat-v0 through the unchanged trainer: its agents, its scorecard's table, its rule coach."""
    pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "mappa_train", "--config", "tiny-math", "--output-dir", str(out),
                           "--run.progress", "false"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "| Policy/Run | Episodes | Accuracy (%) | Unparsed (%) |" in report
    assert "| before | 2 |" in report and "| after | 2 |" in report
    assert re.search(r"The coach scored (\d+) of \1 training actions; none unscored\.", report)
    for agent in ("problem_solver", "code_executor", "verifier"):
        assert (out / "final" / agent / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]
    # every evaluation per episode, the same episodes before and after, so that they can be compared pairwise
    evaluations = json.loads((out / "evaluations.json").read_text())
    assert sorted(evaluations) == ["after", "before"] and evaluations["after"]["step"] == 2
    before, after = evaluations["before"]["episodes"], evaluations["after"]["episodes"]
    assert [(e["task_id"], e["seed"]) for e in before] == [(e["task_id"], e["seed"]) for e in after]
    assert len(before) == 2 and all(e["task_id"].startswith("arith/") for e in before)
    correct = sum(e["metrics"]["correct"] for e in after)
    assert f"| after | 2 | {100 * correct / 2:.1f} |" in report  # the table's accuracy is the episodes' mean
