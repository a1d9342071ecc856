"""A ``batchinfer run`` in the background, and waiting on what its workers do (for the process tests).

Every wait polls and ends as soon as what it waits for is seen; the deadlines are generous bounds for
a loaded machine, never a measure of speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from conftest import MARKER

GONE_WITHIN_S = 10.0


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Wait on observable progress (never on time): ``condition()`` true, while ``proc`` still runs; the
    deadline guards against hangs, not slowness."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: exit {proc.returncode}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(0.02)


def stop_at_once(proc: subprocess.Popen, signum: int = signal.SIGTERM) -> str:
    """Stop a run at once: ``signum``, then (once its stderr says it is stopping: the first signal was
    handled, so a second is not merged into it) ``signum`` again. Returns the stderr read meanwhile."""
    proc.send_signal(signum)
    seen = ""
    while "stopping" not in seen:
        line = proc.stderr.readline()
        assert line, f"stderr closed before 'stopping': {seen}"
        seen += line
    proc.send_signal(signum)
    return seen


def start(spec: Path, marker: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``batchinfer run SPEC ARGS`` in the background, in a session of its own, tagged with ``marker``."""
    return subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "run", str(spec), *args],
        env={**os.environ, MARKER: marker, **(env or {})}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def wait_for_files(folder: Path, count: int, proc: subprocess.Popen) -> list[Path]:
    """The marker files the script's workers write, once ``count`` of them exist."""
    deadline = time.monotonic() + 60
    while len(found := sorted(p for p in folder.iterdir() if not p.name.endswith(".tmp"))) < count:
        assert proc.poll() is None, f"the job ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"only {len(found)} of {count} markers"
        time.sleep(0.05)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def all_gone(pids: list[int], within: float = GONE_WITHIN_S) -> list[int]:
    """The pids still alive after ``within`` seconds (polling: an empty list comes as soon as it can)."""
    deadline = time.monotonic() + within
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def pipe_inode(pid: int, fd: int) -> str:
    """What descriptor ``fd`` of ``pid`` points at (``pipe:[inode]`` for a pipe)."""
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def holders_of(targets: set[str], pids: list[int]) -> list[tuple[int, str]]:
    """(pid, command) of the processes among ``pids`` with a descriptor on one of ``targets``."""
    found = []
    for pid in pids:
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            if links & targets:
                found.append((pid, " ".join(psutil.Process(pid).cmdline())[:120]))
        except (OSError, psutil.Error):
            continue
    return found
