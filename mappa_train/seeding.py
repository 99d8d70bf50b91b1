"""One root seed (``run.seed``), and every other seed derived from it by name.

A seed is never made up with arithmetic at the place that needs it (``seed * 7919 + step`` collides
with ``(seed + 1) * 7919 + step - 7919`` and says nothing about what it seeds). Each random stream
has a name below; its seed is :func:`derive` of the root, the name and the indices that tell its
draws apart (the step, the episode, the parameter group ...), hashed with SHA-256, so it is stable
across processes, platforms and Python versions (unlike ``hash``). A component given a seed treats
it as the root of its own streams, as CleanRL's ``seed + i`` per environment and nanochat's
per-rank seeds do, only named.

The streams, who derives them, and from what:

===================  ==========================================  ====================================
stream               seeds                                       derived by, indices
===================  ==========================================  ====================================
``MODEL_INIT``       the ``tiny-random`` model's initial weights ``TeamModel`` from its seed
``ADAPTER_INIT``     the LoRA adapters' initial weights          ``TeamModel`` from its seed
``TASK_ORDER``       each pass's shuffle of a task type's tasks  ``TaskSampler`` from its seed; type, pass
``EPISODE``          ``env.reset`` of a training episode         the trainer from ``run.seed``; step, episode
``ROLLOUT``          a training step's :func:`collect`           the trainer from ``run.seed``; step
``EVAL_EPISODE``     ``env.reset`` of an evaluation episode      the trainer from ``run.seed``; episode
``EVAL_ROLLOUT``     an evaluation's :func:`collect`             the trainer from ``run.seed``
``GENERATE_CALL``    one batched generation call                 :func:`collect` from its seed; call number
``GROUP``            one parameter group's sampling in a call    ``TeamModel.generate`` from its seed; group
``UPDATE``           a training step's update                    the trainer from ``run.seed``; step
``MINIBATCH``        one group's shuffle into mini-batches       the update from its seed; group
``PROCESS``          one process's share of a ``collect``        ``Processes.seed`` from its seed; rank
===================  ==========================================  ====================================

Evaluation streams take no step: every evaluation (before, during and after training) plays the
same episodes with the same sampling seeds, so the differences between them are the model's.

No library call reseeds a global random generator: sampling runs inside :func:`torch_rng`, which
forks torch's generators, so the caller's random state is the same before and after. Only the
trainer seeds the global generators, once, with the root (they serve what takes no seed, e.g. dropout).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
from collections.abc import Iterator
from typing import Any

MODEL_INIT = "model_init"
ADAPTER_INIT = "adapter_init"
TASK_ORDER = "task_order"
EPISODE = "episode"
ROLLOUT = "rollout"
EVAL_EPISODE = "eval_episode"
EVAL_ROLLOUT = "eval_rollout"
GENERATE_CALL = "generate_call"
GROUP = "group"
UPDATE = "update"
MINIBATCH = "minibatch"
PROCESS = "process"

#: every derived seed is below this: what NumPy's legacy ``np.random.seed``, PettingZoo and torch all accept
SEED_LIMIT = 2**32


def derive(root: int, stream: str, *indices: int | str) -> int:
    """The seed of ``stream`` (one of the names above) at ``indices``, from ``root``: an int in ``[0, 2**32)``.

    The first 4 bytes (big-endian) of the SHA-256 of the JSON list ``[root, stream, *indices]``;
    for instance ``derive(0, EPISODE, 0, 0) == 2963899992``. Distinct roots, streams or indices give
    unrelated seeds; the same ones always give the same seed.
    """
    if not isinstance(stream, str) or not stream:
        raise TypeError(f"a stream is named by a non-empty string, not {stream!r}")
    key = [_integer(root), stream, *(index if isinstance(index, str) else _integer(index) for index in indices)]
    digest = hashlib.sha256(json.dumps(key, separators=(",", ":")).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def _integer(value: Any) -> int:
    if isinstance(value, bool):  # True would pass for 1 and hide a mistaken argument
        raise TypeError(f"seeds and indices are integers or strings, not {value!r}")
    try:
        return operator.index(value)  # numpy integers too
    except TypeError:
        raise TypeError(f"seeds and indices are integers or strings, not {value!r}") from None


@contextlib.contextmanager
def torch_rng(seed: int, device: Any = "cpu") -> Iterator[None]:
    """Inside the block torch draws from ``seed`` (on the CPU and on ``device``); after it, as before it.

    torch's samplers (``torch.multinomial`` in ``generate``, weight initialisers) take their numbers from
    the global generators; this forks them (``torch.random.fork_rng``), seeds the fork and restores
    the caller's states on the way out, so a library call neither depends on nor disturbs them. On a
    CPU device only the CPU generator is seeded: a CUDA reseed there would be queued and land later.
    The fork is process-wide, not per thread: no other thread may draw from torch's global generators
    while the block runs (a component sampling in a thread of its own, as the ``hf:`` coach does, uses
    a ``torch.Generator`` instead).
    """
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
        return
    devices = range(torch.get_device_module(device.type).device_count())
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)  # the CPU generator and every accelerator's, all restored on exit
        yield
