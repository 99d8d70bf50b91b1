"""mappa_train: the reference trainer for MAPPA teams (``python -m mappa_train``).

It trains every agent of a team on its own parameters (a LoRA adapter each by default) from the
per-action rewards an environment reports, talking to environments only through the PettingZoo AEC
API and that reward channel. Read top to bottom: :mod:`mappa_train.config` (settings),
:mod:`mappa_train.policy` (models and topologies), :mod:`mappa_train.rollout` (experience),
:mod:`mappa_train.algorithms` (advantages and losses), :mod:`mappa_train.learner` (the update),
:mod:`mappa_train.trainer` (the loop). See docs/training.md.
"""
