"""mappa_train: the reference trainer for MAPPA teams (``python -m mappa_train``).

It trains every agent of a team on its own parameters (a LoRA adapter each by default) from the
per-action rewards an environment reports, talking to environments only through the PettingZoo AEC
API, that reward channel and what the environment declares of itself (``env.unwrapped.scorecard``:
task types, metrics, the results table; ``env.unwrapped.tasks``). It knows no team.

One coach serves the whole run: the trainer builds it with ``mappa_env.coach.make_coach(env.coach,
**env.coach_kwargs)``, the same names and options an environment takes, and hands that instance to
every environment it makes, so the response cache, the in-flight limit and the counters are shared.
Environments given an instance leave it open; the trainer closes it at the end.

Read top to bottom: :mod:`mappa_train.config` (settings), :mod:`mappa_train.policy` (models and
topologies), :mod:`mappa_train.rollout` (experience), :mod:`mappa_train.algorithms` (advantages and
losses), :mod:`mappa_train.learner` (the update), :mod:`mappa_train.trainer` (the loop),
:mod:`mappa_train.report` (report.md and its curves). See docs/training.md.
"""
