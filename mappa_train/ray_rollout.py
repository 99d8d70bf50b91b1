"""Rollout backend ``ray``: the environments (with their sandboxes and coach calls) live in Ray actors.

Only the environment side of each episode moves (:class:`~mappa_train.rollout.EnvSlot`, plain data in and
out); generation stays batched on the driver as with ``local``. Each :class:`EnvWorker` actor holds several
environments, and the driver sees each of them as a :class:`RemoteSlot`, which :func:`mappa_train.rollout.collect`
drives exactly as it drives a local one: a driver thread per slot waits on its remote call, so the loop that
gathers requests into generation batches is the same code for both backends.

Each actor builds its own coach from its name and options (one per actor, shared by its environments) and
reports that coach's running totals (:meth:`RayEnvPool.coach_snapshots`). An actor that dies is restarted by
Ray (up to ``max_restarts`` times); the calls in flight on it fail, and :class:`RemoteSlot` turns that into
:class:`~mappa_train.rollout.WorkerLost`, which ``collect`` answers by retrying the episode once.

Ray is an optional extra (``pip install -e ".[ray]"``); nothing here is imported by the ``local`` backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from mappa_train.rollout import EpisodeSpec, Turn, WorkerLost


def _ray():
    try:
        import ray
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise ImportError("rollout.backend 'ray' needs Ray: pip install -e \".[ray]\" (or use rollout.backend local)") from error
    return ray


class EnvWorker:
    """A Ray actor's body: ``count`` environments of ``env_id`` made with ``env_kwargs``, stepped by index.

    ``coach`` (``(name, options)``) is built once here and shared by the actor's environments; without it
    each environment builds the coach its ``env_kwargs`` name (its default when they name none).
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any], count: int,
                 coach: tuple[str, Mapping[str, Any]] | None = None):
        import mappa_env
        from mappa_env.coach import make_coach

        from mappa_train.rollout import EnvSlot

        self.coach = make_coach(coach[0], **dict(coach[1])) if coach else None
        self.episodes: dict[int, str] = {}  # the episode (try) each environment is playing
        kwargs = dict(env_kwargs) if self.coach is None else {**env_kwargs, "coach": self.coach}
        self.slots: list[EnvSlot] = []
        try:
            for _ in range(count):
                self.slots.append(EnvSlot(mappa_env.make(env_id, **kwargs)))
        except BaseException:
            self.close()  # the environments made so far, and the coach
            raise

    def name(self) -> str:
        return self.slots[0].name

    def start(self, index: int, episode: str, spec: EpisodeSpec) -> Turn:
        """Reset environment ``index`` for ``spec``; ``episode`` names this try, for the steps that follow."""
        self.episodes[index] = episode
        return self.slots[index].start(spec)

    def step(self, index: int, episode: str, reply: str) -> Turn:
        # an actor restarted by Ray gets the calls sent while it restarted, for episodes its new environments
        # never began: those are lost, not stepped on a fresh environment
        if self.episodes.get(index) != episode:
            raise WorkerLost(f"environment {index} of this worker holds no episode {episode} (the worker restarted)")
        return self.slots[index].step(reply)

    def coach_snapshot(self) -> dict[str, Any] | None:
        """The running totals of the coach built here (``None`` without one, or for a coach keeping none)."""
        stats = getattr(self.coach, "stats", None)
        return stats.snapshot() if stats is not None else None

    def close(self) -> None:
        from mappa_env.coach import close_coach

        for slot in self.slots:
            slot.env.close()
        self.slots = []
        if self.coach is not None:
            close_coach(self.coach)
            self.coach = None


class RemoteSlot:
    """One environment inside an :class:`EnvWorker` actor, with :class:`~mappa_train.rollout.EnvSlot`'s interface."""

    def __init__(self, actor: Any, index: int, name: str):
        self.actor, self.index, self.name = actor, index, name
        self.episode = ""

    def start(self, spec: EpisodeSpec) -> Turn:
        self.episode = uuid.uuid4().hex  # each try of an episode is its own: a retry is not a continuation
        # a start sent while Ray restarts the actor would fail at once (ActorUnavailableError) and cost a whole
        # episode try; a reset is safe to send again, so it waits for the restart (Ray stops retrying, and
        # raises, once the actor is dead for good). Steps are never re-sent: a step is not safe to repeat.
        return self._call(self.actor.start.options(max_task_retries=-1), spec)

    def step(self, reply: str) -> Turn:
        return self._call(self.actor.step, reply)

    def _call(self, method: Any, argument: Any) -> Turn:
        ray = _ray()
        try:
            return ray.get(method.remote(self.index, self.episode, argument))
        except ray.exceptions.RayActorError as error:  # the process died (or its node): Ray restarts it if it may
            raise WorkerLost(f"the Ray worker holding environment {self.index} of {self.name} died ({error})") from error
        except WorkerLost as error:  # raised in the restarted worker (Ray re-raises it as a subclass)
            raise WorkerLost(str(getattr(error, "cause", error))) from error


class RayEnvPool:
    """``workers`` actors holding ``envs`` environments between them; :attr:`slots` go to ``collect``.

    Joins the cluster at ``address`` (``None``: start a local one, stopped again by :meth:`close`; a pool made
    while Ray is already initialised uses that session and leaves it running). ``coach`` is passed to each
    :class:`EnvWorker`; ``max_restarts`` is how often Ray may restart each actor after it dies.
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any], *, envs: int, workers: int,
                 address: str | None = None, coach: tuple[str, Mapping[str, Any]] | None = None,
                 max_restarts: int = 2):
        if workers < 1 or envs < workers:
            raise ValueError(f"rollout.workers must be >= 1 and <= the episodes in flight ({envs}); got {workers}")
        ray = _ray()
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        # num_cpus=0: the actors mostly wait on sandboxes and coach calls, and must not be refused on a small machine
        actor_class = ray.remote(num_cpus=0, max_restarts=max_restarts)(EnvWorker)
        counts = [envs // workers + (i < envs % workers) for i in range(workers)]
        coach = None if coach is None else (coach[0], dict(coach[1]))
        self.actors = [actor_class.remote(env_id, dict(env_kwargs), count, coach) for count in counts]
        try:
            names = ray.get([actor.name.remote() for actor in self.actors])
        except BaseException:
            self.close()
            raise
        self.slots: Sequence[RemoteSlot] = [RemoteSlot(actor, i, name)
                                            for actor, count, name in zip(self.actors, counts, names) for i in range(count)]

    def coach_snapshots(self) -> list[dict[str, Any]]:
        """Each live actor's coach totals (a restarted actor's count from its restart: its earlier ones died with it)."""
        ray = _ray()
        snapshots = []
        for actor in self.actors:
            try:
                snapshot = ray.get(actor.coach_snapshot.remote())
            except ray.exceptions.RayActorError:
                continue
            if snapshot:
                snapshots.append(snapshot)
        return snapshots

    def close(self) -> None:
        ray = _ray()
        try:
            for actor in self.actors:
                try:
                    ray.get(actor.close.remote())
                except ray.exceptions.RayActorError:
                    pass  # already dead: nothing of it to close
                finally:
                    ray.kill(actor, no_restart=True)
        finally:
            self.actors = []
            if self._started:
                ray.shutdown()
                self._started = False

    def __enter__(self) -> RayEnvPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
