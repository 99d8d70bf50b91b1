"""``receipts``: a deterministic, rule-based coach that reads the evidence.

It needs no model and no network, so it is the default for tests, offline runs and as a sanity baseline
for LLM coaches. It follows the rubric of MAPPA's coach:

* Blame follows files and errors. A ``FileNotFoundError`` for a file another role must produce blames
  that role: the agent that tripped over it gets 5 ("failed only because its inputs were missing"),
  the role that never saved the file gets 1 when its stage ends without it.
* An agent's own crash scores 2, a timeout or a killed process 1.
* Ending a stage with every required output present scores 8; without them, 1 (5 when the agent's own
  inputs were missing, since it could not have produced them).
* For the final agent, once the outcome is graded, the score is capped by the quality of the result:
  classification (accuracy or ROC-AUC) ≥ 0.85 → 9, ≥ 0.75 → 8, ≥ 0.65 → 6, ≥ 0.55 → 4, else 3;
  regression (RMSE as % of the target range) < 10 → 9, < 25 → 8, < 50 → 6, else 4. High accuracy with
  a low F1 on a binary task (a majority-class predictor) is capped at 3.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from mappa_env.coach.base import CoachRequest, SyncCoach, Verdict

_MISSING_FILE_RE = re.compile(r"(?:FileNotFoundError|No such file or directory)[^'\"]*['\"]([^'\"]+)['\"]")
_EXC_RE = re.compile(r"^(\w+(?:Error|Exception|Exit|Interrupt))\b", re.M)

SCORE_OWN_ERROR = 2.0
SCORE_TIMEOUT = 1.0
SCORE_BLAMED_UPSTREAM = 5.0
SCORE_MISSING_OUTPUTS = 1.0
SCORE_PROGRESS = 6.0
SCORE_OUTPUTS_DONE = 8.0
SCORE_FINAL_BEST = 9.0
SCORE_BAD_SUBMISSION = 2.0


class ReceiptsCoach(SyncCoach):
    """Deterministic rules over the step's receipts: tool output, files, upstream records, outcome."""

    name = "receipts"
    timing = "online"

    def score(self, request: CoachRequest) -> Verdict:
        score, rationale, rule = self._judge(request)
        return Verdict(score=score, rationale=rationale, coach=self.name, details={"rule": rule})

    def _judge(self, req: CoachRequest) -> tuple[float, str, str]:
        step = req.step
        if step.status in ("timeout", "killed"):
            return SCORE_TIMEOUT, f"the code was {step.status}: {step.error or 'no result'}", step.status
        if step.status == "error":
            return self._judge_error(req)
        if req.is_final_role and req.outcome is not None:
            return self._judge_final(req)
        missing = self._missing_outputs(req)
        role = req.role_info
        if step.ends_stage:
            if not missing:
                return SCORE_OUTPUTS_DONE, f"ended its stage with every required output saved ({', '.join(role.produces)})", "outputs_done"
            blocked = self._missing_inputs(req)
            if blocked:
                return SCORE_BLAMED_UPSTREAM, self._upstream_blame(req, blocked, "could not produce its outputs"), "blocked_upstream"
            return SCORE_MISSING_OUTPUTS, f"ended its stage without saving {', '.join(missing)}, which downstream agents need", "missing_outputs"
        if step.status == "no_code":  # cannot happen: an action without code always ends the stage
            raise AssertionError("no_code action that does not end the stage")
        saved = [f for f in role.produces if f in step.files_changed]
        if saved and not missing:
            return SCORE_OUTPUTS_DONE, f"ran cleanly and saved every required output ({', '.join(role.produces)})", "outputs_done"
        note = f"saved {', '.join(saved)}; still missing {', '.join(missing)}" if saved else "no required output yet"
        return SCORE_PROGRESS, f"ran cleanly ({note})", "progress"

    def _judge_error(self, req: CoachRequest) -> tuple[float, str, str]:
        step = req.step
        evidence = f"{step.error}\n{step.stderr}"
        match = _MISSING_FILE_RE.search(evidence)
        if match:
            filename = match.group(1).rsplit("/", 1)[-1]
            owner = req.owner_of(filename)
            if owner is not None and owner != req.role and filename not in step.workspace_after:
                return SCORE_BLAMED_UPSTREAM, self._upstream_blame(req, [filename], "crashed"), "blocked_upstream"
        exc = _EXC_RE.search(step.error) or _EXC_RE.search(step.stderr)
        kind = exc.group(1) if exc else "an error"
        return SCORE_OWN_ERROR, f"its own code failed with {kind}: {step.error.strip()[:200]}", "own_error"

    def _judge_final(self, req: CoachRequest) -> tuple[float, str, str]:
        outcome = req.outcome
        if not outcome.valid:
            blocked = self._missing_inputs(req)
            if blocked:
                return SCORE_BLAMED_UPSTREAM, self._upstream_blame(req, blocked, "could not submit"), "blocked_upstream"
            return SCORE_BAD_SUBMISSION, f"the submission is invalid: {outcome.reason or 'unknown reason'}", "invalid_submission"
        cap, why = quality_cap(req.task_type, outcome.metrics)
        return min(SCORE_FINAL_BEST, cap), f"valid submission; {why}", "graded"

    @staticmethod
    def _missing_outputs(req: CoachRequest) -> list[str]:
        return [f for f in req.role_info.produces if f not in req.step.workspace_after]

    @staticmethod
    def _missing_inputs(req: CoachRequest) -> list[str]:
        """Inputs of this role that another role should have produced and did not."""
        return [
            f for f in req.role_info.consumes
            if f not in req.step.workspace_after and req.owner_of(f) not in (None, req.role)
        ]

    @staticmethod
    def _upstream_blame(req: CoachRequest, files: list[str], what: str) -> str:
        owners = sorted({req.owner_of(f) or "?" for f in files})
        return f"{what} only because {', '.join(files)} was never saved; that was the job of {', '.join(owners)}"


def quality_cap(task_type: str, metrics: Mapping[str, float]) -> tuple[float, str]:
    """The maximum score a final agent may get for a graded result, with the reason (MAPPA's caps)."""
    if task_type == "regression":
        pct = _finite(metrics.get("rmse_pct_range"))
        if pct is None:
            return 6.0, "no RMSE to judge by"
        for limit, cap in ((10, 9.0), (25, 8.0), (50, 6.0)):
            if pct < limit:
                return cap, f"RMSE is {pct:.1f}% of the target range"
        return 4.0, f"RMSE is {pct:.1f}% of the target range"
    roc_auc, accuracy = _finite(metrics.get("roc_auc")), _finite(metrics.get("accuracy"))
    quality = roc_auc if roc_auc is not None else accuracy
    if quality is None:
        return 6.0, "no accuracy to judge by"
    f1 = _finite(metrics.get("f1"))
    if f1 is not None and quality >= 0.7 and f1 < 0.3:
        return 3.0, f"accuracy {quality:.3f} but F1 only {f1:.3f}: it mostly predicts the majority class"
    for limit, cap in ((0.85, 9.0), (0.75, 8.0), (0.65, 6.0), (0.55, 4.0)):
        if quality >= limit:
            return cap, f"accuracy {quality:.3f}"
    return 3.0, f"accuracy {quality:.3f}"


def _finite(value: float | None) -> float | None:
    """The value, or None when it is missing or NaN (metrics use NaN for "undefined")."""
    return None if value is None or math.isnan(value) else float(value)
