"""What agents read and what ``render()`` shows: prompts, tool-output messages and transcripts, as text.

Kept apart from the turn logic in :mod:`mappa_env.envs.pipeline`, so that a team's wording changes
without touching when agents act, and the engine's rules change without touching the wording.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from mappa_env.records import Outcome, StepRecord
from mappa_env.text import format_size, truncate_middle

Message = dict[str, str]

TRANSCRIPT_CODE_CHARS = 1500
TRANSCRIPT_OUTPUT_CHARS = 600


def render_messages(messages: Sequence[Mapping[str, str]]) -> str:
    """The text view of chat messages: each message under a ``### role`` header, ending with the cue for the reply."""
    body = "\n\n".join(f"### {m['role']}\n{m['content']}" for m in messages)
    return f"{body}\n\n### assistant\n"


def inventory_text(sizes: Mapping[str, int]) -> str:
    """The workspace as a bullet list of paths and sizes."""
    if not sizes:
        return "(empty)"
    return "\n".join(f"- {path} ({format_size(size)})" for path, size in sorted(sizes.items()))


def opening_messages(*, instructions: str, title: str, task_prompt: str, workspace: Mapping[str, int] | None,
                     handoff: tuple[str, str] | None, max_actions: int, persistent: bool, runs_code: bool = True,
                     tool_output: str | None = None, turn_prompt: str | None = None) -> list[Message]:
    """An agent's first prompt: its role as the system message; the task, the workspace (None: not shown),
    the previous agent's message (``handoff``: that agent's title and text), that agent's last tool output
    when the role sees it, and the rules of its turn (``turn_prompt`` when the role has its own) as the user's."""
    parts = [task_prompt] + ([] if workspace is None else ["## Workspace\n" + inventory_text(workspace)])
    if handoff is not None:
        parts.append(f"## Message from the {handoff[0]}\n{handoff[1]}")
    if tool_output is not None and handoff is not None:
        parts.append(f"## The {handoff[0]}'s last tool output\n{tool_output}")
    if turn_prompt is not None:
        parts.append(turn_prompt)
    elif runs_code:
        memory = "state persists between your replies" if persistent else "a fresh process each time: only files persist between your replies"
        parts.append(
            f"You are the {title}. You have at most {max_actions} actions. "
            f"Each reply's ```python blocks run in your Python process ({memory}). "
            "Reply without a code block when your part is done."
        )
    else:
        parts.append(f"You are the {title}. You have one reply; no code is run for you.")
    return [{"role": "system", "content": instructions}, {"role": "user", "content": "\n\n".join(parts)}]


def tool_output_text(record: StepRecord) -> str:
    """What an action's code produced, as the next agent is shown it: status, error, stdout, stderr."""
    lines = [f"Execution status: {record.status}"]
    if record.error:
        lines.append(f"Error: {record.error}")
    lines.append(f"stdout:\n{record.stdout}" if record.stdout else "stdout: (empty)")
    if record.stderr:
        lines.append(f"stderr:\n{record.stderr}")
    return "\n".join(lines)


def result_message(record: StepRecord, *, max_actions: int) -> str:
    """The user message that answers an action: its tool output, the workspace and the actions left."""
    if record.status == "no_code":
        lines = ["No code block: your stage is over."]
    else:
        lines = [f"Execution status: {record.status}"]
    if record.state_lost:
        lines.append("The Python process was restarted: variables from earlier actions are lost; files in the workspace remain.")
    if record.error:
        lines.append(f"Error: {record.error}")
    if record.stdout:
        lines.append(f"stdout:\n{record.stdout}")
    if record.stderr:
        lines.append(f"stderr:\n{record.stderr}")
    if record.status != "no_code":
        lines.append("## Workspace\n" + inventory_text(record.workspace_after))
        left = max_actions - record.action_index - 1
        lines.append("Your stage is over." if record.ends_stage else f"Actions left: {left}.")
    return "\n\n".join(lines)


def render_transcript(env_id: str, task_id: str, records: Iterable[StepRecord], outcome: Outcome | None) -> str:
    """A readable transcript of an episode so far: every action, its status, output and verdict."""
    lines = [f"=== {env_id} · task {task_id} ==="]
    for step in records:
        verdict = step.verdict
        score = "unscored" if verdict is None or verdict.score is None else f"{verdict.score:.1f}/10"
        rationale = verdict.rationale if verdict is not None else ""
        lines.append(f"--- {step.agent} · action {step.action_index + 1} · {step.status} · coach {score}: {rationale}")
        if step.code:
            lines.append(truncate_middle(step.code, TRANSCRIPT_CODE_CHARS))
        for stream, text in (("stdout", step.stdout), ("stderr", step.stderr)):
            if text:
                lines.append(f"[{stream}] {truncate_middle(text, TRANSCRIPT_OUTPUT_CHARS)}")
    if outcome is not None:
        lines.append(f"=== outcome: {'valid' if outcome.valid else 'invalid'} · {outcome.reason} · {dict(outcome.metrics)}")
    return "\n".join(lines)
