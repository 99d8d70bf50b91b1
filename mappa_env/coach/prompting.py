"""Coach prompts (data files the user can override) and strict parsing of the coach's score.

Prompts live in ``mappa_env/coach/prompts/``: one rubric per role of each environment
(``<env_id>/<role>.md``, falling back to ``generic.md``) as the system message, and ``evidence.md``, the
user message, a ``str.format`` template filled from the :class:`CoachRequest`. Pass
``prompt_dir=...`` to a coach to override any of these files: a file found there wins, the packaged one
is the fallback.

The reply must end with a line ``PROCESS_SCORE: <0-10>`` (:func:`parse_reply`). Parsing is strict:
thinking is removed, the score line must be the final non-empty line (or the first, for replies forced
to open with it), and anything else (no line, a number outside 0–10, two numbers on the line, a reply
that goes on after its score line) yields ``None`` with the reason, never a guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from mappa_env.records import CoachRequest, Outcome, StepRecord
from mappa_env.text import format_size, strip_thinking, truncate_middle

PACKAGED_PROMPTS = Path(__file__).parent / "prompts"
#: How the required score line starts, exactly as a coach should write it.
SCORE_LINE_PREFIX = "PROCESS_SCORE: "
_SCORE_LINE = re.compile(r"^\W*PROCESS_SCORE\W*:\s*(.*?)\s*$", re.M | re.I)
# the number, optionally "/10", in bold or backticks, with a full stop: "7", "**9/10**", "`8`", "6."
_NUMBER = re.compile(r"^[`*\s]*(\d+(?:\.\d+)?)\s*(?:/\s*10)?[`*\s]*\.?[`*\s]*$")

ScorePosition = Literal["last", "first"]


@dataclass(frozen=True)
class ParsedReply:
    """What a coach's reply says, read strictly.

    Attributes:
        score: the score, or None.
        problem: why there is none: ``"malformed"`` (no valid score line), ``"misplaced"`` (a score line,
            but not where it must be: e.g. the reply went on after it, "... Final answer: 4"),
            ``"truncated"`` (the reply was cut at the length limit before its score line).
        score_lines: every score line the reply contained (thinking removed), for the audit trail.
    """

    score: float | None
    problem: str | None
    score_lines: tuple[str, ...] = ()

UPSTREAM_CHARS = 4000  # the summary of the earlier agents' actions (one line each)
UPSTREAM_ERROR_CHARS = 300

FORMAT_REMINDER = (
    "Your reply did not end with a valid score line. Reply again with a short analysis and end with "
    "exactly one line of the form\nPROCESS_SCORE: <a number from 0 to 10>"
)


def parse_reply(reply: str, *, truncated: bool = False, position: ScorePosition = "last") -> ParsedReply:
    """Read a coach's reply: its score only from a well-formed score line where the rubric puts it.

    Thinking (``<think>…</think>``, or an unclosed ``<think>`` to the end) is removed first: a draft
    score while reasoning is not the verdict. With ``position="last"`` (the rubric's rule) the score line
    must be the reply's final non-empty line: a reply that goes on after it ("Wait, the cap is 4") has
    changed its mind, and is not taken at its first word. ``position="first"`` is for coaches forced to
    open their reply with it (constrained decoding). A reply cut at the length limit (``truncated``)
    counts only if its score line is where it must be anyway.
    """
    visible = strip_thinking(reply or "")
    lines = [line.strip() for line in visible.splitlines() if line.strip()]
    score_lines = tuple(line for line in lines if _SCORE_LINE.match(line))
    where = (lines[-1] if position == "last" else lines[0]) if lines else ""
    if not _SCORE_LINE.match(where):
        problem = "truncated" if truncated else ("misplaced" if score_lines else "malformed")
        return ParsedReply(None, problem, score_lines)
    number = _NUMBER.match(_SCORE_LINE.match(where).group(1))
    score = float(number.group(1)) if number else None
    if score is None or not 0.0 <= score <= 10.0:
        return ParsedReply(None, "malformed", score_lines)
    return ParsedReply(score, None, score_lines)


def parse_score(reply: str, *, position: ScorePosition = "last") -> float | None:
    """The reply's score (:func:`parse_reply`), or None."""
    return parse_reply(reply, position=position).score


def rationale_of(reply: str, limit: int = 600) -> str:
    """The coach's analysis without its final verdict line, shortened for step records. Earlier score
    lines stay in the text (a draft score that the coach revised is part of the audit trail)."""
    lines = (reply or "").rstrip().splitlines()
    if lines and _SCORE_LINE.match(lines[-1].strip()):
        lines = lines[:-1]
    text = "\n".join(lines).strip()
    return truncate_middle(text, limit) if text else "(no rationale given)"


def build_messages(
    request: CoachRequest,
    *,
    prompt_dir: str | Path | None = None,
    max_observation_chars: int = 6000,
) -> list[dict[str, str]]:
    """The chat messages for one request: the role's rubric, then the evidence."""
    rubric = _read_prompt(request.env_id, f"{request.role}.md", prompt_dir) or _read_prompt("", "generic.md", prompt_dir)
    evidence = _read_prompt("", "evidence.md", prompt_dir)
    if rubric is None or evidence is None:
        raise FileNotFoundError(f"coach prompts missing: neither {prompt_dir} nor {PACKAGED_PROMPTS} has them")
    fields = evidence_fields(request, max_observation_chars=max_observation_chars)
    try:
        user = evidence.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"coach prompt evidence.md has a bad placeholder ({exc}); available fields: {', '.join(sorted(fields))}. "
            "Write literal braces as {{ and }}."
        ) from exc
    return [{"role": "system", "content": rubric.strip()}, {"role": "user", "content": user.strip()}]


def evidence_fields(request: CoachRequest, *, max_observation_chars: int) -> dict[str, str]:
    """Every placeholder ``evidence.md`` may use, as text.

    The agent's prompt, reply and code are cut to ``max_observation_chars``; the tool output is shown as
    the step record holds it, already cut by the environment's ``max_output_chars`` (one limit, set in
    one place).
    """
    step = request.step

    def shown(text: str, limit: int | None = None) -> str:
        return (truncate_middle(text, limit) if limit else text) if text else "(empty)"

    return {
        "task_description": request.task_description,
        "role": request.role,
        "role_instructions": request.role_instructions,
        "observation": shown(request.observation, max_observation_chars),
        "action": shown(step.action, max_observation_chars),
        "action_number": str(step.action_index + 1),
        "stage_note": "this action ended the agent's turn" if step.ends_stage else "the agent may act again",
        "code": shown(step.code, max_observation_chars),
        "status": step.status,
        "error": step.error or "(none)",
        "stdout": shown(step.stdout),
        "stderr": shown(step.stderr),
        "workspace_before": _inventory(step.workspace_before),
        "workspace_after": _inventory(step.workspace_after),
        "files_changed": ", ".join(step.files_changed) or "(none)",
        "team": "\n".join(
            f"- {r.name}: reads {', '.join(r.consumes) or '-'}; must save {', '.join(r.produces) or '-'}"
            for r in request.team
        ),
        "upstream": _upstream(request.upstream),
        "later": _later(request),
        "outcome": _outcome(request.outcome),
    }


def request_key_material(model: str, messages: list[dict[str, str]], params: Mapping[str, Any]) -> str:
    """The canonical text a cache key is computed from: model, full prompt and sampling parameters."""
    return json.dumps({"model": model, "messages": messages, "params": dict(params)}, sort_keys=True, ensure_ascii=False)


def _inventory(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{p} ({format_size(s)})" for p, s in sorted(sizes.items())) or "(empty)"


def _upstream(steps: tuple[StepRecord, ...]) -> str:
    return _step_lines(steps) if steps else "(none: this is the first agent)"


def _later(request: CoachRequest) -> str:
    """For hindsight coaching, the actions after this one (the trajectory's rest): the evidence for blaming
    this action for a later failure."""
    if not request.trajectory:
        return "(not known yet: this action is judged as it happens)"
    keys = [(s.agent, s.action_index) for s in request.trajectory]
    here = keys.index((request.role, request.action_index)) if (request.role, request.action_index) in keys else -1
    later = request.trajectory[here + 1:]
    return _step_lines(later) if later else "(none: this was the episode's last action)"


def _step_lines(steps: tuple[StepRecord, ...]) -> str:
    """One line per action: who, which, its status, the files it changed and its error."""
    lines = []
    for step in steps:
        saved = ", ".join(step.files_changed) or "nothing"
        line = f"- {step.agent} action {step.action_index + 1}: status {step.status}; changed {saved}"
        if step.error:
            line += f"; error: {truncate_middle(step.error, UPSTREAM_ERROR_CHARS)}"
        lines.append(line)
    return truncate_middle("\n".join(lines), UPSTREAM_CHARS)


def _outcome(outcome: Outcome | None) -> str:
    if outcome is None:
        return "(not known yet)"
    if not outcome.valid:
        return f"INVALID submission: {outcome.reason}"
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(outcome.metrics.items()) if isinstance(v, (int, float)))
    return f"valid submission; {metrics}"


def _read_prompt(env_id: str, name: str, prompt_dir: str | Path | None) -> str | None:
    for base in ([Path(prompt_dir)] if prompt_dir else []) + [PACKAGED_PROMPTS]:
        for candidate in ([base / env_id / name] if env_id else []) + ([] if env_id else [base / name]):
            text = _read_cached(str(candidate))
            if text is not None:
                return text
    return None


@lru_cache(maxsize=64)
def _read_cached(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
