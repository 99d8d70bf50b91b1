"""Where the page goes by default, and ``--serve``: the page on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import functools
import http.server
from pathlib import Path


def default_page_path(source: Path) -> Path:
    """``<run>/episodes.html`` or ``<dir>/episodes.html`` for a directory, ``<results>.html`` beside a file."""
    return source / "episodes.html" if source.is_dir() else source.with_suffix(".html")


def serve_page(page: Path, *, port: int = 0) -> None:
    """Serve ``page`` (and nothing beside it) on 127.0.0.1:``port`` (0: a free one), printing its address."""

    class OnePage(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            if self.path.split("?")[0] not in ("/", "/" + page.name):
                self.send_error(404, f"only {page.name} is served here")
                return
            self.path = "/" + page.name
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # quiet: one line per request is noise here
            pass

    handler = functools.partial(OnePage, directory=str(page.parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"serving http://127.0.0.1:{server.server_address[1]}/{page.name} (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
