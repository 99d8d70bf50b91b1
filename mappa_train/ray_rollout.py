"""Rollout backend ``ray``: the environments (with their sandboxes and coach calls) live in Ray actors.

Only the environment side of each episode moves (:class:`~mappa_train.rollout.EnvSlot`, plain data in and
out); generation stays batched on the driver as with ``local``. Each :class:`EnvWorker` actor holds several
environments, and the driver sees each of them as a :class:`RemoteSlot`, which :func:`mappa_train.rollout.collect`
drives exactly as it drives a local one: a driver thread per slot waits on its remote call, so the loop that
gathers requests into generation batches is the same code for both backends.

Ray is an optional extra (``pip install -e ".[ray]"``); nothing here is imported by the ``local`` backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mappa_train.rollout import EpisodeSpec, Turn


def _ray():
    try:
        import ray
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise ImportError("rollout.backend 'ray' needs Ray: pip install -e \".[ray]\" (or use rollout.backend local)") from error
    return ray


class EnvWorker:
    """A Ray actor's body: ``count`` environments of ``env_id`` made with ``env_kwargs``, stepped by index."""

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any], count: int):
        import mappa_env

        from mappa_train.rollout import EnvSlot

        self.slots = [EnvSlot(mappa_env.make(env_id, **dict(env_kwargs))) for _ in range(count)]

    def name(self) -> str:
        return self.slots[0].name

    def start(self, index: int, spec: EpisodeSpec) -> Turn:
        return self.slots[index].start(spec)

    def step(self, index: int, reply: str) -> Turn:
        return self.slots[index].step(reply)

    def close(self) -> None:
        for slot in self.slots:
            slot.env.close()


class RemoteSlot:
    """One environment inside an :class:`EnvWorker` actor, with :class:`~mappa_train.rollout.EnvSlot`'s interface."""

    def __init__(self, actor: Any, index: int, name: str):
        self.actor, self.index, self.name = actor, index, name

    def start(self, spec: EpisodeSpec) -> Turn:
        return _ray().get(self.actor.start.remote(self.index, spec))

    def step(self, reply: str) -> Turn:
        return _ray().get(self.actor.step.remote(self.index, reply))


class RayEnvPool:
    """``workers`` actors holding ``envs`` environments between them; :attr:`slots` go to ``collect``.

    Joins the cluster at ``address`` (``None``: start a local one, stopped again by :meth:`close`).
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any], *, envs: int, workers: int,
                 address: str | None = None):
        if workers < 1 or envs < workers:
            raise ValueError(f"rollout.workers must be >= 1 and <= the episodes in flight ({envs}); got {workers}")
        ray = _ray()
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        actor_class = ray.remote(num_cpus=0)(EnvWorker)
        counts = [envs // workers + (i < envs % workers) for i in range(workers)]
        self.actors = [actor_class.remote(env_id, dict(env_kwargs), count) for count in counts]
        names = ray.get([actor.name.remote() for actor in self.actors])
        self.slots: Sequence[RemoteSlot] = [RemoteSlot(actor, i, name)
                                            for actor, count, name in zip(self.actors, counts, names) for i in range(count)]

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            try:
                ray.get(actor.close.remote())
            finally:
                ray.kill(actor)
        self.actors = []
        if self._started:
            ray.shutdown()

    def __enter__(self) -> RayEnvPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
