"""Helpers shared by the environment tests: play scripted replies, build code actions, list child processes."""

from __future__ import annotations

from pathlib import Path


def play(env, replies: dict[str, list[str]], *, seed: int = 0, task_id: str | None = None) -> dict:
    """Reset and play scripted replies (per agent, in order); return each agent's final info."""
    env.reset(seed=seed, options={"task_id": task_id} if task_id else None)
    cursor = {a: 0 for a in replies}
    final = {}
    for agent in env.agent_iter():
        _, _, term, trunc, info = env.last()
        if term or trunc:
            final[agent] = info
            env.step(None)
            continue
        reply = replies[agent][min(cursor[agent], len(replies[agent]) - 1)]
        cursor[agent] += 1
        env.step(reply)
    return final


def code(src: str) -> str:
    return f"```python\n{src}\n```"


def children_of(pid: int) -> set[int]:
    """Live (non-zombie) child processes of ``pid``."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                children.add(int(entry.name))
    return children
