"""mappa_env: multi-agent LLM team environments with per-action process rewards (PettingZoo AEC).

    import mappa_env
    env = mappa_env.make("dsbench-v0")
    env.reset(seed=0)
    for agent in env.agent_iter():
        obs, reward, term, trunc, info = env.last()
        env.step(None if term or trunc else my_policy(agent, obs))

Importing this package never imports torch or transformers.
"""

from __future__ import annotations

from mappa_env.registration import EnvSpec, make, register, registry, spec

__version__ = "0.1.0"
__all__ = ["EnvSpec", "make", "register", "registry", "spec", "__version__"]

register(
    "dsbench-v0",
    "mappa_env.envs.dsbench:env",
    description="Data engineer → modeler → analyst team solving Kaggle-style tabular tasks in a sandbox.",
)
register(
    "mathchat-v0",
    "mappa_env.envs.mathchat:env",
    description="Problem solver → code executor → verifier team solving competition math, answers checked by rule.",
)
