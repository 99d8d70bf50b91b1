"""The viewer's page: one self-contained HTML file (styles, script and data inline; no server, no network).

The episodes go into the page as JSON inside ``<script type="application/json">``, with every ``<``, ``>``
and ``&`` written as a ``\\u`` escape: a reply holding ``</script>`` cannot end the block, and the script
(``page.html``) puts every value in the page as text, never as markup. The page lists the episodes 50 at a
time and draws an episode's timeline only when it is opened, so a run of thousands of actions opens at once.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from mappa_env.paths import write_text_whole
from mappa_env.viewer.episodes import Collection

TEMPLATE = Path(__file__).with_name("page.html")
_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def page_html(collection: Collection) -> str:
    """The page showing ``collection``."""
    data: dict[str, Any] = {"title": collection.title, "episodes": collection.episodes, "sources": collection.sources,
                            "curves": None}
    if collection.curves_png:
        data["curves"] = "data:image/png;base64," + base64.b64encode(collection.curves_png).decode("ascii")
    before, after = TEMPLATE.read_text(encoding="utf-8").split("__DATA__")
    return before.replace("__TITLE__", html.escape(collection.title), 1) + script_json(data) + after


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside an HTML ``<script>`` element (a number that is not finite, which
    JSON cannot hold, becomes null)."""
    return json.dumps(_finite(data), ensure_ascii=False, default=str, allow_nan=False).translate(_ESCAPES)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_page(collection: Collection, path: str | Path) -> Path:
    """Write the page for ``collection`` to ``path`` (whole or not at all); returns the path."""
    return write_text_whole(path, page_html(collection))
