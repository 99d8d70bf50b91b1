"""Episodes per minute of ``rollout.backend ray`` with 1, 2 and 4 workers, against ideal (linear) scaling.

What is timed is a rollout (:func:`mappa_train.rollout.collect`) of mathchat-v0 episodes with one
environment per worker: a scripted team whose replies depend on the prompt alone (no model, so generation
costs nothing), the receipts coach, and a code action of fixed cost (the code executor's code keeps a core
busy for ``--cost-s`` seconds of CPU time, then prints). Ideal is the 1-worker rate times the workers;
since the fixed cost is CPU work, no more than the machine's cores can run at once, so the table also
shows that bound (the 1-worker rate times min(workers, cores)) and the efficiency against it. Beside each
row, as its baseline, the ``local`` backend (threads of this process) with as many environments in flight.

Workers are started (and their environments warmed with one untimed episode each) before the clock
starts; the actor start-up is printed separately. "cores busy" is the whole machine's CPU use during the
timed rollout (``/proc/stat``): where one worker already keeps more than one core busy (the sandbox, Ray and
the driver work beside the code), the cores bound is out of reach, and this column shows why. "bound (CPU time)" is what the machine's CPU
allows: the 1-worker rate times the cores over the cores that rate kept busy (and no more than ideal).

Run: ``python benchmarks/rollout_scaling.py [--workers 1 2 4] [--episodes 16] [--cost-s 1.0]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mappa_env  # noqa: E402

from mappa_train.policy import Generation  # noqa: E402
from mappa_train.rollout import EpisodeSpec, collect  # noqa: E402

ENV_ID = "mathchat-v0"


class FixedCostTeam:
    """Prompt-determined replies; the code executor's code spins for ``cost_s`` CPU seconds before printing."""

    def __init__(self, cost_s: float):
        self.cost_s = cost_s

    def encode_prompt(self, messages, reply_prefix="", *, agent=None):
        return [ord(c) for c in messages[-1]["content"] + reply_prefix]

    def generate(self, requests, *, temperature, top_p=1.0, seed=None):
        out = []
        for agent, prompt_ids in requests:
            number = sum(prompt_ids) % 97
            if agent == "code_executor":
                text = ("```python\nimport time\nstart = time.process_time()\n"
                        f"while time.process_time() - start < {self.cost_s}:\n    pass\nprint({number})\n```")
            else:
                text = rf"\boxed{{{number}}}"
            out.append(Generation(agent=agent, prompt_ids=list(prompt_ids), completion_ids=[1], sampling_logprobs=[-1.0],
                                  truncated=False, text=text, from_policy=True))
        return out


def specs(count: int, offset: int = 0) -> list[EpisodeSpec]:
    tasks = [t.id for t in mappa_env.make(ENV_ID, split="heldout").unwrapped.tasks]
    return [EpisodeSpec(tasks[(offset + i) % len(tasks)], seed=offset + i) for i in range(count)]


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (``/proc/stat``): every process counts,
    the sandboxes', Ray's and this driver's alike."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def episodes_per_minute(team: FixedCostTeam, slots, count: int) -> tuple[float, int, float]:
    """The rate of a timed rollout of ``count`` episodes on ``slots`` (after one untimed episode per slot), its
    actions, and the cores it kept busy on average (the machine's busy share times its cores)."""
    collect(team, slots, specs(len(slots), offset=10_000), temperature=1.0)  # warm: workers, imports, sandboxes
    busy, total = cpu_jiffies()
    began = time.perf_counter()
    episodes, times = collect(team, slots, specs(count), temperature=1.0)
    wall = time.perf_counter() - began
    busy_after, total_after = cpu_jiffies()
    assert all(e.samples and not e.lost for e in episodes), "an episode was lost: the figures would be wrong"
    cores_busy = (os.cpu_count() or 1) * (busy_after - busy) / max(1, total_after - total)
    return 60 * len(episodes) / wall, sum(len(e.samples) for e in episodes), cores_busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--episodes", type=int, default=16, help="timed episodes per row")
    parser.add_argument("--cost-s", type=float, default=1.0, help="CPU seconds of the code executor's code")
    args = parser.parse_args()

    import ray

    from mappa_train.ray_rollout import RayEnvPool

    cores = os.cpu_count() or 1
    team = FixedCostTeam(args.cost_s)
    ray.init(include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for workers in args.workers:
            began = time.perf_counter()
            with RayEnvPool(ENV_ID, {"split": "heldout"}, envs=workers, workers=workers) as pool:
                startup_s = time.perf_counter() - began
                remote, actions, remote_busy = episodes_per_minute(team, pool.slots, args.episodes)
            envs = [mappa_env.make(ENV_ID, split="heldout") for _ in range(workers)]
            try:
                local, _, local_busy = episodes_per_minute(team, envs, args.episodes)
            finally:
                for env in envs:
                    env.close()
            rows.append((workers, remote, actions, startup_s, local, remote_busy, local_busy))
    finally:
        ray.shutdown()

    one = next((row for row in rows if row[0] == 1), None)
    base = one[1] if one else None
    # what the CPU allows: one worker's episodes cost base_busy cores for 1/base minutes each, so the cores give
    # at most base * cores / base_busy episodes a minute, whatever the number of workers
    cpu_bound = base * cores / one[5] if one else None
    print(f"rollout.backend ray, {ENV_ID}, scripted team, receipts coach, {args.cost_s:g} CPU s per code action, "
          f"{args.episodes} timed episodes per row, {cores} cores")
    print("| workers | episodes/min (ray) | ideal | efficiency | bound (cores) | efficiency vs bound | cores busy (ray) | "
          "bound (CPU time) | efficiency vs CPU time | episodes/min (local, same in flight) | cores busy (local) | "
          "actor start-up s | actions |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workers, rate, actions, startup_s, local, remote_busy, local_busy in rows:
        ideal = base * workers if base else None
        bound = base * min(workers, cores) if base else None
        cpu = min(ideal, cpu_bound) if base else None
        cells = [str(workers), f"{rate:.1f}", _f(ideal), _ratio(rate, ideal), _f(bound), _ratio(rate, bound),
                 f"{remote_busy:.2f}", _f(cpu), _ratio(rate, cpu), f"{local:.1f}", f"{local_busy:.2f}",
                 f"{startup_s:.1f}", str(actions)]
        print("| " + " | ".join(cells) + " |")


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(value: float, against: float | None) -> str:
    return "-" if not against else f"{value / against:.2f}"


if __name__ == "__main__":
    main()
