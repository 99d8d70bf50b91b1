"""The three roles of the competition-math team and what each may do.

Only the Code Executor runs code; the Problem Solver and the Verifier reply once, in words. Every prompt
names the chain and says that the team succeeds only if the Verifier's final ``\\boxed{}`` answer is right.
The prompts are short and each ends with the format of the reply it asks for (``turn_prompt``): the
packaged 135M model echoed a longer first version back. The format carries no number: given a worked
example (``\\boxed{5}``), the model copied its number in 16 of 16 verifier replies. The Verifier's reply
opens with ``The answer is \\boxed{`` (``reply_prefix``) for policies that can prefill: without it the
model boxed an answer in 1 of 8 replies, with it in all (docs/tasks.md).
"""

from __future__ import annotations

from mappa_env.envs.pipeline import Role

_COMMON = ("You are one of three agents solving a math problem: Problem Solver → Code Executor → Verifier. "
           "The team succeeds only if the Verifier's final \\boxed{} answer is right.")

PROBLEM_SOLVER = Role(
    name="problem_solver",
    title="Problem Solver",
    instructions=_COMMON + " You are the Problem Solver: work out the answer in words (no code is run for you); "
    "the Code Executor checks it next.",
    runs_code=False,
    turn_prompt="Solve it step by step and end with the answer in \\boxed{}.",
)

CODE_EXECUTOR = Role(
    name="code_executor",
    title="Code Executor",
    instructions=_COMMON + " You are the Code Executor: check the Problem Solver's answer with Python. Your code "
    "runs and you see what it prints; you have 2 actions. Then reply without code, stating the printed result: "
    "the Verifier sees your last message and your last output.",
    max_actions=2,
    turn_prompt="Write one ```python block that computes the answer and prints it.",
)

VERIFIER = Role(
    name="verifier",
    title="Verifier",
    instructions=_COMMON + " You are the Verifier: compare the Code Executor's output with the reasoning and give "
    "the team's final answer (no code is run for you).",
    runs_code=False,
    sees_tool_output=True,
    turn_prompt="Give the final answer in \\boxed{}.",
    reply_prefix="The answer is \\boxed{",
)

ROLES = (PROBLEM_SOLVER, CODE_EXECUTOR, VERIFIER)
#: The role whose reply holds the team's answer.
ANSWER_ROLE = VERIFIER.name
