"""Where a run's environments live (``rollout.backend``): threads of this process, or Ray actors.

:class:`Environments` opens a group of environments of one split at a time (the training split once, each
evaluation's split for that evaluation); :meth:`EnvGroup.slots` is what :func:`mappa_train.rollout.collect`
plays on, and :attr:`EnvGroup.local` an environment of the split in this process, which the trainer reads
for what the team is (its tasks, agents, roles, scorecard) and never steps.

The coach: local environments share the trainer's coach (one cache, one set of limits and totals); each Ray
actor builds its own from ``env.coach`` and ``env.coach_kwargs``, so :meth:`Environments.coach_snapshots`
gathers the running totals of all of them, those of closed groups included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mappa_train.config import TrainConfig


def environment_kwargs(config: TrainConfig, *, split: str) -> dict[str, Any]:
    """The arguments every environment of ``split`` is made with, the coach aside."""
    return {"split": split, "reward_mode": config.env.reward_mode, "sandbox": config.env.sandbox,
            "exec_timeout_s": config.env.exec_timeout_s, **config.env.kwargs}


def make_envs(config: TrainConfig, coach: Any, *, split: str, count: int, calibration: Any = None) -> list[Any]:
    """``count`` environments of ``config.env`` on ``split`` in this process, all sharing ``coach`` (closed again
    if one fails), with ``calibration`` as their ``reward_calibration`` when given."""
    import mappa_env

    kwargs = {**environment_kwargs(config, split=split), "coach": coach}
    if calibration is not None:
        kwargs["reward_calibration"] = calibration
    envs: list[Any] = []
    try:
        for _ in range(count):
            envs.append(mappa_env.make(config.env.id, **kwargs))
    except BaseException:
        for env in envs:
            env.close()
        raise
    return envs


class EnvGroup:
    """Environments of one split, opened by :meth:`Environments.open`; close it (or use ``with``) when done."""

    def __init__(self, local: Any, slots: Sequence[Any], *, pool: Any = None, on_close: Callable[[EnvGroup], None]):
        self.local, self.slots, self.pool = local, list(slots), pool
        self._on_close = on_close

    def coach_snapshots(self) -> list[dict[str, Any]]:
        """The running totals of the coaches that only this group's environments use (none for ``local``)."""
        return self.pool.coach_snapshots() if self.pool is not None else []

    def close(self) -> None:
        try:
            self._on_close(self)
        finally:
            try:
                if self.pool is not None:
                    self.pool.close()
            finally:
                for env in [self.local] if self.pool is not None else self.slots:  # local is slots[0] there
                    env.close()

    def __enter__(self) -> EnvGroup:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Environments:
    """Opens the run's groups of environments on the configured backend, and counts their coaches' work.

    ``coach`` is the trainer's: the local environments use it, and its totals are part of
    :meth:`coach_snapshots` whatever the backend (it probes and audits on either).
    """

    def __init__(self, config: TrainConfig, coach: Any):
        self.config, self.coach = config, coach
        self._open: list[EnvGroup] = []
        self._closed: list[dict[str, Any]] = []  # coach totals of the groups closed so far

    def open(self, split: str, count: int | Callable[[Any], int], *, calibration: Any = None) -> EnvGroup:
        """``count`` environments of ``split`` (plus, for ``ray``, the one in this process that :attr:`EnvGroup.local`
        is), or as many as ``count(env)`` says of that local one (e.g. from its tasks); ``calibration`` is the
        local environments' ``reward_calibration``."""
        config = self.config
        first = make_envs(config, self.coach, split=split, count=1, calibration=calibration)[0]
        try:
            if callable(count):
                count = count(first)
            if config.rollout.backend == "ray":
                from mappa_train.ray_rollout import RayEnvPool

                pool = RayEnvPool(config.env.id, environment_kwargs(config, split=split), envs=count,
                                  workers=min(config.rollout.workers, count), address=config.ray.address,
                                  coach=(config.env.coach, config.env.coach_kwargs),
                                  max_restarts=config.ray.max_restarts)
                group = EnvGroup(first, pool.slots, pool=pool, on_close=self._closing)
            else:
                rest = make_envs(config, self.coach, split=split, count=count - 1, calibration=calibration)
                group = EnvGroup(first, [first, *rest], on_close=self._closing)
        except BaseException:
            first.close()
            raise
        self._open.append(group)
        return group

    def _closing(self, group: EnvGroup) -> None:
        if group in self._open:
            self._open.remove(group)
            self._closed.extend(group.coach_snapshots())

    def coach_snapshots(self) -> list[dict[str, Any]]:
        """The totals of every coach the run used so far: the trainer's, then the workers' (open and closed groups)."""
        stats = getattr(self.coach, "stats", None)
        own = [stats.snapshot()] if stats is not None else []
        return own + self._closed + [s for group in self._open for s in group.coach_snapshots()]

    def close(self) -> None:
        """Close every group still open (the last one opened first)."""
        while self._open:
            self._open[-1].close()
