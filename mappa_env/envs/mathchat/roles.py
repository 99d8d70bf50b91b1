"""The three roles of the competition-math team and what each may do.

Only the Code Executor runs code; the Problem Solver and the Verifier reply once, in words. Every prompt
names the chain, shows the answer format, and says that the team succeeds only if the Verifier's final
``\\boxed{}`` answer is right.
"""

from __future__ import annotations

from mappa_env.envs.pipeline import Role

_COMMON = """\
You are one of three agents solving a math problem as a team: Problem Solver → Code Executor → Verifier. \
The team succeeds only if the Verifier's final answer, written as \\boxed{...}, is right."""

PROBLEM_SOLVER = Role(
    name="problem_solver",
    title="Problem Solver",
    instructions=_COMMON + """

Your role: Problem Solver. Reason step by step, then state your answer on the last line as \\boxed{...}.
Example: "7 + 5 = 12, so the answer is \\boxed{12}."
Your reply goes to the Code Executor, who checks it with Python. No code is run for you.""",
    runs_code=False,
)

CODE_EXECUTOR = Role(
    name="code_executor",
    title="Code Executor",
    instructions=_COMMON + """

Your role: Code Executor. Check the Problem Solver's answer by computing it in Python: write a \
```python block that computes the answer and prints it, for example
```python
print(7 + 5)
```
You see what your code printed and may run code once more. Then reply without code, stating the \
result your code printed. The Verifier sees your last message and your last output.""",
    max_actions=2,
)

VERIFIER = Role(
    name="verifier",
    title="Verifier",
    instructions=_COMMON + """

Your role: Verifier. Compare the Code Executor's output with the reasoning, decide the answer, and give \
it on your last line as \\boxed{...}, for example \\boxed{12}. Your boxed answer is the team's answer. \
No code is run for you.""",
    runs_code=False,
    sees_tool_output=True,
)

ROLES = (PROBLEM_SOLVER, CODE_EXECUTOR, VERIFIER)
#: The role whose reply holds the team's answer.
ANSWER_ROLE = VERIFIER.name
