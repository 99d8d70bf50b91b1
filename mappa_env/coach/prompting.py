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

from mappa_env.records import ERROR_STATUSES, CoachRequest, Outcome, StepRecord
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
LATER_CHARS = 3000  # hindsight: the actions after the one judged (one line each, the most relevant first)

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

    The task text and the role's instructions have fields of their own and are not repeated inside what
    the agent saw. What it saw is its opening prompt (``opening``: the workspace, the previous agent's
    message, the rules of its turn) and its own earlier actions, rebuilt from their records (``earlier``:
    each one's code, status, error, output, files changed and online score), together cut to
    ``max_observation_chars`` by giving each part a share, so the code and outcome of every earlier action
    survive on a late action. The reply (``reply``, thinking removed, its code blocks replaced by a
    pointer) and the code that ran (``code``) are cut to the same limit. The tool output is shown as the
    step record holds it, already cut by the environment's ``max_output_chars`` (one limit, set in one
    place). Host paths are scrubbed from everything the tools and the environment wrote
    (:func:`scrub_paths`), never from the agent's own code.
    """
    step = request.step
    limit = max_observation_chars

    def shown(text: str, cut: int | None = None) -> str:
        return (truncate_middle(text, cut) if cut else text) if text else "(empty)"

    # what the agent saw: its opening prompt gets up to a third of the limit when earlier actions follow it
    opening, rest = _split_observation(request)
    room = limit - min(len(opening), limit // 3)
    if request.earlier:
        earlier = _earlier(request.earlier, room)
    else:  # a request recorded before `earlier` existed shows the transcript as the agent saw it
        earlier = truncate_middle(rest.strip(), room)
    opening = truncate_middle(opening, limit // 3 if earlier else limit) if opening else "(empty)"
    return {
        "task_description": request.task_description,
        "role": request.role,
        "role_instructions": request.role_instructions,
        "observation": shown(_without_repeats(request), limit),
        "opening": opening,
        "earlier": earlier or "(none: this is the agent's first action)",
        "action": shown(step.action, limit),
        "reply": shown(_reply_text(step.action), limit),
        "action_number": str(step.action_index + 1),
        "stage_note": "this action ended the agent's turn" if step.ends_stage else "the agent may act again",
        "code": _fenced(truncate_middle(step.code, limit)) if step.code else "(no code: nothing ran)",
        "status": step.status,
        "error": scrub_paths(step.error) or "(none)",
        "stdout": shown(scrub_paths(step.stdout)),
        "stderr": shown(scrub_paths(step.stderr)),
        "workspace_before": _inventory(step.workspace_before),
        "workspace_after": _inventory(step.workspace_after),
        "files_changed": ", ".join(step.files_changed) or "(none)",
        "team": "\n".join(
            f"- {r.name}: reads {', '.join(r.consumes) or '-'}; must save {', '.join(r.produces) or '-'}"
            for r in request.team
        ),
        "upstream": _upstream(request.upstream),
        "later": _later(request),
        "result": _outcome(step.result) if step.result is not None else "(none: this action did not write the result)",
        "findings": _findings(request),
        "outcome": _outcome(request.outcome),
    }


def request_key_material(model: str, messages: list[dict[str, str]], params: Mapping[str, Any]) -> str:
    """The canonical text a cache key is computed from: model, full prompt and sampling parameters."""
    return json.dumps({"model": model, "messages": messages, "params": dict(params)}, sort_keys=True, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------------
# Host paths
# ----------------------------------------------------------------------------------------------------

_NOT_IN_PATH = r"\s'\"`<>()\[\]{},;:"
_PATH_PARTS = rf"(?:/[^{_NOT_IN_PATH}/]+)*?"
_HOST_PATHS = (
    # the episode's workspace, on the host (tempfile.mkdtemp(prefix="mappa-ws-")) and inside bwrap/docker
    (re.compile(rf"(?<![\w.~-]){_PATH_PARTS}/mappa-ws-[^{_NOT_IN_PATH}/]+/"), ""),
    (re.compile(rf"(?<![\w.~-]){_PATH_PARTS}/mappa-ws-[^{_NOT_IN_PATH}/]+(?![^{_NOT_IN_PATH}])"), "."),
    (re.compile(r"(?<![\w.~/-])/workspace/"), ""),
    # installed packages, whichever interpreter or environment they belong to
    (re.compile(rf"(?<![\w.~-]){_PATH_PARTS}/(?:site|dist)-packages/"), ".../"),
    # the standard library: <prefix>/lib/python3.X/
    (re.compile(rf"(?<![\w.~-]){_PATH_PARTS}/lib(?:64)?/python3(?:\.\d+)?t?/"), ".../"),
)


def scrub_paths(text: str) -> str:
    """``text`` without the host paths a traceback or tool output carries, which only distract a coach.

    * the episode's workspace: ``/tmp/mappa-ws-abc123/X_test.pkl`` → ``X_test.pkl`` (the workspace is the
      agents' working directory), ``/workspace/X_test.pkl`` (its path inside the bwrap and docker
      sandboxes) likewise, the bare directory → ``.``;
    * installed packages: ``/work/venv/lib/python3.12/site-packages/sklearn/base.py`` →
      ``.../sklearn/base.py`` (``site-packages`` and ``dist-packages``, under any prefix);
    * the standard library: ``/usr/lib/python3.12/json/decoder.py`` → ``.../json/decoder.py``.

    Other paths are left as they are: the agent may have named them, and they may be the fault.
    """
    for pattern, replacement in _HOST_PATHS:
        text = pattern.sub(replacement, text)
    return text


# ----------------------------------------------------------------------------------------------------
# What the agent saw
# ----------------------------------------------------------------------------------------------------

TASK_REFERENCE = "(the task text, shown under # Task)"
INSTRUCTIONS_REFERENCE = "(the role's instructions, shown under # The agent)"
_ASSISTANT_CUE = "\n\n### assistant\n"  # how mappa_env.envs.transcript.render_messages opens each reply
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)[ \t]*\n.*?(?:```|\Z)", re.S | re.I)  # as text.extract_python_blocks


def _without_repeats(request: CoachRequest) -> str:
    """The agent's prompt with the task text and its instructions (the evidence shows both once) replaced
    by a pointer to where they are, and host paths scrubbed."""
    text = request.observation
    if request.role_instructions.strip():
        text = text.replace(f"### system\n{request.role_instructions}", f"### system\n{INSTRUCTIONS_REFERENCE}")
    if request.task_description.strip():
        text = text.replace(request.task_description.strip(), TASK_REFERENCE)
    return scrub_paths(text)


def _split_observation(request: CoachRequest) -> tuple[str, str]:
    """The agent's opening prompt (its first user message: workspace, previous agent's message, rules)
    and the transcript after it (earlier replies and their results), task and instructions left out."""
    text = _without_repeats(request)
    system = f"### system\n{INSTRUCTIONS_REFERENCE}\n\n"
    text = text[len(system):] if text.startswith(system) else text
    end = text.find(_ASSISTANT_CUE)
    opening, rest = (text[:end], text[end:]) if end >= 0 else (text, "")
    opening = re.sub(r"\n{3,}", "\n\n", opening.removeprefix("### user\n")).strip()
    if rest.strip() == "### assistant":  # only the cue for the reply being judged
        rest = ""
    return opening, rest


def _earlier(steps: tuple[StepRecord, ...], budget: int) -> str:
    """The agent's earlier actions from their records, each within an equal share of ``budget``: its code,
    status, error, output, the files it changed, its online score; a code-less one, its message."""
    share = max(budget // len(steps), 200)
    parts = []
    for step in steps:
        verdict = step.verdict
        score = "" if verdict is None or verdict.score is None else f"; coach score {verdict.score:g}"
        head = f"## Its action {step.action_index + 1}: status {step.status}{score}"
        if step.status == "no_code":
            parts.append(f"{head}\nMessage: {truncate_middle(_reply_text(step.action).strip(), share // 2) or '(empty)'}")
            continue
        lines = [head, _fenced(truncate_middle(step.code, share * 3 // 5))]
        if step.error:
            lines.append(f"Error: {truncate_middle(scrub_paths(step.error), share // 6)}")
        for name, text in (("stdout", step.stdout), ("stderr", step.stderr)):
            if text.strip():
                lines.append(f"{name}:\n{truncate_middle(scrub_paths(text).strip(), share // 6)}")
        lines.append(f"Changed: {', '.join(step.files_changed) or 'nothing'}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _reply_text(action: str) -> str:
    """The reply as the coach reads it: thinking removed, each ```python block replaced by a pointer to
    the code shown on its own."""
    visible = strip_thinking(action)
    count = iter(range(1, 1000))
    text = _FENCE.sub(lambda _: f"[python block {next(count)}: under \"Code run\"]", visible).strip()
    if len(visible) < len(action):
        text += f"\n(its thinking, {len(action) - len(visible)} characters, left out)"
    return text.strip()


def _fenced(code: str) -> str:
    fence = "````" if "```" in code else "```"
    return f"{fence}python\n{code}\n{fence}"


# ----------------------------------------------------------------------------------------------------
# The other agents' actions, results and checks
# ----------------------------------------------------------------------------------------------------


def _inventory(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{p} ({format_size(s)})" for p, s in sorted(sizes.items())) or "(empty)"


def _upstream(steps: tuple[StepRecord, ...]) -> str:
    return _step_lines(steps) if steps else "(none: this is the first agent)"


def _later(request: CoachRequest) -> str:
    """For hindsight coaching, the actions after this one (the trajectory's rest): the evidence for blaming
    this action for a later failure. Bounded by :data:`LATER_CHARS`, the most relevant first: the
    episode's final action, then, newest first, those that failed, wrote a result or a finding, or touched
    a file this action produced or consumed (:func:`_files_of`), then the rest, newest first; what does
    not fit is counted, not shown."""
    if not request.trajectory:
        return "(not known yet: this action is judged as it happens)"
    keys = [(s.agent, s.action_index) for s in request.trajectory]
    here = keys.index((request.role, request.action_index)) if (request.role, request.action_index) in keys else -1
    later = request.trajectory[here + 1:]
    if not later:
        return "(none: this was the episode's last action)"
    files = _files_of(request.step, next((r.produces for r in request.team if r.name == request.role), ()))

    def touched(step: StepRecord) -> list[str]:
        text = f"{step.code}\n{step.error}\n{step.stderr}"
        return [f for f in files if f in step.files_changed or f in text]

    def rank(item: tuple[int, StepRecord]) -> tuple[int, int]:
        number, step = item
        if number == len(later) - 1:
            return 0, 0
        relevant = step.status in ERROR_STATUSES or step.result is not None or step.findings or touched(step)
        return (1 if relevant else 2), -number

    lines, used, left_out = [], 0, 0
    for _, step in sorted(enumerate(later), key=rank):
        line = _step_line(step, touched(step))
        if used + len(line) > LATER_CHARS and lines:
            left_out += 1
            continue
        lines.append(line)
        used += len(line) + 1
    if left_out:
        lines.append(f"- ({left_out} less relevant later actions left out for length)")
    return "\n".join(lines)


def _files_of(step: StepRecord, produces: tuple[str, ...]) -> set[str]:
    """The files an action produced or consumed: those it changed, those its role must save, and the
    workspace files its code names."""
    return {*step.files_changed, *produces, *(f for f in step.workspace_before if f in step.code)}


def _step_lines(steps: tuple[StepRecord, ...]) -> str:
    """One line per action: who, which, its status, the files it changed and its error."""
    return truncate_middle("\n".join(_step_line(step) for step in steps), UPSTREAM_CHARS)


def _step_line(step: StepRecord, touches: list[str] | None = None) -> str:
    saved = ", ".join(step.files_changed) or "nothing"
    line = f"- {step.agent} action {step.action_index + 1}: status {step.status}; changed {saved}"
    if step.error:
        line += f"; error: {truncate_middle(scrub_paths(step.error), UPSTREAM_ERROR_CHARS)}"
    if step.result is not None:
        line += f"; graded result: {_outcome(step.result)}"
    if step.findings:
        line += "; findings: " + "; ".join(f"{f.kind} in {f.file}" for f in step.findings)
    if touches:
        line += f"; involves {', '.join(sorted(touches))}"
    return line


def _findings(request: CoachRequest) -> str:
    """The faults still standing in the saved files after this action, each with the role that owns the file."""
    findings = request.standing_findings()
    if not findings:
        return "(none found)"
    return "\n".join(
        f"- {f.file} (saved by {request.owner_of(f.file) or 'no role: a task file'}): {f.kind}: "
        f"{truncate_middle(scrub_paths(f.message), UPSTREAM_ERROR_CHARS)}"
        for f in findings
    )


def _outcome(outcome: Outcome | None) -> str:
    if outcome is None:
        return "(not known yet)"
    if not outcome.valid:
        return f"INVALID: {scrub_paths(outcome.reason)}"
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(outcome.metrics.items()) if isinstance(v, (int, float)))
    # a grader's own words ("wrong: expected 12, got 13") say more than its numbers; "ok" says nothing
    reason = "" if outcome.reason in ("", "ok") else f" ({scrub_paths(outcome.reason)})"
    return f"valid; {metrics}{reason}"


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
