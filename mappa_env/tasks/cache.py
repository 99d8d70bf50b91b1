"""Where materialised task files live on the host, and how they are written safely.

The cache root is :func:`mappa_env.paths.cache_root`; task files go under
``<root>/tasks/<suite-version>/<task-name>/``.

A task directory is written with :func:`atomic_directory`: everything is built in a temporary sibling
directory and renamed into place with one ``os.replace``. A reader therefore sees either no directory
or a complete one, a crash leaves only a ``.tmp-*`` sibling behind, and two processes materialising the
same task race harmlessly (the loser discards its copy and uses the winner's, which has the same bytes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mappa_env.paths import cache_root


def tasks_dir(suite_version: str) -> Path:
    """``<cache root>/tasks/<suite_version>``, e.g. ``~/.cache/mappa/tasks/builtin-v1``."""
    return cache_root() / "tasks" / suite_version


def atomic_directory(final: Path, build: Callable[[Path], None], *, complete_marker: str) -> Path:
    """Create directory ``final`` by calling ``build(tmp_dir)`` and renaming ``tmp_dir`` to ``final``.

    ``build`` must write ``complete_marker`` (a file name) last; a directory without it is treated as
    debris from an older, interrupted writer and replaced. Returns ``final``.
    """
    if (final / complete_marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_sibling(final) as tmp:
        build(tmp)
        if not (tmp / complete_marker).is_file():
            raise RuntimeError(f"internal error: builder for {final} did not write {complete_marker}")
        if final.exists() and not (final / complete_marker).is_file():
            # Incomplete debris (should not happen with this writer, but a user may have edited it).
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process renamed its (identical) copy first: keep theirs.
            if not (final / complete_marker).is_file():
                raise
    return final


@contextlib.contextmanager
def _temporary_sibling(final: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final directory should read like any other
    try:
        yield tmp
    finally:
        # After a successful os.replace, tmp no longer exists and this is a no-op.
        shutil.rmtree(tmp, ignore_errors=True)
