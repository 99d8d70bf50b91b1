"""Reference teams for ``mathchat-v0``: they know the answer, so the tests can check everything around it.

``MathScriptedTeam`` is a test fixture, not a model: it looks the problem it is shown up among the
environment's tasks (:meth:`MathScriptedTeam.bind`) and takes the reference answer from there. The solver
states it, the executor prints it with code that really runs in the sandbox and then reports what it
printed, and the verifier boxes what the executor printed.

The faulty teams each break one role and leave the others right:

* ``math-executor-crash``: the executor's code raises; the solver was right, the verifier boxes its answer.
* ``math-verifier-mismatch``: the verifier boxes something else than what the executor printed.
* ``math-solver-wrong``: the solver proposes a wrong answer; the executor's code prints the right one.
* ``math-executor-wrong``: the executor's code prints a wrong number (the solver was right); it reports
  what it printed and the verifier boxes it.
* ``math-executor-false-claim``: the executor's code prints the right answer, but its closing message
  states another number; the verifier boxes what the code printed.
* ``math-executor-no-code``: the executor replies without code; the verifier boxes the solver's answer.
* ``math-solver-no-answer``: the solver commits to no answer; the executor prints the right one.
* ``math-verifier-no-box``: the verifier agrees with the executor in words but boxes nothing.
* ``math-silent``: every agent answers without an answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mappa_env.policies.base import last_tool_output, num_previous_actions

MATH_FAULTS = {
    "math-executor-crash": "executor-crash",
    "math-verifier-mismatch": "verifier-mismatch",
    "math-solver-wrong": "solver-wrong",
    "math-executor-wrong": "executor-wrong",
    "math-executor-false-claim": "executor-false-claim",
    "math-executor-no-code": "executor-no-code",
    "math-solver-no-answer": "solver-no-answer",
    "math-verifier-no-box": "verifier-no-box",
    "math-silent": "silent",
}
_PROBLEM_HEADER = "# Problem\n"


class MathScriptedTeam:
    """The deterministic ``mathchat-v0`` team (see the module docstring).

    Args:
        tasks: the problems it may be shown (records with ``problem`` and ``answer``); :meth:`bind` sets
            them from an environment instead.
        name: the policy's name in results.
        fault: one of :data:`MATH_FAULTS`' values, or None.
    """

    def __init__(self, tasks: Iterable[Any] | None = None, *, name: str = "scripted", fault: str | None = None):
        self.name = name
        self.fault = fault
        self._answers: dict[str, str] = {}
        if tasks is not None:
            self._index(tasks)

    def bind(self, env: Any) -> None:
        """Learn the answers of ``env``'s tasks (evaluation calls this with the environment it runs)."""
        self._index(env.unwrapped.tasks)

    def _index(self, tasks: Iterable[Any]) -> None:
        self._answers.update({t.problem.strip(): t.answer for t in tasks})

    def act(self, agent: str, observation: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        if self.fault == "silent":
            return "I have nothing to add."
        answer = self._answer(observation["text"])
        if agent == "problem_solver":
            if self.fault == "solver-no-answer":
                return "I could not work this one out; the Code Executor should compute it."
            said = _wrong(answer) if self.fault == "solver-wrong" else answer
            return f"Working it through, the answer is \\boxed{{{said}}}."
        if agent == "code_executor":
            if num_previous_actions(info) == 0:
                if self.fault == "executor-no-code":
                    return "The solver's reasoning looks right to me; no need to run anything."
                code = {"executor-crash": "print(1 / 0)",
                        "executor-wrong": f"print({_wrong(answer)!r})"}.get(self.fault, f"print({answer!r})")
                return f"Let me check it in Python.\n\n```python\n{code}\n```"
            printed = _last_line(last_tool_output(info))
            if printed is None:
                return "My code failed, so I could not check the answer."
            if self.fault == "executor-false-claim":
                return f"My code printed {_wrong(printed)}."
            return f"My code printed {printed}."
        if agent == "verifier":
            if self.fault == "executor-crash":
                return f"The code failed, but the solver's reasoning holds: \\boxed{{{answer}}}"
            if self.fault == "executor-no-code":
                return f"No code was run, but the solver's reasoning holds: \\boxed{{{answer}}}"
            printed = _last_line(_section(observation["text"], "last tool output")) or answer
            if self.fault == "verifier-no-box":
                return f"The executor's code printed {printed}, and I agree with it."
            boxed = _wrong(printed) if self.fault == "verifier-mismatch" else printed
            return f"The executor's code printed {printed}. Final answer: \\boxed{{{boxed}}}"
        raise ValueError(f"{self.name}: mathchat-v0 has no role {agent!r}")

    def _answer(self, text: str) -> str:
        start = text.find(_PROBLEM_HEADER)
        shown = text[start + len(_PROBLEM_HEADER):] if start >= 0 else ""
        # the problem is followed by whatever the turn shows next: the longest known problem it starts with
        known = [p for p in self._answers if shown.startswith(p)]
        if not known:
            raise ValueError(f"{self.name}: this problem is not among the tasks it was given; bind it to the "
                             "environment (team.bind(env)) or pass tasks=")
        return self._answers[max(known, key=len)]


def _wrong(answer: str) -> str:
    """A different answer of the same kind: an integer plus one, else the answer with 1 appended."""
    try:
        return str(int(answer.replace(",", "")) + 1)
    except ValueError:
        return f"{answer}1"


def _last_line(text: str | None) -> str | None:
    """The last line of a tool output's stdout (the executor's printed result), or None."""
    if not text or "stdout:" not in text:
        return None
    stdout = text.split("stdout:", 1)[1].split("\n\n", 1)[0]  # a prompt's sections are apart by blank lines
    for stop in ("\nstderr:", "\n## ", "\nYour stage", "\nActions left"):
        stdout = stdout.split(stop, 1)[0]
    lines = [line.strip() for line in stdout.splitlines() if line.strip() and line.strip() != "(empty)"]
    return lines[-1] if lines else None


def _section(text: str, title: str) -> str | None:
    """The body of the prompt section whose header contains ``title``."""
    for part in text.split("\n## "):
        if title in part.split("\n", 1)[0]:
            return part.split("\n", 1)[1] if "\n" in part else ""
    return None
