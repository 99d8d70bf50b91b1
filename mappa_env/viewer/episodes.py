"""What the viewer shows, read from each kind of input into one list of episodes.

Inputs:

* an evaluation results file (``python -m mappa_env evaluate``: ``format_version``
  :data:`~mappa_env.records.RECORDS_FORMAT_VERSION`, each episode's steps per agent);
* an *episode file* (this module's format, :data:`EPISODES_FORMAT`): the episodes a training run played at
  one step or in one evaluation, which ``mappa_train`` writes under ``runs/<name>/episodes/``;
* a directory of either, or a training run's directory (its ``episodes/``, and its ``curves.png``).

Every episode becomes one plain mapping (:func:`episode_entry`): its task, where it came from (``label``:
the policy of an evaluation, ``before``/``step N``/``after`` in a run; ``step``: the training step), the
outcome, and its actions in the order they were taken (:func:`action_entry`): the reply, the code's output,
status and duration, the files changed, the coach's verdict, and the reward that reached the trainer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mappa_env.error import Error
from mappa_env.paths import write_text_whole
from mappa_env.records import RECORDS_FORMAT_VERSION, outcome_succeeded, unscored_reason

EPISODES_FORMAT = "mappa-episodes"
EPISODES_FORMAT_VERSION = 1
#: a text field of an episode file is cut to this many characters (its head and tail kept)
EPISODE_FILE_TEXT_LIMIT = 4000


class ViewError(Error, ValueError):
    """An input the viewer cannot read; the message says what to do."""


@dataclass
class Collection:
    """Everything one page shows: a title, the episodes, and a run's curves (PNG bytes) when it has them."""

    title: str
    episodes: list[dict[str, Any]] = field(default_factory=list)
    curves_png: bytes | None = None
    sources: list[str] = field(default_factory=list)


def action_entry(step: Mapping[str, Any], reward: float | None, *, limit: int | None = None) -> dict[str, Any]:
    """One action as the page shows it, from its step record (``infos[agent]["step"]``) and its reward.

    ``limit`` cuts each text field to that many characters (head and tail, the cut said in the middle).
    """
    verdict = step.get("verdict") or {}
    score = verdict.get("score")
    return {
        "agent": str(step.get("agent", "")),
        "index": int(step.get("action_index", 0)),
        "reply": _cut(step.get("action", ""), limit),
        "code": _cut(step.get("code", ""), limit),
        "stdout": _cut(step.get("stdout", ""), limit),
        "stderr": _cut(step.get("stderr", ""), limit),
        "error": _cut(step.get("error", ""), limit),
        "status": str(step.get("status", "")),
        "duration_s": float(step.get("duration_s") or 0.0),
        "files_changed": [str(f) for f in step.get("files_changed", ())],
        "findings": [dict(f) for f in step.get("findings", ())],
        "verdict": {"score": score, "rationale": _cut(verdict.get("rationale", ""), limit),
                    "coach": str(verdict.get("coach", "")),
                    "unscored_reason": None if score is not None else unscored_reason(verdict)},
        "reward": reward,
    }


def episode_entry(*, task_id: str, task_type: str, seed: int | None, outcome: Mapping[str, Any],
                  actions: Sequence[Mapping[str, Any]], label: str = "", step: int | None = None, kind: str = "evaluation",
                  sample: int | None = None, lost: bool = False) -> dict[str, Any]:
    """One episode as the page shows it (``actions`` from :func:`action_entry`, in the order they were taken)."""
    metrics = outcome.get("metrics") or {}
    return {
        "task_id": str(task_id), "task_type": str(task_type), "seed": seed, "sample": sample,
        "label": label, "step": step, "kind": kind, "lost": bool(lost),
        "outcome": {"valid": bool(outcome.get("valid")), "correct": outcome_succeeded(outcome),
                    "reason": str(outcome.get("reason", "") or ""),
                    "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}},
        "actions": [dict(a) for a in actions],
    }


def write_episode_file(path: str | Path, episodes: Sequence[Mapping[str, Any]], *, kind: str, label: str,
                       step: int | None, env_id: str) -> Path:
    """Write ``episodes`` (from :func:`episode_entry`) as one episode file, whole or not at all."""
    data = {"format": EPISODES_FORMAT, "format_version": EPISODES_FORMAT_VERSION, "kind": kind, "label": label,
            "step": step, "env_id": env_id, "episodes": list(episodes)}
    return write_text_whole(path, json.dumps(data, default=str))


def read_collection(path: str | Path) -> Collection:
    """The episodes at ``path``: a results or episode file, a directory of them, or a training run's directory."""
    path = Path(path)
    if not path.exists():
        raise ViewError(f"{path}: no such file or directory; give an evaluation results file (python -m mappa_env "
                        "evaluate writes results/eval-*.json), a directory of them, or a training run (runs/<name>)")
    if path.is_file():
        return Collection(title=path.name, episodes=read_file(path), sources=[str(path)])
    if (path / "episodes").is_dir():
        return _read_run(path)
    files = sorted(p for p in path.glob("*.json") if p.is_file())
    if not files:
        raise ViewError(f"{path} holds no .json results and no episodes/ directory: give an evaluation results file, "
                        "a directory of them, or a training run directory (runs/<name>, written by python -m mappa_train)")
    return Collection(title=path.name, episodes=[e for f in files for e in read_file(f)], sources=[str(f) for f in files])


def read_file(path: Path) -> list[dict[str, Any]]:
    """The episodes of one results file or episode file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ViewError(f"{path} is not complete JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): a file cut "
                        "off while it was written? Write it again (evaluate again, or take the run's other files)") from None
    except UnicodeDecodeError:
        raise ViewError(f"{path} is not a text file: give a JSON results or episode file") from None
    if not isinstance(data, dict) or not isinstance(data.get("episodes"), list):
        raise ViewError(f"{path} is JSON but neither evaluation results nor an episode file (no \"episodes\" list)")
    if data.get("format") == EPISODES_FORMAT:
        _check_version(path, data.get("format_version"), EPISODES_FORMAT_VERSION, "python -m mappa_train")
        return [{**e, "source": path.name} for e in data["episodes"]]
    _check_version(path, data.get("format_version"), RECORDS_FORMAT_VERSION, "python -m mappa_env evaluate")
    label = str(data.get("policy", path.stem))
    return [_evaluated_episode(e, label=label, source=path.name) for e in data["episodes"]]


def _check_version(path: Path, found: Any, expected: int, writer: str) -> None:
    if found != expected:
        raise ViewError(f"{path} has format_version {found!r}; this viewer reads {expected}. It was written by "
                        f"{'an older' if isinstance(found, int) and found < expected else 'another'} version of "
                        f"mappa: write it again with this one ({writer})")


def _evaluated_episode(episode: Mapping[str, Any], *, label: str, source: str) -> dict[str, Any]:
    """An episode of ``python -m mappa_env evaluate``'s results: steps per agent, put back in the order taken."""
    by_key = {}
    for agent, record in (episode.get("agents") or {}).items():
        rewards = list(record.get("step_rewards") or [])
        for i, step in enumerate(record.get("steps") or []):
            step = {"agent": agent, **step}
            by_key[(agent, int(step.get("action_index", i)))] = action_entry(step, rewards[i] if i < len(rewards) else None)
    order = [(r.get("agent"), int(r.get("action_index", 0))) for r in episode.get("records") or []]
    ordered = [by_key.pop(key) for key in order if key in by_key] + list(by_key.values())  # without records: per agent
    entry = episode_entry(task_id=episode.get("task_id", "?"), task_type=episode.get("task_type", "?"),
                          seed=episode.get("seed"), outcome=episode.get("outcome") or {}, actions=ordered, label=label,
                          sample=episode.get("sample"))
    return {**entry, "source": source}


def _read_run(run: Path) -> Collection:
    # by step, a step's training episodes before the evaluation after it (before training: step 0)
    files = sorted((run / "episodes").glob("*.json"), key=lambda p: (_step_of(p), not p.name.startswith("step-")))
    episodes = [e for f in files for e in read_file(f)]
    curves = run / "curves.png"
    return Collection(title=run.name, episodes=episodes, curves_png=curves.read_bytes() if curves.is_file() else None,
                      sources=[str(f) for f in files])


def _step_of(path: Path) -> int:
    digits = re.findall(r"\d+", path.name)
    return int(digits[-1]) if digits else -1


def _natural(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _cut(text: Any, limit: int | None) -> str:
    text = "" if text is None else str(text)
    if limit is None or len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]}\n... [{len(text) - head - tail} characters cut] ...\n{text[-tail:]}"


def old_step_files(files: Iterable[Path], keep: int) -> list[Path]:
    """The training-step episode files beyond the newest ``keep`` (to delete), oldest first."""
    steps = sorted((p for p in files if p.name.startswith("step-")), key=_natural)
    return steps[:-keep] if keep > 0 else steps
