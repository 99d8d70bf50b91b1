"""The disk quota of a workspace, checked from the host.

No file system quota is needed: while code runs, the host measures the workspace every few hundred
milliseconds and stops the execution that pushes it over the limit. Space is counted in allocated
blocks (a sparse file of a nominal terabyte costs what it stores) and files are counted too (millions
of empty files exhaust inodes without using blocks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    """What a workspace holds: bytes allocated on disk and number of entries (files, dirs, links)."""

    bytes: int
    files: int

    def over(self, quota: Usage) -> bool:
        return self.bytes > quota.bytes or self.files > quota.files

    def describe(self) -> str:
        return f"{self.bytes / 2**20:.0f} MiB in {self.files} files"


def workspace_usage(root: Path, *, stop_after: Usage | None = None) -> Usage:
    """Measure ``root`` without following links; stop early once ``stop_after`` is exceeded."""
    used = files = 0
    stack = [str(root)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:  # removed while we looked, or unreadable
            continue
        with entries:
            for entry in entries:
                files += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                except OSError:
                    continue
                used += st.st_blocks * 512
                if stop_after is not None and (used > stop_after.bytes or files > stop_after.files):
                    return Usage(used, files)
    return Usage(used, files)


class WorkspaceQuota:
    """Stops an execution that grows the workspace beyond ``quota`` (or beyond what it held at the start
    of the execution, when that was already more: an agent may always delete files to make room)."""

    def __init__(self, root: Path, quota: Usage) -> None:
        self.root, self.quota = root, quota
        self.allowed = quota

    def start(self) -> None:
        """Call before each execution."""
        held = workspace_usage(self.root, stop_after=None)
        self.allowed = Usage(max(self.quota.bytes, held.bytes), max(self.quota.files, held.files))

    def check(self) -> str | None:
        """Why the running execution must stop, or None."""
        used = workspace_usage(self.root, stop_after=self.allowed)
        if not used.over(self.allowed):
            return None
        return (f"the workspace disk quota: it reached {used.describe()}, over the quota of "
                f"{self.quota.bytes / 2**20:.0f} MiB and {self.quota.files} files (sandbox options "
                "disk_mb and max_files); delete files to make room")
