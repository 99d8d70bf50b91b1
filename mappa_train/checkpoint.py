"""Checkpoints written atomically, and found again after a hard kill.

A checkpoint is a directory ``checkpoints/step-<N>`` holding ``state.pt``: every group's trainable
tensors, optimiser and scheduler states, the task sampler, the random states of Python, NumPy and
torch, the step and the configuration. It is written under a temporary name and renamed into place,
so a run killed at any moment leaves either the previous checkpoint or the new one, never half of one.
The newest complete checkpoint is the one to resume from; older ones beyond ``keep`` are removed.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "step-"


def save(directory: Path, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` (plus random states) as checkpoint ``step`` and prune old ones; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{step}"
    tmp = directory / f".tmp-{PREFIX}{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    payload = {**state, "step": step, "random": random_states()}
    torch.save(payload, tmp / "state.pt")
    with open(tmp / "state.pt", "rb") as handle:
        os.fsync(handle.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(checkpoints(directory))[:-keep]:
        shutil.rmtree(directory / f"{PREFIX}{old}", ignore_errors=True)
    return final


def checkpoints(directory: Path) -> list[int]:
    """Steps of the complete checkpoints in ``directory`` (temporary ones are ignored)."""
    if not directory.is_dir():
        return []
    steps = []
    for entry in directory.iterdir():
        if entry.name.startswith(PREFIX) and (entry / "state.pt").is_file():
            try:
                steps.append(int(entry.name[len(PREFIX):]))
            except ValueError:
                continue
    return sorted(steps)


def load_latest(directory: Path) -> dict[str, Any] | None:
    """The newest complete checkpoint's state, with random states restored; None when there is none."""
    steps = checkpoints(directory)
    if not steps:
        return None
    state = torch.load(directory / f"{PREFIX}{steps[-1]}" / "state.pt", map_location="cpu", weights_only=False)
    restore_random_states(state["random"])
    return state


def random_states() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
