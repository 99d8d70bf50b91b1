"""Data-parallel training: N processes take exactly the step one process takes on the whole batch.

The processes here are real: spawned and joined over gloo on the CPU, as ``accelerate launch`` or
``torchrun`` starts them on GPUs (over NCCL) or CPUs.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="mappa_train needs torch (installed by the README's test line)")
pytest.importorskip("peft")
import torch.multiprocessing as mp  # noqa: E402

import mappa_train  # noqa: E402

from mappa_train.config import AlgorithmConfig, ModelConfig, OptimConfig, PolicyConfig, load_config  # noqa: E402
from mappa_train.distributed import SINGLE, Processes, processes_from_launch  # noqa: E402
from mappa_train.learner import Optimisation, update  # noqa: E402
from mappa_train.policy import TeamModel  # noqa: E402
from mappa_train.report import read_scalars  # noqa: E402
from mappa_train.rollout import ActionSample, EpisodeResult, RolloutTimes  # noqa: E402
from mappa_train.trainer import check_launch  # noqa: E402

AGENTS = ["solver", "checker"]
REWARDS = {"solver": [0.9, 0.1, 0.5, 0.7, 0.2], "checker": [0.3, 0.8, 0.6]}  # odd counts: uneven shares
SETTINGS = {  # each estimator normalises or baselines over the whole batch: a rank-local one would differ
    "reinforce_pp, recorded log-probs, KL to the reference": dict(estimator="reinforce_pp", kl_coef=0.05),
    "grpo, log-probs recomputed, no KL": dict(estimator="grpo", kl_coef=0.0, recompute_old_logprobs=True),
}


def _team_and_batch():
    team = TeamModel(AGENTS, ModelConfig(path="tiny-random", dtype="float32", device="cpu", max_new_tokens=6),
                     PolicyConfig(lora_rank=4, lora_alpha=8), seed=0)
    batch = []
    for agent, rewards in REWARDS.items():
        prompt = team.encode_prompt([{"role": "user", "content": f"You are the {agent}. Act."}])
        generations = team.generate([(agent, prompt)] * len(rewards), temperature=1.0, seed=len(rewards))
        batch += [ActionSample(agent=agent, episode=i, task_id=f"t{i % 2}", task_type="regression", action_index=0,
                               generation=g, reward=r) for i, (g, r) in enumerate(zip(generations, rewards))]
    return team, batch


def _update(processes: Processes, settings: dict) -> dict:
    """One update of a fresh team on the fixed batch: its parameters after, and its statistics."""
    team, batch = _team_and_batch()
    initial = {g: [p.detach().clone() for p in team.trainable_parameters(g)] for g in team.groups}
    algorithm = AlgorithmConfig(micro_batch_size=2, updates_per_step=2, **settings)
    optimisation = Optimisation(team, OptimConfig(lr=1e-2, max_grad_norm=1.0), total_updates=2)
    stats = update(team, optimisation, batch, algorithm, mask_truncated=False, seed=7, processes=processes)
    return {"initial": initial, "stats": {g: dataclasses.asdict(s) for g, s in stats.items()},
            "parameters": {g: [p.detach().clone() for p in team.trainable_parameters(g)] for g in team.groups}}


def _in_process_group(rank, world, rendezvous, work, args, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        torch.save(work(Processes(rank=rank, world=world), *args), Path(results) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def run_in_processes(tmp_path, world, work, *args) -> list:
    """``work(processes, *args)`` in ``world`` spawned processes joined over gloo; each one's result, by rank."""
    mp.spawn(_in_process_group, args=(world, str(tmp_path / "rendezvous"), work, args, str(tmp_path)), nprocs=world)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(world)]


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_two_processes_take_the_update_one_process_takes_on_the_whole_batch(tmp_path, settings):
    alone = _update(SINGLE, settings)
    first, second = run_in_processes(tmp_path, 2, _update, settings)

    for group in AGENTS:
        moved = [not torch.equal(a, b) for a, b in zip(alone["initial"][group], alone["parameters"][group])]
        assert any(moved), f"{group}'s adapter did not move: the comparison below would prove nothing"
        for p0, p1, p in zip(first["parameters"][group], second["parameters"][group], alone["parameters"][group]):
            assert torch.equal(p0, p1)  # the processes stay equal: they applied the same summed gradient
            # ... the whole batch's: up to float rounding (the processes' micro-batches pad to other widths), a
            # thousandth of the 1e-2 that Adam moves an element per step
            torch.testing.assert_close(p0, p, rtol=1e-4, atol=1e-5)
        for name in ("actions", "tokens", "reward", "advantage", "kl_to_reference", "policy_loss", "clip_fraction",
                     "approx_kl", "grad_norm", "learning_rate"):  # grad_norm: summed, not averaged, before clipping
            assert first["stats"][group][name] == pytest.approx(alone["stats"][group][name], rel=1e-4, abs=1e-6), name


def _collect_shares(processes: Processes, specs):
    def collect(share, *, seed):  # plays each spec of the share, numbering them as collect does: 0, 1, ...
        episodes = [EpisodeResult(episode=j, task_id=task, task_type="t", seed=seed, outcome={}, samples=[
            ActionSample(agent="solver", episode=j, task_id=task, task_type="t", action_index=0, generation=None)])
            for j, task in enumerate(share)]
        return episodes, RolloutTimes(wall_s=float(processes.rank + 1), episodes_lost=1)

    return processes.collect(collect, specs, seed=processes.seed(11))


def test_episodes_played_in_shares_come_back_in_order_numbered_as_one_process_numbers_them(tmp_path):
    specs = [f"task{i}" for i in range(5)]
    shares = run_in_processes(tmp_path, 2, _collect_shares, specs)
    for episodes, times in shares:  # every process gets them all
        assert [e.task_id for e in episodes] == specs
        assert [e.episode for e in episodes] == [0, 1, 2, 3, 4]
        assert [e.samples[0].episode for e in episodes] == [0, 1, 2, 3, 4]
        assert {e.seed for e in episodes[0::2]} != {e.seed for e in episodes[1::2]}  # each process its own noise
        assert times.wall_s == 2.0 and times.episodes_lost == 2  # the slowest share; the losses of all


def test_a_process_samples_with_its_own_seed_and_one_process_with_the_run_s():
    assert SINGLE.seed(5) == 5
    assert len({Processes(rank=r, world=3).seed(5) for r in range(3)}) == 3


def test_a_sharded_launch_and_what_one_trainer_process_owns_are_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="FSDP.*configs/accelerate/ddp.yaml"):
        processes_from_launch()
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert processes_from_launch() == SINGLE
    config = load_config("tiny", {"generation": {"backend": "vllm"}, "rollout": {"backend": "ray"}})
    with pytest.raises(ValueError, match="2 processes.*generation.backend vllm.*rollout.backend ray"):
        check_launch(config, Processes(rank=0, world=2))
    check_launch(config, SINGLE)  # one process runs them


def test_the_shipped_accelerate_config_trains_the_tiny_config_in_two_processes_and_process_0_alone_writes(tmp_path):
    out = tmp_path / "run"
    shipped = Path(mappa_train.__file__).parent / "configs" / "accelerate" / "ddp.yaml"
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(shipped),
                           "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "mappa_train",
                           "--config", "tiny", "--output-dir", str(out), "--run.progress", "false"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1 and proc.stdout.count("step 2/2") == 1  # said once, not per process
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    scalars = read_scalars(out)
    assert [v for _, v in scalars["rollout/episodes"]] == [2.0, 2.0]  # both processes' episodes, gathered
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]
    assert (out / "report.md").is_file() and (out / "final").is_dir()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
