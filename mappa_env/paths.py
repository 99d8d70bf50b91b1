"""Where mappa keeps what it builds on the host (materialised tasks, coach replies, converted models).

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
