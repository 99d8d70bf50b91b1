"""The receipts coach's rules for ``mathchat-v0`` (problem solver → code executor → verifier).

From the evidence only, per role (``verdict["rule"]`` names the rule):

* Problem solver: committed to an answer (a ``\\boxed{}`` or a final number): 7 online, unchecked yet; in
  hindsight, 9 when that answer is right, 3 when it is wrong. No answer: 2.
* Code executor, an action with code: crashed 2, timed out or killed 1, printed nothing 3; printed a
  result that agrees with the solver 8, that disagrees 6 (it may have caught the solver's mistake: the
  verifier decides); in hindsight 9 when the printed result is right, 3 when it is wrong. Its closing
  message: states what its code printed, like the printed result; claims a value its code never printed 1;
  never ran code at all 1 (below a crash: not attempting its job is worse); states no value 5.
* Verifier (its action carries the graded answer): no parsable ``\\boxed{}`` answer 1; right 9; wrong but
  what the executor printed 4 (the executor's fault); wrong and not what the executor printed while the
  executor was right 1; wrong otherwise 2.

Answers are compared with the team's rule checker (``math-verify``, :mod:`mappa_env.envs.mathchat.answers`).
"""

from __future__ import annotations

import re

from mappa_env.records import CoachRequest, StepRecord
from mappa_env.text import prose_of

Judgement = tuple[float, str, str]

_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def judge(req: CoachRequest) -> Judgement:
    """The score, rationale and rule of one mathchat action."""
    role = {"problem_solver": _solver, "code_executor": _executor, "verifier": _verifier}.get(req.role)
    if role is None:
        raise ValueError(f"mathchat-v0 has no role {req.role!r}")
    return role(req)


def proposed_answer(text: str) -> str | None:
    """What a reply puts forward as the answer: its last ``\\boxed{}``, else the last number of its prose."""
    from mappa_env.envs.mathchat.answers import last_boxed

    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER_RE.findall(prose_of(text))
    return numbers[-1].rstrip(".") if numbers else None


def printed_result(record: StepRecord) -> str | None:
    """The last line an action's code printed, or None when it printed nothing."""
    return last_printed_line(record.stdout)


def last_printed_line(stdout: str) -> str | None:
    """The last non-blank line of what code printed (stripped), or None when it printed nothing: the result it
    puts forward."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else None


def same_answer(reference: str | None, answer: str | None) -> bool:
    """Whether two answers are equivalent, by the team's checker (``reference`` read as the gold one)."""
    if reference is None or answer is None:
        return False
    from mappa_env.envs.mathchat.answers import check_answer

    return check_answer(reference, f"\\boxed{{{answer}}}").correct


def _reference(req: CoachRequest) -> str | None:
    graded = req.step.result or req.outcome
    return None if graded is None else graded.extra.get("reference")


def _solver_answer(req: CoachRequest) -> str | None:
    replies = [r for r in req.upstream if r.agent == "problem_solver"]
    return proposed_answer(replies[-1].action) if replies else None


def _last_printed(records) -> str | None:
    ran = [r for r in records if r.agent == "code_executor" and r.status == "ok" and printed_result(r) is not None]
    return printed_result(ran[-1]) if ran else None


def _solver(req: CoachRequest) -> Judgement:
    answer = proposed_answer(req.step.action)
    if answer is None:
        return 2.0, "committed to no answer (no \\boxed{} and no final number)", "no_answer"
    reference = _reference(req)
    if reference is None:
        return 7.0, f"committed to the answer {answer} (not checked yet)", "answered"
    if same_answer(reference, answer):
        return 9.0, f"its answer {answer} is right", "right"
    return 3.0, f"its answer {answer} is wrong (the reference is {reference})", "wrong"


def _executor(req: CoachRequest) -> Judgement:
    step, reference = req.step, _reference(req)
    if step.status in ("timeout", "killed"):
        return 1.0, f"its code was {step.status}: {step.error or 'no result'}", step.status
    if step.status == "error":
        return 2.0, f"its own code failed: {step.error.strip()[:200]}", "own_error"
    if step.status == "no_code":
        return _executor_closing(req)
    printed = printed_result(step)
    if printed is None:
        return 3.0, "its code ran but printed no result", "no_result"
    return _printed_verdict(req, printed, reference, what=f"its code printed {printed}")


def _printed_verdict(req: CoachRequest, printed: str, reference: str | None, *, what: str) -> Judgement:
    if reference is not None:
        if same_answer(reference, printed):
            return 9.0, f"{what}, the right answer", "right"
        return 3.0, f"{what}, which is wrong (the reference is {reference})", "wrong"
    solver = _solver_answer(req)
    if same_answer(printed, solver):
        return 8.0, f"{what}, agreeing with the solver's {solver}", "agrees"
    return 6.0, f"{what}, which disagrees with the solver's {solver}: the verifier decides", "disagrees"


def _executor_closing(req: CoachRequest) -> Judgement:
    printed = _last_printed(req.earlier)
    if not any(r.status != "no_code" for r in req.earlier):
        return 1.0, "never checked the answer with code", "no_check"
    claimed = proposed_answer(req.step.action)
    if claimed is None:
        return 5.0, "closed without stating the result", "no_statement"
    if printed is None or not same_answer(printed, claimed):
        return 1.0, f"claims {claimed}, which its code never printed (last printed: {printed})", "false_claim"
    return _printed_verdict(req, printed, _reference(req), what=f"reports {claimed}, as its code printed")


def _verifier(req: CoachRequest) -> Judgement:
    result = req.step.result or req.outcome
    if result is None:
        raise ValueError("the verifier's action carries the graded answer; this request has none")
    if not result.valid:
        return 1.0, f"gave no answer the checker can read: {result.reason}", "no_answer"
    boxed = result.extra.get("answer")
    if result.extra.get("correct"):
        return 9.0, f"boxed {boxed}, the right answer", "right"
    printed = _last_printed(req.upstream)
    if same_answer(printed, boxed):
        return 4.0, f"boxed {boxed}, what the code executor printed; the executor's result was wrong", "followed_executor"
    if printed is not None and same_answer(result.extra.get("reference"), printed):
        return 1.0, f"boxed {boxed} although the code executor printed the right {printed}", "ignored_executor"
    return 2.0, f"boxed {boxed}, which is wrong (the code executor printed {printed})", "wrong"
