"""Where mappa keeps what it builds on the host (materialised tasks, coach replies, converted models), and
how a file is written so that no reader ever sees half of it.

Cache root: ``$MAPPA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/mappa``, else ``~/.cache/mappa``. Each
part keeps its own sub-directory (``tasks/``, ``coach/``, ``models/``).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The MAPPA cache root directory (not created)."""
    explicit = os.environ.get("MAPPA_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "mappa"
    return Path.home() / ".cache" / "mappa"


def write_text_whole(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all: into ``<name>.partial`` beside it, then renamed into place
    (a crash leaves the old file or none, never half of one). Creates the parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
