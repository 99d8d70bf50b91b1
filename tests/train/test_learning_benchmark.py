"""benchmarks/learning_cpu.py: the paired interval it reports, and its table made from records kept in git.

The experiment's runs take over an hour each on 2 cores and a session's machine is new every time, so the
seeds are run over several sessions and the table is made from the records alone; these tests prove that
the records carry what the table says, and that mixing recipes within an arm is reported, not averaged away.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_cpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("learning_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outcomes(right: int, n: int = 64, offset: int = 0) -> dict[str, float]:
    """``n`` episodes, ``right`` of them solved, starting at episode ``offset``."""
    return {f"t{i}#0": float(offset <= i < offset + right) for i in range(n)}


def test_the_paired_interval_excludes_zero_for_a_clear_gain_and_includes_it_for_a_reshuffle(bench):
    gain = bench.paired_difference(outcomes(10), outcomes(24))  # the same 10 solved, 14 more
    assert gain[0] == pytest.approx(14 / 64)
    assert 0 < gain[1] < gain[0] < gain[2]
    shuffle = bench.paired_difference(outcomes(10), outcomes(10, offset=5))  # 5 lost, 5 gained
    assert shuffle[0] == 0 and shuffle[1] < 0 < shuffle[2]
    with pytest.raises(ValueError, match="share no episode"):
        bench.paired_difference({"a#0": 1.0}, {"b#0": 1.0})


def team(seed: int, before: int, after: int, recipe: str = "r1") -> dict:
    return {"kind": "team", "mode": "process", "seed": seed, "minutes_trained": 40.5, "steps": 12, "commit": "abc",
            "recipe": recipe, "evaluations": [[0, outcomes(before)], [12, outcomes(after)]],
            "scalars": {"agent/code_executor/reward": {"1": 0.1, "12": 0.4}, "train/success_rate": {"1": 0.1, "12": 0.3}}}


def report(records: Path, tmp_path: Path, *extra: str) -> tuple[str, str]:
    table = tmp_path / "table.md"
    done = subprocess.run([sys.executable, str(SCRIPT), "--report-only", "--records", str(records), "--modes", "process",
                           "--seeds", "0", "1", "2", "--no-peer", "--plot", str(tmp_path / "plot.png"), "--table", str(table),
                           *extra], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout, table.read_text(encoding="utf-8")


def test_the_table_is_made_from_the_records_alone_and_names_the_missing_runs(bench, tmp_path):
    records = tmp_path / "records"
    bench.write_record(records / "mathchat-v0" / "process-seed0.json", team(0, 10, 24))
    bench.write_record(records / "mathchat-v0" / "process-seed1.json",
                       {**team(1, 10, 16), "machine": {"cpu": "x", "cores": 2, "threads": 2, "matmul_gflops": 61.3}})
    assert sorted(p.name for p in (records / "mathchat-v0").iterdir()) == ["process-seed0.json", "process-seed1.json"]

    stdout, table = report(records, tmp_path)
    assert "not finished yet: process-seed2" in stdout
    # the machine's speed where the record has it (the first records have none)
    assert "| process-seed0 | 12 | 40.5 | - | 64 | 15.6 | - | 37.5" in table and "+21.9 [" in table
    assert "| process-seed1 | 12 | 40.5 | 61 | 64 | 15.6 | - | 25.0" in table
    # the arm's line: mean ± sd over the two seeds of after (37.5, 25.0) and of the difference (+21.9, +9.4)
    assert "| process | 2 | 15.6 | 31.2 ± 8.8 | +15.6 ± 8.8 |" in table
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Warning" not in stdout


def test_an_arm_whose_runs_ran_different_recipes_is_named_in_a_warning(bench, tmp_path):
    records = tmp_path / "records"
    bench.write_record(records / "mathchat-v0" / "process-seed0.json", team(0, 10, 24, recipe="aaa"))
    bench.write_record(records / "mathchat-v0" / "process-seed2.json", team(2, 10, 12, recipe="bbb"))
    stdout, _ = report(records, tmp_path)
    assert "Warning: the process runs ran 2 different recipes (aaa: seeds 0; bbb: seeds 2)" in stdout


def test_a_record_keeps_the_curves_and_evaluations_it_was_made_from(bench, tmp_path):
    path = tmp_path / "r.json"
    bench.write_record(path, team(0, 10, 24))
    record, evaluations, tags = bench.read_record(path)
    assert [step for step, _ in evaluations] == [0, 12]
    assert sum(evaluations[1][1].values()) == 24
    assert tags["agent/code_executor/reward"] == {1: 0.1, 12: 0.4}
    assert json.loads(path.read_text())["recipe"] == record["recipe"] == "r1"


def test_halfway_is_the_evaluation_nearest_half_the_runs_steps(bench):
    # a run of 18 steps evaluated at 0, 8, 16 and 18: halfway is step 8, not the middle of the list
    evaluations = [(0, outcomes(10)), (8, outcomes(25)), (16, outcomes(36)), (18, outcomes(29))]
    row = bench.run_row("r", evaluations, minutes=40.0, steps=18)
    assert (row["before"], row["halfway"], row["after"]) == (10 / 64, 25 / 64, 29 / 64)
    assert bench.run_row("r", evaluations[:1] + evaluations[-1:], minutes=40.0, steps=18)["halfway"] is None


def test_a_record_says_how_fast_its_machine_was(bench):
    machine = bench.machine_speed(1)
    assert machine["threads"] == 1 and machine["cores"] >= 1 and machine["cpu"]
    # one thread of any CPU this runs on multiplies float32 matrices at well over 0.1 and under 10,000 GFLOP/s
    assert 0.1 < machine["matmul_gflops"] < 10_000


def trainer_command(bench, monkeypatch, run: Path, **budget) -> list[str]:
    """The ``python -m mappa_train`` command :func:`run_team` launches for ``run`` with ``budget``."""
    launched = []
    monkeypatch.setattr(bench, "launch", lambda command, log, threads: launched.append(list(command)))
    args = argparse.Namespace(env="mathchat-v0", threads=2, eval_every=8, trainer_args=[], **budget)
    bench.run_team("process", 1, run, args)
    (command,) = launched
    return command


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_a_wall_clock_budget_is_the_runs_time_limit_and_a_step_budget_lifts_it(bench, monkeypatch, tmp_path):
    fresh = tmp_path / "process-seed1"
    timed = trainer_command(bench, monkeypatch, fresh, minutes=40.0, steps=200)
    assert (option(timed, "--run.max_minutes"), option(timed, "--run.steps")) == ("40.000", "200")
    stepped = trainer_command(bench, monkeypatch, fresh, minutes=0.0, steps=20)
    # run.max_minutes 0 is the trainer's "no time limit": the 20 steps are the budget
    assert (option(stepped, "--run.max_minutes"), option(stepped, "--run.steps")) == ("0.000", "20")
    assert option(stepped, "--run.seed") == "1" and option(stepped, "--env.reward_mode") == "process"
    assert "--run.resume" not in stepped


def test_a_resumed_run_gets_what_is_left_of_its_minutes_or_the_rest_of_its_steps(bench, monkeypatch, tmp_path):
    run = tmp_path / "process-seed1"
    (run / "checkpoints" / "step-000005").mkdir(parents=True)
    # 5 steps logged: 25 minutes of rollouts and 5 of updates
    monkeypatch.setattr(bench, "scalars", lambda _: {"time/rollout_wall_s": {s: 300.0 for s in range(1, 6)},
                                                      "time/update_s": {s: 60.0 for s in range(1, 6)}})
    timed = trainer_command(bench, monkeypatch, run, minutes=40.0, steps=200)
    assert option(timed, "--run.max_minutes") == "10.000" and option(timed, "--run.resume") == "true"
    spent = trainer_command(bench, monkeypatch, run, minutes=30.0, steps=200)
    assert option(spent, "--run.max_minutes") == "0.050"  # budget spent: one more step, then the final evaluation
    # a step budget never turns into a time limit on a resume: the trainer finishes the schedule
    stepped = trainer_command(bench, monkeypatch, run, minutes=0.0, steps=20)
    assert option(stepped, "--run.max_minutes") == "0.000" and option(stepped, "--run.resume") == "true"


def test_a_step_budget_refuses_the_peer_which_is_compared_on_equal_wall_clock(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--minutes", "0", "--steps", "20", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "add --no-peer" in done.stderr
    assert not any(tmp_path.iterdir())  # refused before anything ran
