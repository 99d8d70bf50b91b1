"""The base rate of the packaged SmolLM2-135M-Instruct as all three agents of ``mathchat-v0``, per arith level.

For each level, the first ``--problems`` held-out problems are played ``--samples`` times each (sampled at
``--temperature``, at most ``--max-new-tokens`` per reply) by ``hf:smollm2`` with the receipts coach, and
the script prints mean@k, pass@1 and pass@k, the unparsed share and the tool-use rate, as
``python -m mappa_env evaluate --env mathchat-v0 --policy hf:smollm2 --samples K --suite-kwargs '{"levels": [L]}'``
would. The next issue trains on the levels where this is above zero.

Run: ``python benchmarks/math_base_rate.py [--levels 1 2 3 4 5 6] [--problems 5] [--samples 4]``.
"""

from __future__ import annotations

import argparse
import time

from mappa_env.evaluation import evaluate
from mappa_env.policies import make_policy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--problems", type=int, default=5, help="held-out problems per level")
    parser.add_argument("--samples", type=int, default=4, help="episodes per problem (k of mean@k)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); two processes "
                        "on disjoint --levels with 1 thread each use 2 cores better than one with 2")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the sampling")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    team = make_policy("hf:smollm2", env_id="mathchat-v0", temperature=args.temperature,
                       max_new_tokens=args.max_new_tokens)
    lines = [f"| level | problems | samples | mean@{args.samples} (%) | pass@1 (%) | pass@{args.samples} (%) | "
             "Unparsed (%) | Tool use (%) | minutes |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for level in args.levels:
        start = time.perf_counter()
        results = evaluate(team, env_id="mathchat-v0", split="heldout", episodes=args.problems, samples=args.samples,
                           env_kwargs={"suite_kwargs": {"levels": [level]}, "coach": "receipts"}, progress=True)
        row = results["summary"]["by_task_type"]["arith"]
        pass_at = row["pass_at"]
        lines.append(f"| {level} | {row['problems']} | {row['samples']} | {100 * row['mean_at_k']:.1f} | "
                     f"{100 * pass_at[1]:.1f} | {100 * pass_at[max(pass_at)]:.1f} | {100 * row['unparsed_rate']:.1f} | "
                     f"{100 * row['tool_use_rate']:.1f} | {(time.perf_counter() - start) / 60:.1f} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
