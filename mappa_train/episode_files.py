"""The run's episodes on disk, for the viewer (``python -m mappa_env view runs/<name>``).

Under ``<run>/episodes/``: ``step-NNNNNN.json``, the episodes a training step sampled (the newest
``run.keep_episode_steps`` steps kept), and ``eval-step-NNNNNN.json``, every evaluation's episodes (step 0:
before training). Each is an episode file of :mod:`mappa_env.viewer.episodes`, its text fields cut to
:data:`~mappa_env.viewer.episodes.EPISODE_FILE_TEXT_LIMIT` characters, so a file stays bounded whatever the
agents printed. At the end of the run the trainer writes the page, ``<run>/episodes.html``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mappa_env.viewer import action_entry, episode_entry, read_collection, write_episode_file, write_page
from mappa_env.viewer.episodes import EPISODE_FILE_TEXT_LIMIT, old_step_files

from mappa_train.rollout import EpisodeResult

DIRECTORY = "episodes"
PAGE = "episodes.html"


def entries(episodes: Sequence[EpisodeResult], *, kind: str, label: str, step: int) -> list[dict[str, Any]]:
    """The viewer's entries of ``episodes``: each action's step record with the reward the update got."""
    return [episode_entry(task_id=e.task_id, task_type=e.task_type, seed=e.seed, outcome=e.outcome, lost=e.lost,
                          label=label, step=step, kind=kind,
                          actions=[action_entry({"agent": s.agent, "action_index": s.action_index, **s.step}, s.reward,
                                                limit=EPISODE_FILE_TEXT_LIMIT) for s in e.samples])
            for e in episodes]


def record_step(out: Path, episodes: Sequence[EpisodeResult], *, step: int, keep: int, env_id: str) -> None:
    """Write training step ``step``'s episodes and delete the step files beyond the newest ``keep``."""
    directory = out / DIRECTORY
    write_episode_file(directory / f"step-{step:06d}.json", entries(episodes, kind="training", label=f"step {step}",
                                                                    step=step), kind="training", label=f"step {step}",
                       step=step, env_id=env_id)
    for old in old_step_files(directory.glob("step-*.json"), keep):
        old.unlink()


def record_evaluation(out: Path, episodes: Sequence[EpisodeResult], *, label: str, step: int, env_id: str) -> None:
    """Write an evaluation's episodes (``label``: before, step N, after)."""
    write_episode_file(out / DIRECTORY / f"eval-step-{step:06d}.json",
                       entries(episodes, kind="evaluation", label=label, step=step), kind="evaluation", label=label,
                       step=step, env_id=env_id)


def recorded(out: Path) -> bool:
    """Whether the run in ``out`` has recorded any episode file."""
    return any((out / DIRECTORY).glob("*.json"))


def write_run_page(out: Path) -> Path | None:
    """``<run>/episodes.html`` from the run's episode files (None when the run recorded none)."""
    if not recorded(out):
        return None
    return write_page(read_collection(out), out / PAGE)
