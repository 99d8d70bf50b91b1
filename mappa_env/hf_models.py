"""Loading a local transformers chat model (a directory, a hub id in the local cache, or a ``.gguf`` file).

Shared by the ``hf:`` team and the ``hf:`` coach. Imported only when one of them is built: ``mappa_env``
itself never imports torch or transformers.
"""

from __future__ import annotations

from typing import Any

INSTALL_HINT = "pip install torch transformers (and gguf for .gguf files)"


def split_gguf(path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``/dir/model.gguf`` -> (``/dir``, ``model.gguf``), which is how transformers wants a GGUF file named."""
    if gguf_file is None and path.endswith(".gguf"):
        directory, _, gguf_file = path.rpartition("/")
        return directory or ".", gguf_file
    return path, gguf_file


def load_chat_model(path: str, *, gguf_file: str | None = None, device: str | None = None,
                    dtype: str | None = None, what: str = "hf: models") -> tuple[Any, Any]:
    """(tokenizer, model in eval mode) for ``path``; a ``.gguf`` path is dequantised by transformers.

    ``device`` defaults to CUDA when available, else the CPU; ``dtype`` (``"float32"``, ``"bfloat16"``,
    ...) defaults to the checkpoint's. Raises ImportError or OSError with how to fix it.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ImportError(f"{what} need torch and transformers: {INSTALL_HINT}") from exc
    directory, gguf_file = split_gguf(path, gguf_file)
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype) if dtype else "auto", **kwargs)
    except (OSError, ValueError) as exc:
        raise OSError(
            f"could not load the chat model {path!r}: {exc}. Give a local model directory, a .gguf file, or a hub id "
            "already in the local Hugging Face cache (nothing is downloaded offline)"
        ) from exc
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, model.to(device).eval()
