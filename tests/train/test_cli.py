"""``python -m mappa_train`` as a user runs it: the shipped tiny config end to end, and bad input explained."""

from __future__ import annotations

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
    assert "sample/trajectory" in events.Tags()["tensors"] or "sample/trajectory/text_summary" in events.Tags()["tensors"]


def _scalar_steps(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_resume_after_sigkill_logs_every_step_once_like_an_uninterrupted_run(tmp_path):
    import os
    import signal
    import time

    pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
    common = [sys.executable, "-m", "mappa_train", "--config", "tiny", "--run.steps", "3", "--eval.episodes", "1",
              "--run.progress", "false"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert subprocess.run([*common, "--output-dir", str(whole)], capture_output=True, timeout=900).returncode == 0

    proc = subprocess.Popen([*common, "--output-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while not (killed / "checkpoints" / "step-1" / "state.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way through step 2: its logs so far must not count twice
    proc.wait(timeout=60)
    assert not (killed / "report.md").exists()

    resumed = subprocess.run([*common, "--output-dir", str(killed), "--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole_steps, killed_steps = _scalar_steps(whole), _scalar_steps(killed)
    assert killed_steps == whole_steps
    assert whole_steps["agent/modeler/reward"] == [1, 2, 3] and whole_steps["eval/heldout/success_rate"] == [0, 3]
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-2", "step-3"]  # the last two kept
    assert "| after | 1 |" in (killed / "report.md").read_text()


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
