"""The shared workspace as agents and coaches see it: an inventory of paths and sizes, bounded in count."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

MAX_INVENTORY_FILES = 2000  # a runaway program can create millions of files; list only this many

#: path → (size in bytes, mtime in ns): enough to tell which files an action created, changed or deleted
Snapshot = dict[str, tuple[int, int]]


def snapshot(workspace: Path | None) -> Snapshot:
    """Workspace path → (size, mtime_ns), relative paths, hidden files included, at most
    :data:`MAX_INVENTORY_FILES` entries; empty when there is no workspace."""
    found: Snapshot = {}
    if workspace is None:
        return found
    stack = [workspace]
    while stack and len(found) < MAX_INVENTORY_FILES:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found[os.path.relpath(entry.path, workspace)] = (st.st_size, st.st_mtime_ns)
    return found


def sizes(snap: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    """The inventory a record keeps: path → bytes."""
    return {path: size for path, (size, _) in snap.items()}


def changed_paths(before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]) -> list[str]:
    """Paths created, modified or deleted between two snapshots, sorted."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
