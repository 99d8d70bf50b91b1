"""Several processes, one run: data-parallel rollouts and updates under ``accelerate launch`` (or ``torchrun``).

Started as one process, nothing here does anything (:data:`SINGLE`). Started as N processes (one per
GPU, or N CPU processes over gloo), every process holds the whole team and plays a share of each
step's episodes; then:

* **rollouts**: episode ``i`` of a step is played by process ``i mod N``; the finished episodes are
  gathered onto every process in the order a single process returns them (:meth:`Processes.collect`),
  so every process sees the whole batch, logs the same figures and computes the same advantages;
* **advantages over the global batch**: REINFORCE++ whitens over all of a group's tokens in the step
  and GRPO/RLOO baseline over a task's samples, wherever they were played. Each process computes the
  old and reference log-probs of its share of the rows; a sum over processes (:meth:`Processes.sum`)
  fills in the rest, so the advantages are those of one process holding the whole batch, not of a
  rank-local normalisation that would change the estimator;
* **the update**: every process takes its share of each mini-batch, weighs its loss by its tokens over
  the *whole* mini-batch's, and the gradients are summed over processes (:meth:`Processes.sum_gradients`)
  before clipping: the same step as one process on the whole mini-batch (DDP's all-reduce, per
  parameter group, since each agent's adapter steps on its own optimiser). The processes start from
  process 0's weights (:meth:`Processes.broadcast_parameters`) and stay equal;
* **files**: only process 0 writes (TensorBoard, checkpoints, the export, the report); the others
  read the checkpoint to resume.

Parameters are replicated, not sharded: this is DDP. FSDP and DeepSpeed ZeRO-3 (which the ``separate``
layout of several billion-parameter agents needs, docs/scaling.md) are refused with that said.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from mappa_train import seeding

Item = TypeVar("Item")

#: accelerate sets these for ``--use_fsdp`` / ``--use_deepspeed`` (or their config files)
SHARDED_LAUNCHES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes: ``rank`` of ``world``, and where their messages go
    (``device``: the GPU for NCCL, which carries no CPU tensor; the CPU for gloo)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """The process that writes the run's files and prints its progress."""
        return self.rank == 0

    def share(self, items: Sequence[Item]) -> list[Item]:
        """This process's share of ``items``: every ``world``-th, from position ``rank``."""
        return list(items[self.rank:: self.world])

    def gather(self, mine: Sequence[Item]) -> list[Item]:
        """Every process's ``share``, put back in the order of the sequence they were shared from."""
        if self.world == 1:
            return list(mine)
        shares: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(shares, list(mine))
        merged = []
        for position in range(max(len(share) for share in shares)):
            merged.extend(share[position] for share in shares if position < len(share))
        return merged

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over processes, in place (and returned)."""
        if self.world > 1:
            message = tensor.to(self.device)
            torch.distributed.all_reduce(message, op=torch.distributed.ReduceOp.SUM)
            if message is not tensor:
                tensor.copy_(message)
        return tensor

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Each parameter's gradient summed over processes, in one flat message (a parameter a process's
        share did not reach counts as a zero gradient there)."""
        if self.world == 1:
            return
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        flat = torch.cat([p.grad.reshape(-1) for p in parameters])
        self.sum(flat)
        offset = 0
        for parameter in parameters:
            parameter.grad.copy_(flat[offset: offset + parameter.numel()].view_as(parameter.grad))
            offset += parameter.numel()

    @torch.no_grad()
    def broadcast_parameters(self, parameters: Sequence[torch.Tensor]) -> None:
        """Every process takes process 0's values of ``parameters``."""
        if self.world == 1:
            return
        for parameter in parameters:
            torch.distributed.broadcast(parameter.data, src=0)

    def collect(self, collect: Callable[..., tuple[list, Any]], specs: Sequence[Any], **kwargs: Any) -> tuple[list, Any]:
        """``collect(specs, **kwargs)`` (:func:`mappa_train.rollout.collect` with its team and slots bound) over
        the processes: each plays its share of ``specs``;
        every process gets all episodes, numbered as one process playing ``specs`` would number them, and
        the times of the slowest share (the counts of episodes retried and lost summed)."""
        episodes, times = collect(self.share(specs), **kwargs)
        if self.world == 1:
            return episodes, times
        for episode in episodes:  # the local number j is the j-th of this share: episode rank + j * world
            episode.episode = self.rank + episode.episode * self.world
            for sample in episode.samples:
                sample.episode = episode.episode
        everything = self.gather(episodes)
        all_times = self.gather([times])
        slowest = max(all_times, key=lambda t: t.wall_s)
        slowest.episodes_retried = sum(t.episodes_retried for t in all_times)
        slowest.episodes_lost = sum(t.episodes_lost for t in all_times)
        return everything, slowest

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process (every process gets the same answer)."""
        if self.world == 1:
            return bool(flag)
        return bool(self.sum(torch.tensor([float(bool(flag))])).item())

    def close(self) -> None:
        """Take the process group down (at the end of the run, in every process)."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def seed(self, seed: int) -> int:
        """``seed`` for this process's share of a random stream: ``seed`` itself in one process, else
        ``derive(seed, PROCESS, rank)``, so that no two processes sample with the same noise."""
        if self.world == 1:
            return seed
        return seeding.derive(seed, seeding.PROCESS, self.rank)


SINGLE = Processes()


def processes_from_launch() -> Processes:
    """The processes ``accelerate launch`` / ``torchrun`` started (their ``WORLD_SIZE``), with the process
    group up: NCCL on GPUs, gloo on CPUs. One process (no launcher) gets :data:`SINGLE`.

    Raises ``ValueError`` for a sharded launch (FSDP, DeepSpeed), which this trainer does not do.
    """
    for variable, name in SHARDED_LAUNCHES.items():
        if os.environ.get(variable, "").lower() in ("1", "true"):
            raise ValueError(
                f"the launch asks for {name}, which shards parameters; mappa_train's updates are data-parallel "
                "with every process holding the whole team (DDP). Launch with mappa_train/configs/accelerate/ddp.yaml "
                "(accelerate launch --config_file ... -m mappa_train) or with torchrun")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    from accelerate import PartialState

    # cpu=True where there is no GPU: without it accelerate reports one process while the launcher started N
    state = PartialState(cpu=not torch.cuda.is_available())
    device = str(state.device) if torch.distributed.get_backend() == "nccl" else "cpu"
    return Processes(rank=state.process_index, world=state.num_processes, device=device)


def is_main_process() -> bool:
    """Whether this is process 0 of a launch (or no launch at all): the one that speaks for the run."""
    return int(os.environ.get("RANK", "0")) == 0


def device_of(processes: Processes, configured: str) -> str:
    """The device this process's models go on: with several processes on GPUs, the process's own
    (``cuda:<local rank>``) for ``model.device`` auto or cuda: processes sharing one GPU would not be data-parallel."""
    if processes.device.startswith("cuda") and configured in ("auto", "cuda"):
        return processes.device
    return configured
