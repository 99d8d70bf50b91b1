"""A coach request as the analyst's crash on a missing X_test.pkl produces it, with fields to vary."""

from __future__ import annotations

from mappa_env.coach import CoachRequest, RoleInfo
from mappa_env.records import StepRecord
from mappa_env.envs.dsbench.roles import ROLES

TEAM = tuple(RoleInfo(r.name, r.consumes, r.produces) for r in ROLES)


def request(**changes) -> CoachRequest:
    """The analyst's request; ``changes`` name a field of the request or of its step record."""
    step = dict(
        agent="analyst", action="```python\nimport pickle\n```", code="import pickle", num_code_blocks=1,
        action_index=0, ends_stage=False, status="error", stdout="",
        stderr="Traceback...\nFileNotFoundError: [Errno 2] No such file or directory: 'X_test.pkl'",
        error="FileNotFoundError: [Errno 2] No such file or directory: 'X_test.pkl'",
        workspace_before={"train.csv": 10}, workspace_after={"train.csv": 10, "model.pkl": 5}, files_changed=(),
    )
    context = dict(
        env_id="dsbench-v0", task_id="builtin/x", task_type="classification", role_instructions="write submission.csv",
        team=TEAM, task_description="Predict species.", observation="### user\nthe prompt",
        upstream=(StepRecord(agent="data_engineer", action_index=0, action="", status="ok", files_changed=("X_train.pkl",)),),
    )
    changes = {("agent" if k == "role" else k): v for k, v in changes.items()}
    step.update({k: v for k, v in changes.items() if k in step})
    context.update({k: v for k, v in changes.items() if k not in step})
    return CoachRequest(step=StepRecord(**step), **context)
