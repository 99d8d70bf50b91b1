"""The update step: tokens/s against TRL's GRPOTrainer, and peak memory of `lora` against `separate`.

1. Update throughput. The same model (the packaged SmolLM2-135M-Instruct unless ``--model``), the
   same LoRA adapter (rank 16 on q/k/v/o), the same batch (``--prompts`` prompts x ``--samples``
   completions, fixed ``--prompt-tokens`` and ``--completion-tokens``, micro-batches of
   ``--micro-batch``, one optimiser step) and the same objective (GRPO advantages, PPO-clip, token-level
   mean, KL to the adapter-free reference at 0.01) go through ``mappa_train.learner.update`` and through
   TRL's ``GRPOTrainer``, whose generation is replaced by a ``rollout_func`` that returns the same
   pre-made tokens, so that both time only the update: reference log-probs, forward and backward,
   optimiser step. Tokens/s counts trained completion tokens. Steps alternate between the two
   (one of ours after each of TRL's; median of ``--repeats`` after one warm-up each), in one process,
   so machine noise hits both. TRL's timed step also decodes the completions, calls the reward
   function, computes each token's entropy and gathers its metrics, which ours does not.
2. Peak memory. A fresh process per topology builds the three-agent dsbench team (``lora``: one base
   and three adapters; ``separate``: three models plus a frozen reference) and runs one update per
   agent (``--memory-prompts x --samples`` actions each), without and with gradient checkpointing; the
   table shows the peak resident memory and the part of it above the process before the model was
   loaded (torch and the interpreter).

Run: ``python benchmarks/train_step.py [--model PATH] [--repeats 3]``; needs ``pip install trl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

AGENTS = ["data_engineer", "modeler", "analyst"]


def model_directory(path: str | None) -> str:
    from mappa_env.hf_models import packaged_smollm2_dir

    return path or str(packaged_smollm2_dir())


def fixed_batch(vocab: int, args: argparse.Namespace, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """``prompts x samples`` (prompt ids, completion ids) of the requested lengths, no end-of-turn token."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    prompts, completions = [], []
    for _ in range(args.prompts):
        prompt = torch.randint(100, vocab, (args.prompt_tokens,), generator=generator).tolist()
        for _ in range(args.samples):
            prompts.append(prompt)
            completions.append(torch.randint(100, vocab, (args.completion_tokens,), generator=generator).tolist())
    return prompts, completions


def action_samples(agent: str, prompts, completions, rewards, samples_per_prompt: int, logprobs=None) -> list:
    """The fixed batch as ``agent``'s actions; with ``logprobs`` (recorded at sampling) the update reuses them."""
    from mappa_train.policy import Generation
    from mappa_train.rollout import ActionSample

    return [
        ActionSample(agent=agent, episode=i, task_id=f"task-{i // samples_per_prompt}", task_type="regression",
                     action_index=0, reward=reward,
                     generation=Generation(agent=agent, prompt_ids=p, completion_ids=c, truncated=False, text="",
                                           sampling_logprobs=[0.0] * len(c) if logprobs is None else logprobs[i],
                                           from_policy=logprobs is not None))
        for i, (p, c, reward) in enumerate(zip(prompts, completions, rewards))
    ]


# ---------------------------------------------------------------------- ours
class OursStep:
    """One ``mappa_train`` update of a one-agent LoRA team on the fixed batch."""

    def __init__(self, directory: str, args: argparse.Namespace):
        import torch

        from mappa_train.config import AlgorithmConfig, ModelConfig, OptimConfig, PolicyConfig
        from mappa_train.learner import Optimisation
        from mappa_train.policy import TeamModel

        self.team = TeamModel(["agent"], ModelConfig(path=directory, dtype="float32", device="cpu"),
                              PolicyConfig(topology="lora", lora_rank=16, lora_alpha=32))
        self.optimisation = Optimisation(self.team, OptimConfig(lr=1e-5, warmup_ratio=0.0), total_updates=10_000)
        self.config = AlgorithmConfig(estimator="grpo", micro_batch_size=args.micro_batch, kl_coef=0.01)
        prompts, completions = fixed_batch(len(self.team.tokenizer), args)
        # the log-probs a rollout would have recorded (computed once, outside the timed update)
        with torch.no_grad(), self.team.acting("agent") as model:
            recorded, _ = self.team.completion_logprobs(model, prompts, completions)
        rewards = torch.rand(len(prompts), generator=torch.Generator().manual_seed(1)).tolist()
        self.samples = action_samples("agent", prompts, completions, rewards, args.samples,
                                      logprobs=[lp[: len(c)].tolist() for lp, c in zip(recorded, completions)])
        self.tokens = sum(len(c) for c in completions)

    def __call__(self) -> float:
        from mappa_train.learner import update

        began = time.perf_counter()
        stats = update(self.team, self.optimisation, self.samples, self.config, mask_truncated=False, seed=0)
        elapsed = time.perf_counter() - began
        assert stats["agent"].tokens == self.tokens, "every completion token should be trained"
        return elapsed


# ---------------------------------------------------------------------- TRL
class TRLStep:
    """One ``GRPOTrainer`` optimiser step on the fixed batch (generation replaced by the pre-made tokens)."""

    def __init__(self, directory: str, args: argparse.Namespace, workdir: str, between: Callable[[], None]):
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True)
        prompts, completions = fixed_batch(len(tokenizer), args)
        by_prompt = {}
        for index in range(args.prompts):
            by_prompt[f"p{index}"] = (prompts[index * args.samples], completions[index * args.samples: (index + 1) * args.samples])

        def rollout(batch_prompts, trainer):  # the generation TRL would do, replaced by the fixed tokens
            out = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
            seen: dict[str, int] = {}
            for name in batch_prompts:  # each prompt comes num_generations times: one completion each
                prompt, samples = by_prompt[name]
                completion = samples[seen.get(name, 0) % len(samples)]
                seen[name] = seen.get(name, 0) + 1
                out["prompt_ids"].append(prompt)
                out["completion_ids"].append(completion)
                out["logprobs"].append([0.0] * len(completion))
            return out

        def reward(completions, **_):
            return torch.rand(len(completions)).tolist()

        self.times: list[float] = []
        times = self.times

        class StepTimer(TrainerCallback):
            def on_step_begin(self, *_, **__):
                self.began = time.perf_counter()

            def on_step_end(self, *_, **__):
                times.append(time.perf_counter() - self.began)
                between()  # one of our steps after each of TRL's: machine noise hits both alike

        batch = args.prompts * args.samples
        config = GRPOConfig(
            output_dir=workdir, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=batch // args.micro_batch,
            num_generations=args.samples, max_completion_length=args.completion_tokens, beta=0.01, epsilon=0.2,
            loss_type="dapo", learning_rate=1e-5, max_steps=args.repeats + 1, logging_steps=10_000, save_strategy="no",
            report_to=[], disable_tqdm=True, seed=0, dataloader_num_workers=0,
        )
        dataset = Dataset.from_dict({"prompt": [f"p{i}" for i in range(args.prompts)] * (args.repeats + 2)})
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        self.trainer = GRPOTrainer(
            model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
            peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                   task_type="CAUSAL_LM"),
            rollout_func=rollout, callbacks=[StepTimer()],
        )
        self.tokens = sum(len(c) for c in completions)

    def run_all(self) -> list[float]:
        self.trainer.train()
        return self.times


# ---------------------------------------------------------------------- memory
def memory_child(topology: str, directory: str, args: argparse.Namespace) -> None:
    """In a fresh process: RSS before loading, peak RSS after one update per agent of a three-agent team.

    ``args.prompts x args.samples`` actions per agent, one micro-batch of ``args.micro_batch``; with
    ``args.checkpointing`` the activations are recomputed in the backward pass.
    """
    import torch

    from mappa_train.config import AlgorithmConfig, ModelConfig, OptimConfig, PolicyConfig
    from mappa_train.learner import Optimisation, update
    from mappa_train.policy import TeamModel

    torch.set_num_threads(2)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    team = TeamModel(AGENTS, ModelConfig(path=directory, dtype="float32", device="cpu",
                                         gradient_checkpointing=args.checkpointing),
                     PolicyConfig(topology=topology, lora_rank=16, lora_alpha=32))
    optimisation = Optimisation(team, OptimConfig(lr=1e-5), total_updates=10)
    prompts, completions = fixed_batch(len(team.tokenizer), args)
    rewards = [float(i % 2) for i in range(len(prompts))]
    samples = [s for agent in AGENTS for s in action_samples(agent, prompts, completions, rewards, args.samples)]
    update(team, optimisation, samples, AlgorithmConfig(micro_batch_size=args.micro_batch), mask_truncated=False, seed=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_mib": baseline / 1024, "peak_mib": peak / 1024}))


def measure_memory(topology: str, checkpointing: bool, directory: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--memory-child", topology, "--model", directory,
               "--prompts", str(args.memory_prompts), "--samples", str(args.samples),
               "--prompt-tokens", str(args.prompt_tokens), "--completion-tokens", str(args.completion_tokens),
               "--micro-batch", str(args.micro_batch), *(["--checkpointing"] if checkpointing else [])]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory (default: the packaged SmolLM2, converted)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=2, help="completions per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per trainer (after one warm-up)")
    parser.add_argument("--skip", choices=["throughput", "memory"], action="append", default=[])
    parser.add_argument("--memory-prompts", type=int, default=2, help="prompts per agent in the memory part")
    parser.add_argument("--memory-child", choices=["lora", "separate"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    directory = model_directory(args.model)
    if args.memory_child:
        memory_child(args.memory_child, directory, args)
        return

    batch = args.prompts * args.samples
    print(f"model {directory}\nbatch {batch} actions ({args.prompts} prompts x {args.samples}), prompt {args.prompt_tokens} "
          f"+ completion {args.completion_tokens} tokens, micro-batch {args.micro_batch}, LoRA r16 on q/k/v/o, float32, "
          f"{os.cpu_count()} CPU threads\n")
    # memory first: a child's ru_maxrss starts from its parent's peak (it survives fork and exec), so the
    # children must be spawned before this process loads any model
    if "memory" not in args.skip:
        print(f"memory: {args.memory_prompts * args.samples} actions per agent\n")
        print("| topology (3 agents) | gradient checkpointing | peak RSS (MiB) | above the bare process (MiB) | "
              "ratio to separate |\n|---|---|---:|---:|---:|")
        for checkpointing in (False, True):
            rows = {t: measure_memory(t, checkpointing, directory, args) for t in ("lora", "separate")}
            above = {t: r["peak_mib"] - r["baseline_mib"] for t, r in rows.items()}
            for topology, row in rows.items():
                print(f"| {topology} | {'on' if checkpointing else 'off'} | {row['peak_mib']:.0f} | {above[topology]:.0f} | "
                      f"{above[topology] / above['separate']:.2f} |")

    if "throughput" not in args.skip:
        import tempfile

        import torch

        torch.manual_seed(0)
        ours = OursStep(directory, args)
        ours()  # warm-up
        ours_times: list[float] = []
        with tempfile.TemporaryDirectory() as workdir:
            trl = TRLStep(directory, args, workdir, between=lambda: ours_times.append(ours()))
            trl_times = trl.run_all()[1:]  # the first step is TRL's warm-up
        ours_times = ours_times[1:]  # the step after TRL's warm-up, to compare the same positions
        ours_s, trl_s = statistics.median(ours_times), statistics.median(trl_times)
        print("| update (one optimiser step) | seconds (median) | completion tokens/s | ratio |\n|---|---:|---:|---:|")
        print(f"| TRL GRPOTrainer | {trl_s:.2f} | {trl.tokens / trl_s:.0f} | 1.00 |")
        print(f"| mappa_train | {ours_s:.2f} | {ours.tokens / ours_s:.0f} | {trl_s / ours_s:.2f} |")
        print(f"\nall timings (s): mappa_train {[round(t, 2) for t in ours_times]}, TRL {[round(t, 2) for t in trl_times]}\n")

if __name__ == "__main__":
    main()
