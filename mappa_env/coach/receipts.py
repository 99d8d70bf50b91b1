"""``receipts``: a deterministic, rule-based coach that reads the evidence.

It needs no model and no network, so it is the default for tests, offline runs and as a sanity baseline
for LLM coaches. A team may bring rules of its own (:data:`TEAM_RULES`: ``mathchat-v0``'s are in
:mod:`mappa_env.coach.math_receipts`); for every other team it follows the rubric of MAPPA's coach, with
the evidence on the action that earned it:

* Blame follows files, errors and findings. A ``FileNotFoundError`` for a file another role must produce,
  or a crash or invalid submission built on an input the team's checks found faulty (ids not in
  ``test.csv``, target leakage) or on an input whose producer hid an error, blames that role: the agent
  that tripped over it gets 5 ("failed only because its inputs were bad"). A correct diagnosis of such a
  fault without code also gets 5.
* An agent's own crash scores 2, and so does an exception its code caught and printed instead of
  fixing (a swallowed error); a timeout or a killed process 1.
* Saving a file the checks find faulty scores 2; ending a stage with every required output present and
  sound scores 8, without them (or with a faulty one) 1. A code-less message that claims a file was saved
  when it is not in the workspace scores 0: the next agent would act on it.
* Quality is judged on the action that wrote the result: when an action writes or changes the
  submission, it is graded on the host right then (``StepRecord.result``) and the score is capped by the
  result's relative performance gap (RPG: the share of the way from a constant prediction to a perfect
  score, on the task's own metric): RPG ≥ 0.75 → 9, ≥ 0.5 → 8, ≥ 0.25 → 6, > 0 → 4, else 3, the same for
  every task type. An invalid result scores 2. The closing message after it is judged as a stage end.
* In hindsight (``ReceiptsCoach(timing="hindsight")``, the trajectory in view) the action that should have
  saved a file is the one marked: when an agent's stage ended without one of its outputs, the action that
  saved its other outputs (or its last code action) scores 1 instead of "progress".
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterable, Mapping

from mappa_env.coach.base import CoachRequest, SyncCoach, Timing, Verdict
from mappa_env.records import Finding, StepRecord
from mappa_env.text import prose_of

_MISSING_FILE_RE = re.compile(r"(?:FileNotFoundError|No such file or directory)[^'\"]*['\"]([^'\"]+)['\"]")
_EXC_RE = re.compile(r"^(\w+(?:Error|Exception|Exit|Interrupt))\b", re.M)
_FILE_RE = re.compile(r"[\w./-]+\.(?:pkl|pickle|csv|json|txt|parquet|feather|joblib|npy|npz)\b")
_SENTENCE_RE = re.compile(r"(?:[^.!?\n]|\.(?=\w))+")  # a full stop inside a file name does not end a sentence
_CLAIM_RE = re.compile(r"\b(?:saved|wrote|written|created|stored|exported|generated|produced|dumped)\b", re.I)
_NEGATION_RE = re.compile(r"\b(?:not|never|no|cannot|can't|couldn't|didn't|wasn't|isn't|missing|absent|failed|without)\b|n't\b", re.I)
_PROBLEM_RE = re.compile(
    r"\b(?:missing|not found|never|absent|leak\w*|wrong|not in|faulty|invalid|incorrect|broken|equals?|"
    r"does not exist|doesn't exist|id column|not the test|train(?:ing)? ids)\b", re.I)
_EXCEPT_RE = re.compile(r"^\s*except\b", re.M)
_REPORTED_ERROR_RE = re.compile(r"\b(?:error|exception|failed|failure|traceback)\b", re.I)

SCORE_FALSE_CLAIM = 0.0
SCORE_TIMEOUT = 1.0
SCORE_MISSING_OUTPUTS = 1.0
SCORE_OWN_ERROR = 2.0
SCORE_FAULTY_OUTPUT = 2.0
SCORE_BAD_SUBMISSION = 2.0
SCORE_BLAMED_UPSTREAM = 5.0
SCORE_PROGRESS = 6.0
SCORE_OUTPUTS_DONE = 8.0
SCORE_FINAL_BEST = 9.0
#: RPG thresholds and the score caps they earn; below the last, 4 when better than a constant, else 3.
RPG_CAPS = ((0.75, 9.0), (0.5, 8.0), (0.25, 6.0))

Judgement = tuple[float, str, str]  # score, rationale, rule
#: Teams whose actions follow rules of their own (``"module:function"``, imported when first needed); every
#: other team is judged by the file-and-error rules of this module.
TEAM_RULES = {"mathchat-v0": "mappa_env.coach.math_receipts:judge"}


class ReceiptsCoach(SyncCoach):
    """Deterministic rules over the step's receipts: tool output, files, findings, results, upstream records.

    Args:
        timing: ``"online"`` (default: score each action as it happens) or ``"hindsight"`` (score when the
            episode ends, with the trajectory in view, so an omission is blamed on the action that made it).
    """

    name = "receipts"

    def __init__(self, timing: Timing = "online"):
        if timing not in ("online", "hindsight"):
            raise ValueError(f"timing must be 'online' or 'hindsight', got {timing!r}")
        self.timing = timing

    def score(self, request: CoachRequest) -> Verdict:
        score, rationale, rule = self._judge(request)
        return Verdict(score=score, rationale=rationale, coach=self.name, details={"rule": rule})

    def _judge(self, req: CoachRequest) -> Judgement:
        team_rules = TEAM_RULES.get(req.env_id)
        if team_rules is not None:
            module, _, function = team_rules.partition(":")
            return getattr(importlib.import_module(module), function)(req)
        step = req.step
        if step.status in ("timeout", "killed"):
            return SCORE_TIMEOUT, f"the code was {step.status}: {step.error or 'no result'}", step.status
        if step.status == "no_code":
            claimed = false_claims(req)
            if claimed:
                return (SCORE_FALSE_CLAIM, f"claims {', '.join(claimed)} was saved, but it is not in the workspace",
                        "false_claim")
        if step.status == "error":
            return self._judge_error(req)
        if step.findings:
            return SCORE_FAULTY_OUTPUT, f"saved faulty output: {_quote(step.findings)}", "faulty_output"
        swallowed = swallowed_error(step)
        if swallowed:
            return (SCORE_OWN_ERROR, f"its code caught an exception and went on instead of fixing it: {swallowed!r}",
                    "swallowed_error")
        if step.result is not None:
            return self._judge_result(req)
        if req.is_final_role and req.outcome is not None:
            return self._judge_episode_end(req)
        if step.ends_stage:
            return self._judge_stage_end(req)
        if step.status == "no_code":  # cannot happen: an action without code always ends the stage
            raise AssertionError("no_code action that does not end the stage")
        omitted = self._omitted_outputs(req)
        if omitted:
            return (SCORE_MISSING_OUTPUTS, f"this action should have saved {', '.join(omitted)}: the stage ended "
                    "without it", "omitted_output")
        role = req.role_info
        missing = _missing_outputs(req)
        saved = [f for f in role.produces if f in step.files_changed]
        if saved and not missing:
            return SCORE_OUTPUTS_DONE, f"ran cleanly and saved every required output ({', '.join(role.produces)})", "outputs_done"
        note = f"saved {', '.join(saved)}; still missing {', '.join(missing)}" if saved else "no required output yet"
        return SCORE_PROGRESS, f"ran cleanly ({note})", "progress"

    def _judge_error(self, req: CoachRequest) -> Judgement:
        step = req.step
        evidence = f"{step.error}\n{step.stderr}"
        match = _MISSING_FILE_RE.search(evidence)
        if match:
            filename = match.group(1).rsplit("/", 1)[-1]
            owner = req.owner_of(filename)
            if owner is not None and owner != req.role and filename not in step.workspace_after:
                return SCORE_BLAMED_UPSTREAM, _upstream_blame(req, [filename], "crashed"), "blocked_upstream"
        faulty = _faulty_inputs(req)
        if faulty:
            return SCORE_BLAMED_UPSTREAM, f"crashed on faulty inputs: {faulty}", "blocked_upstream"
        exc = _EXC_RE.search(step.error) or _EXC_RE.search(step.stderr)
        kind = exc.group(1) if exc else "an error"
        return SCORE_OWN_ERROR, f"its own code failed with {kind}: {step.error.strip()[:200]}", "own_error"

    def _judge_result(self, req: CoachRequest) -> Judgement:
        """The action wrote the team's result: judge it by its grade."""
        result = req.step.result
        faulty = _faulty_inputs(req)
        if not result.valid:
            if faulty:
                return (SCORE_BLAMED_UPSTREAM, f"its result is invalid ({result.reason}) because of faulty inputs: "
                        f"{faulty}", "blocked_upstream")
            return SCORE_BAD_SUBMISSION, f"wrote an invalid result: {result.reason or 'unknown reason'}", "invalid_result"
        cap, why = quality_cap(result.metrics)
        if faulty:  # the quality is not this agent's doing: never below "blocked"
            return (max(min(SCORE_FINAL_BEST, cap), SCORE_BLAMED_UPSTREAM),
                    f"wrote a valid result; {why}; its inputs were faulty: {faulty}", "graded_upstream_fault")
        return min(SCORE_FINAL_BEST, cap), f"wrote a valid result; {why}", "graded"

    def _judge_episode_end(self, req: CoachRequest) -> Judgement:
        """The final agent's last action did not touch the result: judge the stage it closes."""
        outcome = req.outcome
        if outcome.valid:
            return (SCORE_OUTPUTS_DONE, "closed the episode with a valid result (its quality is judged on the action "
                    "that wrote it)", "outputs_done")
        blocked = _missing_inputs(req)
        if blocked:
            return SCORE_BLAMED_UPSTREAM, _upstream_blame(req, blocked, "could not submit"), "blocked_upstream"
        faulty = _faulty_inputs(req)
        if faulty:
            return SCORE_BLAMED_UPSTREAM, f"could not submit a valid result because of faulty inputs: {faulty}", "blocked_upstream"
        return (SCORE_MISSING_OUTPUTS, f"ended the episode without a valid result: {outcome.reason or 'unknown reason'}",
                "missing_outputs")

    def _judge_stage_end(self, req: CoachRequest) -> Judgement:
        role = req.role_info
        missing = _missing_outputs(req)
        own_faults = [f.message for f in req.standing_findings() if f.file in role.produces] + [
            f"{path} comes from an action that hid an error ({error!r})"
            for path, record in req.latest_writers().items()
            if path in role.produces and (error := swallowed_error(record))
        ]
        if not missing and not own_faults:
            return SCORE_OUTPUTS_DONE, f"ended its stage with every required output saved ({', '.join(role.produces)})", "outputs_done"
        blocked = _missing_inputs(req)
        if blocked:
            return SCORE_BLAMED_UPSTREAM, _upstream_blame(req, blocked, "could not produce its outputs"), "blocked_upstream"
        diagnosed = diagnosed_faults(req)
        if diagnosed:
            return (SCORE_BLAMED_UPSTREAM, f"correctly reports {', '.join(diagnosed)} as faulty or missing, the job of "
                    f"{', '.join(sorted({req.owner_of(f) or '?' for f in diagnosed}))}", "diagnosis")
        if own_faults:
            return SCORE_MISSING_OUTPUTS, f"ended its stage with faulty output: {'; '.join(own_faults)}", "faulty_outputs"
        return SCORE_MISSING_OUTPUTS, f"ended its stage without saving {', '.join(missing)}, which downstream agents need", "missing_outputs"

    @staticmethod
    def _omitted_outputs(req: CoachRequest) -> list[str]:
        """Hindsight: the outputs this action should have saved, when its agent's stage ended without them."""
        own = [r for r in req.trajectory if r.agent == req.role]
        if not own or req.step.status != "ok":
            return []
        missing = [f for f in req.role_info.produces if f not in own[-1].workspace_after]
        if not missing:
            return []
        code_actions = [r for r in own if r.status == "ok"]
        savers = [r for r in code_actions if set(r.files_changed) & set(req.role_info.produces)]
        culprit = savers[-1] if savers else code_actions[-1]
        return missing if culprit.action_index == req.action_index else []


def quality_cap(metrics: Mapping[str, float]) -> tuple[float, str]:
    """The highest score a graded result may earn, with the reason: from its RPG, whatever the task type.

    RPG (``metrics["rpg"]``) is the share of the way from a constant prediction's score to a perfect score
    on the task's own metric (F1 for F1 tasks, ROC-AUC, RMSE, ...), so the same relative quality earns the
    same cap on classification and regression, and a majority-class predictor earns no more than 3.
    """
    rpg = _finite(metrics.get("rpg"))
    if rpg is None:
        return 6.0, "no relative performance gap to judge its quality by"
    primary, baseline = _finite(metrics.get("primary")), _finite(metrics.get("baseline"))
    scored = f"the task's metric is {primary:.4g} against {baseline:.4g} for a constant prediction, " if (
        primary is not None and baseline is not None) else ""
    why = f"{scored}RPG {rpg:.2f}"
    for limit, cap in RPG_CAPS:
        if rpg >= limit:
            return cap, why
    if rpg > 0:
        return 4.0, why
    return 3.0, f"{why}: no better than a constant prediction"


def false_claims(req: CoachRequest) -> list[str]:
    """Files the action's message says were saved that are not in the workspace after it."""
    present = set(req.step.workspace_after)
    claimed = [f for sentence in _sentences(req.step.action) if _CLAIM_RE.search(sentence)
               and not _NEGATION_RE.search(sentence) for f in _FILE_RE.findall(sentence)]
    return sorted({f.rsplit("/", 1)[-1] for f in claimed} - present)


def diagnosed_faults(req: CoachRequest) -> list[str]:
    """Files another role owns that the code-less message correctly reports as missing or faulty."""
    if req.step.status != "no_code":
        return []
    present = set(req.step.workspace_after)
    faulty = {f.file for f in req.standing_findings()}
    at_fault = {f for r in req.team if r.name != req.role for f in r.produces if f not in present or f in faulty}
    named = {f.rsplit("/", 1)[-1] for s in _sentences(req.step.action) if _PROBLEM_RE.search(s)
             for f in _FILE_RE.findall(s)}
    return sorted(named & at_fault)


def swallowed_error(step: StepRecord) -> str:
    """The printed error line of code that caught an exception and ran on, or ``""``."""
    if not _EXCEPT_RE.search(step.code):
        return ""
    return next((line.strip()[:200] for line in step.stdout.splitlines() if _REPORTED_ERROR_RE.search(line)), "")


def _sentences(action: str) -> list[str]:
    prose = prose_of(action)
    return [s.strip() for s in _SENTENCE_RE.findall(prose) if s.strip()]


def _missing_outputs(req: CoachRequest) -> list[str]:
    return [f for f in req.role_info.produces if f not in req.step.workspace_after]


def _missing_inputs(req: CoachRequest) -> list[str]:
    """Inputs of this role that another role should have produced and did not."""
    return [
        f for f in req.role_info.consumes
        if f not in req.step.workspace_after and req.owner_of(f) not in (None, req.role)
    ]


def _faulty_inputs(req: CoachRequest) -> str:
    """What is wrong with the files other roles made before this action, as a sentence naming who is to
    blame; ``""`` when nothing is. Not only this role's own inputs: a leak in ``X_train.pkl`` spoils the
    submission made from a model trained on it."""
    own = set(req.role_info.produces)
    findings = [f for f in req.standing_findings() if f.file not in own and req.owner_of(f.file) != req.role]
    hidden = [
        f"{path} comes from an action of {record.agent} that hid an error ({error!r})"
        for path, record in req.latest_writers(include_self=False).items()
        if path not in own and record.agent != req.role and (error := swallowed_error(record))
    ]
    parts = [f"{f.message} (the job of {req.owner_of(f.file)})" for f in findings] + hidden
    return "; ".join(parts)


def _upstream_blame(req: CoachRequest, files: list[str], what: str) -> str:
    owners = sorted({req.owner_of(f) or "?" for f in files})
    return f"{what} only because {', '.join(files)} was never saved; that was the job of {', '.join(owners)}"


def _quote(findings: Iterable[Finding]) -> str:
    return "; ".join(f.message for f in findings)


def _finite(value: float | None) -> float | None:
    """The value, or None when it is missing or NaN (metrics use NaN for "undefined")."""
    return None if value is None or math.isnan(value) else float(value)
