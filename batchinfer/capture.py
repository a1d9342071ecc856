"""A worker's stdout and stderr: file descriptors 1 and 2 into ``logs/worker-N.log``, secrets masked.

Everything the entry script (and any C library, and any program it starts) writes on fds 1
and 2 lands in the worker's log. When the job has no secret values, fds 1 and 2 are the log
file itself (``dup2``): no copy, no cost, and nothing written can be lost. When it has some
(see :mod:`batchinfer.redact`), fds 1 and 2 are a pipe, and a small *capture process*, forked
from the worker, copies the pipe into the log with every secret value replaced by ``***``
(Azure's own scripts print all of ``os.environ`` in ``init()``).

Why a process and not a thread of the worker: a thread needs the GIL, which ``run()`` may hold
in a C call for minutes, and dies with the worker. The capture process needs neither: what the
worker wrote before a crash, an ``os._exit``, or the stack that faulthandler writes before the
watchdog kills a hung worker, stays in the pipe and is copied; programs the script started
still write into the same pipe, and the capture process ends when the last of them closes it.

Masking works on whole lines: bytes are kept until a newline, so a secret split across two
writes is still found. A partial line is written after :data:`IDLE_FLUSH_S` without new data
(a progress bar without newline still shows up), or when it grows past :data:`MAX_LINE`; an idle
flush holds back a tail that could be the start of a secret (until more data, or the end), so a
secret written in two parts with a long pause between them is still masked.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing.util
import os
import re
import select
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

from batchinfer.output import open_own_file
from batchinfer.redact import MASK, RedactingFilter, register_secrets

IDLE_FLUSH_S = 0.2  # a partial line waits this long for the rest of its line before it is written
MAX_LINE = 1 << 16  # a longer line without a newline is written in pieces (a secret across a cut is not masked)
READ_SIZE = 1 << 16
CHILD_WAIT_S = 5.0  # at the worker's exit, how long the capture process gets to copy the rest

_capture_pid: int | None = None


def redirect_output(log_path: Path, level: str, secret_values: Iterable[str] = ()) -> None:
    """Send fds 1 and 2 to the worker's log (through the capture process when there are
    ``secret_values``) and set up logging and faulthandler there; register the secrets
    (see :func:`batchinfer.redact.register_secrets`) for this process's own redaction."""
    secrets = tuple(secret_values)
    register_secrets(secrets)
    fd = open_own_file(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, private=False)  # never through a link
    sys.stdout.flush()
    sys.stderr.flush()
    pattern = _pattern(secrets)
    if pattern is not None:
        fd = _start_capture(fd, pattern, _encoded(secrets))
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.root.handlers:  # batchinfer's and the libraries' records (fsspec names URLs)
        handler.addFilter(RedactingFilter(one_line=False))
    faulthandler.enable(file=sys.stderr, all_threads=True)
    # the coordinator sends SIGUSR1 before killing a hung worker: the stack lands in the log
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)


def _pattern(secrets: tuple[str, ...]) -> re.Pattern[bytes] | None:
    """One regex of the secrets' UTF-8 bytes (see :func:`batchinfer.redact.secrets_pattern`)."""
    from batchinfer.redact import secrets_pattern

    return secrets_pattern(secrets, as_bytes=True)


def _encoded(secrets: Iterable[str]) -> tuple[bytes, ...]:
    """The maskable secrets as bytes: what an idle flush must not cut in two."""
    from batchinfer.redact import maskable

    return tuple(sorted({s.encode("utf-8", "surrogateescape") for s in secrets if maskable(s)}))


def _start_capture(log_fd: int, pattern: re.Pattern[bytes], secrets: tuple[bytes, ...] = ()) -> int:
    """Fork the capture process copying a new pipe into ``log_fd``; return the pipe's write end."""
    global _capture_pid
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the capture process: no Python-level locks, imports or finalizers from here on
        status = 0
        try:
            os.close(write_end)
            _detach(keep=(read_end, log_fd))
            copy(read_end, log_fd, pattern, secrets)
        except BaseException:  # noqa: BLE001 - nothing to report to: the log is what failed
            status = 1
        finally:
            os._exit(status)
    os.close(read_end)
    os.close(log_fd)
    _capture_pid = pid
    # multiprocessing runs its finalizers when the worker's target returns (atexit does not run there)
    multiprocessing.util.Finalize(None, _finish, exitpriority=-100)
    return write_end


def _detach(keep: tuple[int, ...]) -> None:
    """In the capture process: close every descriptor but ``keep`` (the worker's pipe to the
    coordinator must not outlive the worker here), stdin/stdout/stderr on /dev/null."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep and fd != null:
            os.dup2(null, fd)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def copy(source: int, target: int, pattern: re.Pattern[bytes], secrets: Iterable[bytes] = ()) -> None:
    """Copy ``source`` to ``target`` until EOF, masking ``pattern`` line by line (see the module's
    docstring); an idle flush keeps back a tail that starts one of ``secrets``."""
    secrets = tuple(secrets)
    mask = MASK.encode()
    pending = b""
    held = False  # pending is only a held-back tail: wait for more data (or EOF), however long
    poller = select.poll()
    poller.register(source, select.POLLIN | select.POLLHUP)
    while True:
        if pending and not held and not poller.poll(IDLE_FLUSH_S * 1000):
            cut = len(pending) - _secret_start(pending, secrets)
            _write(target, pattern.sub(mask, pending[:cut]))  # idle: the partial line as it is
            pending = pending[cut:]
            held = bool(pending)
            continue
        chunk = os.read(source, READ_SIZE)
        if not chunk:
            break
        held = False
        pending += chunk
        end = pending.rfind(b"\n") + 1
        if end == 0 and len(pending) > MAX_LINE:
            end = len(pending)
        if end:
            _write(target, pattern.sub(mask, pending[:end]))
            pending = pending[end:]
    if pending:
        _write(target, pattern.sub(mask, pending))


def _secret_start(data: bytes, secrets: tuple[bytes, ...]) -> int:
    """The length of the longest tail of ``data`` that is the start (not the whole) of one of ``secrets``."""
    longest = max((len(s) for s in secrets), default=0)
    for size in range(min(len(data), longest - 1), 0, -1):
        tail = data[-size:]
        if any(s.startswith(tail) and len(s) > size for s in secrets):
            return size
    return 0


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _finish() -> None:
    """At the worker's exit: close its ends of the pipe and let the capture process copy the rest."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    if _capture_pid is None:
        return
    import time

    deadline = time.monotonic() + CHILD_WAIT_S  # programs the script started may hold the pipe open
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(_capture_pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            return
        time.sleep(0.01)
