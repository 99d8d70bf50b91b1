"""Expected GPU memory of a recipe, computed from the model's architecture and the run's settings.

Nothing here runs a model on a GPU: it is arithmetic on the sizes that a run's settings fix (weights,
adapters, optimiser states, gradients, the generation KV cache, checkpointed activations and the logits
of one micro-batch), each term with its formula, so that a user can see which setting to change when a
recipe does not fit. Two checks keep the arithmetic honest: the parameter and LoRA counts are compared
with the real SmolLM2-135M and peft on this machine (they must agree exactly).

The architecture of Qwen3-4B (the ``mappa-gpu`` recipe's ``model.path``) is written out below from its
published ``config.json``; any other model is read from its local ``config.json`` (``--model DIR``).

Run: ``python benchmarks/memory_per_gpu.py [--config mappa-gpu] [--model DIR] [--agents 3] [--envs-in-flight N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mappa_train.config import TrainConfig  # noqa: E402

GIB = 2**30


@dataclass(frozen=True)
class Architecture:
    """The sizes of a decoder-only transformer that fix its memory (names as in a Llama/Qwen ``config.json``)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    qk_norm: bool = False  # Qwen3 normalises queries and keys per head (two vectors of head_dim per layer)

    @classmethod
    def from_config(cls, config: dict) -> Architecture:
        heads = config["num_attention_heads"]
        return cls(config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], heads,
                   config.get("num_key_value_heads", heads), config.get("head_dim") or config["hidden_size"] // heads,
                   config["vocab_size"], config.get("tie_word_embeddings", False),
                   qk_norm=config.get("model_type") == "qwen3")

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one block: q, k, v, o, gate, up, down (what 'all-linear' adapts)."""
        h, q, kv, i = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim, self.intermediate_size
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def parameters(self) -> int:
        per_layer = sum(a * b for a, b in self.linear_shapes()) + 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return embeddings + self.num_hidden_layers * per_layer + self.hidden_size

    def lora_parameters(self, rank: int, modules: list[str]) -> int:
        names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        wanted = names if modules == ["all-linear"] else modules
        return self.num_hidden_layers * sum(rank * (a + b) for name, (a, b) in zip(names, self.linear_shapes()) if name in wanted)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * dtype_bytes


#: Qwen/Qwen3-4B's config.json (hub, 2025): the mappa-gpu recipe's model
QWEN3_4B = Architecture(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True, qk_norm=True)


def terms(arch: Architecture, config: TrainConfig, agents: int, gpus: int) -> list[tuple[str, float, str]]:
    """``(what, GiB, formula)`` for one GPU of a run of ``config`` with ``agents`` agents."""
    m, p, r, a = config.model, config.policy, config.rollout, config.algorithm
    weight = 2 if m.dtype in ("bfloat16", "float16", "auto") else 4
    params = arch.parameters()
    length = m.max_prompt_tokens + m.max_new_tokens
    rows = []
    if p.topology == "lora":
        lora = arch.lora_parameters(p.lora_rank, p.lora_target_modules)
        rows += [("base weights (frozen; also the reference)", params * weight / GIB, f"{params / 1e9:.2f} B x {weight} B"),
                 ("LoRA adapters, fp32 (peft's default)", agents * lora * 4 / GIB, f"{agents} x {lora / 1e6:.1f} M x 4 B"),
                 ("AdamW states, fp32", agents * lora * 8 / GIB, f"{agents} x {lora / 1e6:.1f} M x 8 B (every agent's)"),
                 ("gradients, fp32 (one agent's at a time)", lora * 4 / GIB, f"{lora / 1e6:.1f} M x 4 B")]
    else:  # separate: a full model per agent and one reference; ZeRO-3 shards weights, gradients and states over gpus
        copies = agents if p.topology == "separate" else 1
        sharded = copies * params * (weight + weight + 12) / gpus  # weights, gradients, fp32 master + Adam m and v
        rows += [("reference model", params * weight / gpus / GIB, f"{params / 1e9:.2f} B x {weight} B / {gpus} GPUs"),
                 (f"{copies} trained model(s): weights, grads, fp32 master, Adam", sharded / GIB,
                  f"{copies} x {params / 1e9:.2f} B x {2 * weight + 12} B / {gpus} GPUs (ZeRO-3)")]
    batch = r.envs_in_flight
    kv = arch.kv_bytes_per_token(weight)
    rows.append((f"KV cache: {batch} episodes in flight at full length (hf generate, no paging)",
                 batch * length * kv / GIB, f"{batch} x {length} tokens x {kv / 1024:.0f} KiB"))
    micro = a.micro_batch_size
    checkpointed = micro * length * arch.hidden_size * weight * arch.num_hidden_layers
    one_layer = micro * length * (4 * arch.hidden_size + 3 * arch.intermediate_size) * weight
    rows.append(("activations of one micro-batch" + (" (checkpointed)" if m.gradient_checkpointing else ""),
                 (checkpointed + one_layer if m.gradient_checkpointing else one_layer * arch.num_hidden_layers) / GIB,
                 f"{micro} x {length} tokens: one hidden state per layer + one layer recomputed"))
    logits = micro * m.max_new_tokens * arch.vocab_size
    rows.append(("logits of one micro-batch (model dtype, fp32 copy, logsumexp temp)", logits * (weight + 8) / GIB,
                 f"{micro} x {m.max_new_tokens} x {arch.vocab_size} x {weight + 8} B"))
    return rows


def check_against_smollm2(rank: int = 64) -> list[str]:
    """The parameter and LoRA counts against the real SmolLM2-135M and peft (they must agree)."""
    from peft import LoraConfig, get_peft_model

    from mappa_train.config import ModelConfig
    from mappa_train.policy import load_tokenizer_and_model

    _, model = load_tokenizer_and_model(ModelConfig(path="smollm2", dtype="float32", device="cpu"))
    arch = Architecture.from_config(model.config.to_dict())
    real = sum(p.numel() for p in model.parameters())  # tied embeddings are one parameter
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    return [f"SmolLM2-135M parameters: computed {arch.parameters():,}, model {real:,}",
            f"SmolLM2-135M LoRA rank {rank} all-linear: computed {arch.lora_parameters(rank, ['all-linear']):,}, peft {lora:,}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="mappa-gpu", help="a shipped config's name or a YAML file")
    parser.add_argument("--model", default=None, help="a model directory whose config.json to use (default: Qwen3-4B's)")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs sharing the separate topology's ZeRO-3 shards")
    parser.add_argument("--envs-in-flight", type=int, default=None, help="override rollout.envs_in_flight")
    parser.add_argument("--no-check", action="store_true", help="skip the check against SmolLM2 and peft")
    args = parser.parse_args()

    config = TrainConfig.from_yaml(args.config)
    if args.envs_in_flight:
        config.rollout.envs_in_flight = args.envs_in_flight
    arch = Architecture.from_config(json.loads((Path(args.model) / "config.json").read_text())) if args.model else QWEN3_4B
    for topology in ("lora", "separate"):
        config.policy.topology = topology
        rows = terms(arch, config, args.agents, args.gpus)
        print(f"\n{args.config}, policy.topology {topology}, {args.agents} agents"
              + (f", {args.gpus} GPUs (ZeRO-3)" if topology == "separate" else ", one GPU"))
        print("| term | GiB per GPU | how |\n|---|---:|---|")
        for what, gib, how in rows:
            print(f"| {what} | {gib:.1f} | {how} |")
        print(f"| **total** | **{sum(g for _, g, _ in rows):.1f}** | |")
    if not args.no_check:
        print()
        for line in check_against_smollm2():
            print(line)


if __name__ == "__main__":
    main()
