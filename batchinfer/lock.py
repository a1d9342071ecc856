"""One run at a time per output folder: an ``flock`` on ``<output>/.batchinfer/lock``.

The coordinator takes the lock before it changes anything in the folder and holds it until
the summary is written. The kernel owns the lock, not the file: it goes away with the
coordinator's last file descriptor, so a run killed with SIGKILL never blocks the next one,
whatever the file still says. The file's content (pid, host, start time, command) is only
for the message a second run prints and for ``batchinfer status``.

Only the coordinator holds the descriptor: it is opened close-on-exec, and the worker
processes come from the fork server and its resource tracker, which multiprocessing starts
with ``spawnv_passfds`` (fork + exec, passing only the fds it names) before the lock is taken.
A worker therefore never keeps a dead coordinator's lock alive.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pydantic import Field

from batchinfer.errors import OutputError
from batchinfer.layout import STATE_DIR
from batchinfer.statefiles import ReadBack, private_dir, read_json, shown

LOCK_FILE = "lock"  # in <output>/.batchinfer/
# `batchinfer status` takes a shared lock for an instant to see whether a run holds it;
# a run starting in that instant tries again a few times before it calls the folder busy
ACQUIRE_TRIES = 5
ACQUIRE_RETRY_S = 0.02


class LockHolder(ReadBack):
    """Who holds (or last held) the lock: read back from the lock file, so validated."""

    pid: int = Field(gt=0)
    host: str = Field(max_length=300)
    started_at: str = Field(max_length=100)
    command: str = Field("", max_length=10_000)

    def describe(self) -> str:
        """``pid 123 on host, started 2024-...``, for one-line messages."""
        return f"pid {self.pid} on {shown(self.host)}, started {shown(self.started_at)}"


def _open(path: Path, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _read_holder(path: Path) -> LockHolder | None:
    try:
        return LockHolder.model_validate(read_json(path))
    except (OSError, ValueError):
        return None  # a run that is just writing it, or a damaged file: the holder is unknown


class OutputLock:
    """The lock on one output folder, held by this process until :meth:`release`."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, folder: Path) -> OutputLock:
        """Create ``folder/.batchinfer`` (0700) and take its lock, or raise :class:`OutputError` naming the holder."""
        state_dir = folder / STATE_DIR
        private_dir(state_dir)
        path = state_dir / LOCK_FILE
        fd = _open(path, os.O_RDWR | os.O_CREAT)
        try:
            os.fchmod(fd, 0o600)
            for attempt in range(ACQUIRE_TRIES):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == ACQUIRE_TRIES - 1:
                        raise _busy(folder, _read_holder(path)) from None
                    time.sleep(ACQUIRE_RETRY_S)
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8", "backslashreplace"), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def release(self) -> None:
        """Empty the file (no run holds the folder now) and let the lock go."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # while still holding it: never wipe the next holder's content
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (someone else's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _busy(folder: Path, holder: LockHolder | None) -> OutputError:
    who = holder.describe() if holder else "its lock file does not say which"
    return OutputError(
        f"output {shown(folder)} is in use by another batchinfer run ({who})",
        hint=f"wait for it to end (batchinfer status {shown(folder)}), or choose another --output",
    )


def lock_state(state_dir: Path) -> tuple[bool, LockHolder | None]:
    """Whether a run holds the lock of ``state_dir`` now, and who (None: its file does not say).

    A folder without a lock file (written by batchinfer 0.1.0) reads as not held.
    """
    path = state_dir / LOCK_FILE
    try:
        fd = _open(path, os.O_RDONLY)
    except OSError:
        return False, None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True, _read_holder(path)
        return False, None
    finally:
        os.close(fd)  # also lets the shared lock go at once
    return False, None
