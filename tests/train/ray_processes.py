"""Which Ray processes are still alive: the Ray tests check that they leave none behind."""

from __future__ import annotations

import re
import subprocess


def ray_processes() -> list[str]:
    """The Ray processes still alive. A zombie (state Z: exited, its exit status not yet collected by its parent)
    runs nothing and holds nothing: CI once saw a killed worker's ``[ray::IDLE] <defunct>`` linger a few seconds
    after the cluster had stopped, so zombies are not counted as left behind."""
    table = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    alive = []
    for line in table.splitlines():
        pid, state, args = (line.split(None, 2) + ["", ""])[:3]
        if re.search(r"raylet|gcs_server|ray::", args) and not state.startswith("Z"):
            alive.append(f"{pid} {args}")
    return alive
