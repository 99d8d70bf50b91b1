"""Small text helpers shared by environments, coaches and policies."""

from __future__ import annotations

import re

_THINK_RE = re.compile(r"<think>.*?(?:</think>|\Z)", re.S)
_ANY_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.S)
_FENCE_RE = re.compile(r"```[ \t]*(?:python|py|python3)[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def strip_thinking(text: str) -> str:
    """Remove ``<think>…</think>`` spans (an unclosed ``<think>`` runs to the end of the text)."""
    return _THINK_RE.sub("", text)


def prose_of(text: str) -> str:
    """What a reply says in words: thinking removed and every fenced block (of any language) blanked out."""
    return _ANY_FENCE_RE.sub(" ", strip_thinking(text))


def extract_python_blocks(text: str) -> list[str]:
    """Return the bodies of the ```python fenced blocks of a model's reply, in order.

    Text inside ``<think>…</think>`` is ignored, so code a model only considered while reasoning is
    never run. An unterminated final fence (a completion cut at the length limit) still counts, as the
    model clearly meant it as code; a block that is empty after stripping is dropped.
    """
    blocks = [b.strip("\n") for b in _FENCE_RE.findall(strip_thinking(text))]
    return [b for b in blocks if b.strip()]


def truncate_middle(text: str, limit: int) -> str:
    """Keep at most ``limit`` characters: the head and the tail, with a marker saying how much was cut."""
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n... [{cut} characters truncated] ...\n{text[-tail:]}"


def format_size(num_bytes: int) -> str:
    """Human-readable size: ``512 B``, ``12.3 KB``, ``4.0 MB``."""
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
