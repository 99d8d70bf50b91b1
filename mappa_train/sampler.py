"""Which tasks each training step plays: passes over the split, stratified by task type.

MAPPA trained on 30 classification and 34 regression tasks; a step that drew mostly one kind would
teach the team that kind (and the coach's regression bias made it worse). With ``stratify`` every
step takes each task type in proportion to its share of the split (largest remainders, rotating the
rounding so no type is short-changed over time), and within a type goes through a shuffled pass over
its tasks before repeating any. The sampler's whole state is a few integers and lists, saved in
checkpoints so that a resumed run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from mappa_train.seeding import TASK_ORDER, derive


class TaskSampler:
    """Draws task ids for each step; deterministic given the seed and the step."""

    def __init__(self, tasks: Sequence[tuple[str, str]], *, stratify: bool = True, seed: int = 0):
        """``tasks``: ``(task_id, task_type)`` pairs of the training split; ``seed``: the root of the pass shuffles."""
        if not tasks:
            raise ValueError("the training split has no tasks")
        self.stratify = stratify
        self.seed = seed
        by_type: dict[str, list[str]] = {}
        for task_id, task_type in tasks:
            by_type.setdefault(task_type if stratify else "all", []).append(task_id)
        self.pools = {kind: sorted(ids) for kind, ids in sorted(by_type.items())}
        self.total = sum(len(ids) for ids in self.pools.values())
        self.orders: dict[str, list[str]] = {kind: [] for kind in self.pools}
        self.passes = {kind: 0 for kind in self.pools}
        self.draws = 0

    def next(self, count: int) -> list[str]:
        """The next ``count`` task ids, types in proportion to the split."""
        quotas = self._quotas(count)
        chosen = []
        for kind, quota in quotas.items():
            chosen += [self._take(kind) for _ in range(quota)]
        self.draws += 1
        return chosen

    def _quotas(self, count: int) -> dict[str, int]:
        exact = {kind: count * len(ids) / self.total for kind, ids in self.pools.items()}
        quotas = {kind: int(share) for kind, share in exact.items()}
        names = list(self.pools)
        # largest remainder first; among equal remainders the first in line rotates with every draw
        kinds = sorted(names, key=lambda k: (-(exact[k] - quotas[k]), (names.index(k) - self.draws) % len(names)))
        for kind in kinds[: count - sum(quotas.values())]:
            quotas[kind] += 1
        return quotas

    def _take(self, kind: str) -> str:
        if not self.orders[kind]:
            order = list(self.pools[kind])
            random.Random(derive(self.seed, TASK_ORDER, kind, self.passes[kind])).shuffle(order)
            self.orders[kind] = order
            self.passes[kind] += 1
        return self.orders[kind].pop()

    def state_dict(self) -> dict[str, Any]:
        return {"orders": {k: list(v) for k, v in self.orders.items()}, "passes": dict(self.passes), "draws": self.draws}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["orders"]) != set(self.pools):
            raise ValueError("the checkpoint's task sampler was built for other task types; resume with the same env.split")
        self.orders = {k: list(v) for k, v in state["orders"].items()}
        self.passes = dict(state["passes"])
        self.draws = int(state["draws"])
