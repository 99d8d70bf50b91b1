"""The two ways every red-team attack is delivered, and the checks that the host carries on afterwards.

* ``sandbox``: the public sandbox API (``make_sandbox(backend, workspace, ...)``, ``run(code)``);
* ``dsbench-v0``: a full environment step, the attack being the data engineer's reply.

Each attack test ends with :meth:`Target.carries_on`, which asserts that the next action runs, that
nothing the attack started is still alive, and that no file appeared or changed outside the workspace.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mappa_env
from mappa_env.sandbox import LocalSandbox, make_sandbox, procs
from mappa_env.sandbox.local import UID_BASE, UID_SPAN
from mappa_env.tasks.builtin import source_data_dirs

#: Every file an attack tries to create outside the workspace carries this name.
MARK = "mappa-pwned"
PROJECT = Path(mappa_env.__file__).resolve().parents[1]
SITE_PACKAGES = Path(os.__file__).parent / "site-packages"
#: Host directories that must never receive a MARK file.
WATCHED = (Path.home(), Path("/tmp"), PROJECT, SITE_PACKAGES, Path.cwd(), Path("/"), Path("/usr"),
           Path("/root"), Path("/etc"))


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def marks_outside(workspace: Path) -> list[str]:
    """MARK files found in the watched host directories (not descending into the workspace)."""
    found = []
    for directory in WATCHED:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found += [str(directory / n) for n in names if MARK in n and directory / n != workspace / n]
    return found


def uid_processes(uid: int) -> list[int]:
    """Live processes of ``uid`` anywhere on the host."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue
        if int(fields["Uid"].split()[0]) == uid:
            pids.append(int(entry))
    return pids


@dataclass
class Target:
    """An attack surface: run attack code, then prove the host is fine."""

    kind: str  # "sandbox" or "dsbench-v0"
    backend: str
    root: Path
    timeout_s: float
    sandbox_kwargs: dict[str, Any]
    env: Any = None
    sandbox: Any = None
    canary: Path | None = None
    checked: bool = False
    seen: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.canary = self.root / "canary.txt"  # outside the workspace: must never change
        self.canary.write_text("untouched")
        if self.kind == "sandbox":
            workspace = self.root / "workspace"
            workspace.mkdir()
            (workspace / "train.csv").write_text("id,y\na1,0\n")
            # What dsbench-v0 hides from the local backend (the docker image has no dataset packages).
            hidden = {"hidden_paths": source_data_dirs()} if self.backend == "local" else {}
            self.sandbox = make_sandbox(self.backend, workspace, timeout_s=self.timeout_s, **hidden,
                                        **self.sandbox_kwargs)
        else:
            self.env = mappa_env.make("dsbench-v0", split="heldout", exec_timeout_s=self.timeout_s,
                                      sandbox=self.backend, sandbox_kwargs=self.sandbox_kwargs)
            self.env.reset(seed=0)
        self.seen.append(self.current_sandbox())

    # -- delivering an action --------------------------------------------------------------------

    @property
    def workspace(self) -> Path:
        return self.sandbox.workspace if self.kind == "sandbox" else self.env.unwrapped.workspace

    def current_sandbox(self):
        if self.kind == "sandbox":
            return self.sandbox
        env = self.env.unwrapped
        return env._sandbox(env.agent_selection)

    def run(self, code: str) -> dict[str, Any]:
        """Run ``code`` as one action; the result as a step-record-like mapping."""
        if self.kind == "sandbox":
            result = self.sandbox.run(code)
            record = {"status": result.status, "stdout": result.stdout, "stderr": result.stderr,
                      "error": result.error, "state_lost": result.state_lost,
                      "output_truncated": result.output_truncated}
        else:
            env = self.env.unwrapped
            agent = env.agent_selection
            self.env.step(fenced(code))
            record = env.infos[agent]["step"]
            json.dumps(record)  # a step record always serialises, whatever the code printed
            self.seen.append(self.current_sandbox())
        self._log(record)
        return record

    def _log(self, record: dict[str, Any]) -> None:
        """With ``$MAPPA_REDTEAM_LOG`` set, append what each action did there as a JSON line (docs/sandbox.md's
        outcome table is written from it, per backend)."""
        path = os.environ.get("MAPPA_REDTEAM_LOG")
        if not path:
            return
        line = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "kind": self.kind,
                "backend": self.backend, "status": record.get("status"), "error": str(record.get("error") or "")[:300],
                "stdout": str(record.get("stdout") or "")[:300], "stderr": str(record.get("stderr") or "")[-300:]}
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")

    # -- after the attack ------------------------------------------------------------------------

    def carries_on(self) -> None:
        """The next action runs, nothing the attack started lives on, nothing outside changed."""
        after = self.run("print('alive', 6 * 7)")
        assert after["status"] == "ok" and after["stdout"] == "alive 42\n", after
        if isinstance(self.current_sandbox(), LocalSandbox) and self.current_sandbox().isolate:
            process = self.current_sandbox()._worker.process
            assert procs.descendants(process.proc.pid) == list(process.keep[1:]), "a stray process survived"
        assert self.canary.read_text() == "untouched"
        assert marks_outside(self.workspace) == []
        self.checked = True

    def close(self) -> None:
        """Close everything and check that no process of any sandbox it used is left."""
        if self.env is not None:
            self.env.close()
        if self.sandbox is not None:
            self.sandbox.close()
        for sandbox in self.seen:
            if isinstance(sandbox, LocalSandbox):
                assert _tagged(sandbox.tag) == [], f"processes of {sandbox!r} outlived close()"
                uid = sandbox._config.get("uid")
                if uid is not None:
                    assert UID_BASE <= uid < UID_BASE + UID_SPAN
                    assert _eventually_empty(lambda: uid_processes(uid)), f"processes of uid {uid} remain"


def tagged_processes(tag: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line carries a sandbox's tag."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if tag.encode() in cmdline and state != "Z":
                found.append(int(entry))
    return found


def _tagged(tag: str) -> list[int]:
    """What is left of a closed sandbox's processes, after giving them a moment to die."""
    return [] if _eventually_empty(lambda: tagged_processes(tag)) else tagged_processes(tag)


def _eventually_empty(probe, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


