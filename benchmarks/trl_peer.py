"""The single-agent peer of ``benchmarks/learning_cpu.py``: TRL's ``GRPOTrainer`` trains mathchat-v0's code executor alone.

Same model as the team (the packaged SmolLM2-135M-Instruct), same LoRA (rank 16, alpha 32 on q/k/v/o), the same
problems (the arith levels' train split; held out: the first ``--heldout`` held-out problems, as the team's
evaluation plays them) and a wall-clock budget. The settings are those measured in ../shared/REFERENCE.md:
learning rate 2e-4 constant, no KL (beta 0), temperature 1 with top-k off, 16 completions per optimiser step in
groups of 8, at most 64 new tokens. The prompt is the team's code executor's (its role, the problem, its turn
prompt), without a Problem Solver's message, as this agent works alone.

Reward, by rule on the executed code: 1 when the reply's ```python code, run in mappa_env's sandbox, prints the
right answer on its last line (mathchat's checker), plus 0.2 when the code runs at all. Held-out accuracy: the
share of held-out problems whose greedy reply's code prints the right answer, before, halfway and after.

Run alone: ``python benchmarks/trl_peer.py --minutes 40 --out runs/peer`` (writes ``peer.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SYSTEM = ("You are the Code Executor of a math team: solve the problem with Python. Your code runs and what it "
          "prints last is your answer.")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def executor_prompt(problem: str) -> list[dict[str, str]]:
    """The chat a lone code executor sees: its role, the problem (as mathchat-v0 states it), its turn prompt."""
    from mappa_env.envs.mathchat.roles import CODE_EXECUTOR

    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"# Problem\n{problem}\n\n{CODE_EXECUTOR.turn_prompt}"}]


class CodeRunner:
    """Runs replies' python code in one fresh-per-run sandbox and grades what it prints last."""

    def __init__(self, backend: str = "local", timeout_s: float = 10.0):
        from mappa_env.sandbox import make_sandbox

        self._workspace = tempfile.TemporaryDirectory(prefix="mappa-peer-")
        self.sandbox = make_sandbox(backend, self._workspace.name, timeout_s=timeout_s, persistent=False)

    def grade(self, reply: str, reference: str) -> tuple[bool, bool]:
        """(the code ran, its last printed line is the right answer)."""
        from mappa_env.coach.math_receipts import last_printed_line, same_answer
        from mappa_env.text import extract_python_blocks

        code = "\n\n".join(extract_python_blocks(reply))
        if not code:
            return False, False
        result = self.sandbox.run(code)
        return result.ok, result.ok and same_answer(reference, last_printed_line(result.stdout))

    def close(self) -> None:
        self.sandbox.close()
        self._workspace.cleanup()


def heldout_accuracy(model: Any, tokenizer: Any, tasks: Sequence[Any], runner: CodeRunner, *, max_new_tokens: int,
                     batch: int = 16) -> dict[str, Any]:
    """Greedy replies to every held-out problem: the share whose code prints the right answer, per problem."""
    import torch

    tokenizer.padding_side = "left"
    correct, ran = [], []
    model.eval()
    for start in range(0, len(tasks), batch):
        chunk = tasks[start: start + batch]
        texts = [tokenizer.apply_chat_template(executor_prompt(t.problem), add_generation_prompt=True, tokenize=False)
                 for t in chunk]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tokenizer.pad_token_id)
        for task, row in zip(chunk, out[:, inputs["input_ids"].shape[1]:]):
            did_run, right = runner.grade(tokenizer.decode(row, skip_special_tokens=True), task.answer)
            ran.append(did_run)
            correct.append(right)
    return {"accuracy": sum(correct) / len(correct), "code_ran": sum(ran) / len(ran),
            "episodes": [{"task_id": t.id, "correct": float(c)} for t, c in zip(tasks, correct)]}


def train_peer(*, minutes: float, seed: int, out: Path, levels: Sequence[int] = (1,), heldout: int = 64,
               heldout_per_level: int = 64, max_new_tokens: int = 64, threads: int = 0) -> dict[str, Any]:
    """Train the peer for ``minutes`` of wall-clock (evaluations not counted); returns and writes ``out/peer.json``."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mappa_env.hf_models import load_chat_model, packaged_smollm2_gguf
    from mappa_env.tasks.math_sets import load_math_tasks

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    suite = {"levels": list(levels), "heldout_per_level": heldout_per_level}
    train_tasks = load_math_tasks("arith", split="train", **suite)
    heldout_tasks = load_math_tasks("arith", split="heldout", **suite)[:heldout]
    tokenizer, model = load_chat_model(packaged_smollm2_gguf(), device="cpu", dtype=torch.float32, what="the TRL peer")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    runner = CodeRunner()
    evaluations: dict[str, Any] = {}
    began = time.monotonic()
    try:
        evaluations["before"] = {"step": 0, **heldout_accuracy(model, tokenizer, heldout_tasks, runner,
                                                                max_new_tokens=max_new_tokens)}
        print(f"peer before: {evaluations['before']['accuracy']:.3f}", flush=True)

        def reward(completions, answer, **_):
            rewards = []
            for completion, reference in zip(completions, answer):
                text = completion[-1]["content"] if isinstance(completion, list) else completion
                did_run, right = runner.grade(text, reference)
                rewards.append(float(right) + 0.2 * float(did_run))
            return rewards

        trained_s = [0.0]
        history: list[dict[str, float]] = []

        class Budget(TrainerCallback):
            """Stops after the step that reaches the budget; evaluates once halfway (not counted in it)."""

            def on_step_begin(self, args, state, control, **kwargs):
                self.began = time.monotonic()

            def on_step_end(self, args, state, control, **kwargs):
                trained_s[0] += time.monotonic() - self.began
                if "halfway" not in evaluations and trained_s[0] >= 30 * minutes:
                    evaluations["halfway"] = {"step": state.global_step, **heldout_accuracy(
                        kwargs["model"], tokenizer, heldout_tasks, runner, max_new_tokens=max_new_tokens)}
                    kwargs["model"].train()
                    print(f"peer step {state.global_step}: held-out {evaluations['halfway']['accuracy']:.3f}", flush=True)
                if trained_s[0] >= 60 * minutes:
                    control.should_training_stop = True

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "reward" in logs:
                    history.append({"step": state.global_step, "reward": logs["reward"], "minutes": trained_s[0] / 60})

        config = GRPOConfig(
            output_dir=str(out / "trl"), use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2, num_generations=8, max_completion_length=max_new_tokens, temperature=1.0,
            top_k=0, beta=0.0, learning_rate=2e-4, lr_scheduler_type="constant", max_steps=100_000, logging_steps=1,
            save_strategy="no", report_to=[], disable_tqdm=True, seed=seed, dataloader_num_workers=0,
        )
        dataset = Dataset.from_dict({"prompt": [executor_prompt(t.problem) for t in train_tasks],
                                     "answer": [t.answer for t in train_tasks]})
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        trainer = GRPOTrainer(
            model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
            peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
            callbacks=[Budget()],
        )
        trainer.train()
        steps = trainer.state.global_step
        evaluations["after"] = {"step": steps, **heldout_accuracy(trainer.model, tokenizer, heldout_tasks, runner,
                                                                   max_new_tokens=max_new_tokens)}
        print(f"peer after {steps} steps: {evaluations['after']['accuracy']:.3f}", flush=True)
    finally:
        runner.close()
    result = {"seed": seed, "minutes_trained": trained_s[0] / 60, "wall_minutes": (time.monotonic() - began) / 60,
              "steps": steps, "completions_per_step": 16, "evaluations": evaluations, "reward_history": history}
    partial = out / "peer.json.partial"
    partial.write_text(json.dumps(result, indent=1), encoding="utf-8")
    partial.replace(out / "peer.json")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0, help="training budget (evaluations not counted)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1])
    parser.add_argument("--heldout", type=int, default=64, help="held-out problems evaluated")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("runs/peer"))
    args = parser.parse_args()
    result = train_peer(minutes=args.minutes, seed=args.seed, out=args.out, levels=args.levels, heldout=args.heldout,
                        heldout_per_level=max(64, args.heldout), threads=args.threads)
    print(json.dumps({k: v for k, v in result.items() if k != "reward_history"}, default=str)[:2000])


if __name__ == "__main__":
    main()
