"""Nothing that a worker's script starts outlives the worker, even where nobody adopts its orphans (Ray).

Locally the coordinator is a child subreaper and the fork server kills what a worker leaves
behind (``local.py``). A Ray actor has neither: when it is SIGKILLed (``ray.kill``) or dies, a
process its script started that detached itself (double fork, new session) is re-parented to init
and nobody finds it. So the actor *marks* everything it starts, and a watcher that outlives it
kills every marked process once it is gone:

    actor (start(): marks itself, then starts the watcher)
      +-- what the script starts, and what that starts ...  (marked: inherit the mark)
    watcher (double-forked, own session, no mark, no fd of the actor's, cwd /)
      waits for the actor's pid to end, then SIGKILLs every marked process until none is left

The mark is a random token, carried two ways, because ``/proc/<pid>`` shows each only to some:

- an environment variable ``BATCHINFER_KEEPER_<token>=1``: every process started with ``exec``
  inherits it, and ``/proc/<pid>/environ`` shows the environment a process was *exec'ed* with;
- a one-page shared memory mapping named ``batchinfer-keeper-<token>`` (``memfd_create``): a
  process forked and not exec'ed (``multiprocessing`` with fork, a pure-Python daemon) keeps its
  parent's mappings, while its ``/proc/<pid>/environ`` still shows its parent's exec-time
  environment, without the variable set since.

What escapes: a process exec'ed with a cleared or rebuilt environment (``subprocess.Popen(...,
env={})``), or one that overwrites its own initial environment (``setproctitle``), and whatever it
starts; a process of another user. The watcher never kills a process without the mark: it pins
each pid (``pidfd_open``) and checks the mark again before the signal.

Linux only: elsewhere :func:`start` and :func:`kill_marked` do nothing (no ``/proc``), and a
detached process can outlive its actor. With Ray's ``RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper``
set, the raylet adopts orphans and kills them itself (the watcher may be one of them).

Stdlib only, and no import of batchinfer: the watcher runs this file as a script.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import signal
import subprocess
import sys
import time

ENV_PREFIX = "BATCHINFER_KEEPER_"
MAPPING_PREFIX = "batchinfer-keeper-"
SCAN_S = 0.1  # between two sweeps of /proc, while something marked was found lately
WATCH_POLL_S = 0.2  # where pidfd_open is missing: how often the watcher looks at the actor's pid
QUIET_S = 1.0  # the watcher exits once a sweep has found nothing marked for this long
LIMIT_S = 60.0  # and in any case after this long (a marked process stuck in the kernel)
KILL_LIMIT_S = 10.0  # kill_marked() in the actor: at most this long
START_WAIT_S = 10.0  # start(): the watcher's pid must come back by then

log = logging.getLogger("batchinfer.executor")

_token: str | None = None
_watcher: int | None = None
_mapping = None  # the marked mmap: kept open for the process's life (its forks inherit it)


def start() -> None:
    """Mark this process (the actor) and start the watcher that kills what it started once it ends.

    Call once, in the actor, before the script is imported (after ``capture.redirect_output``,
    so that the log's capture process is not marked and copies the last lines on its own). Every
    process started afterwards, and everything those start, carries the mark. A second call does
    nothing; off Linux nothing is done at all.
    """
    global _token, _watcher, _mapping
    if _token is not None or not sys.platform.startswith("linux"):
        return
    token = secrets.token_hex(8)
    try:
        _watcher = _start_watcher(token)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("no watcher for the processes this worker starts (%s): they may outlive it", exc)
    # marked only now: the watcher must not carry the mark (it is exec'ed, so the mapping is not inherited)
    os.environ[ENV_PREFIX + token] = "1"
    try:
        _mapping = _marked_mapping(token)
    except (AttributeError, OSError) as exc:  # no memfd_create: only what is exec'ed is marked
        log.warning("processes this worker forks without exec are not marked (%s): they may outlive it", exc)
    _token = token


def kill_marked() -> None:
    """SIGKILL every process this one started (marked by :func:`start`), until none is left.

    For the actor's graceful end, after the script's ``shutdown()`` and the log's last lines;
    this process and the watcher are spared (the watcher still sweeps once the actor ends).
    """
    if _token is not None:
        _sweep(_token, {os.getpid(), _watcher or 0}, quiet_s=0.0, limit_s=KILL_LIMIT_S)


def watcher_pid() -> int | None:
    """The watcher's pid (None before :func:`start`, off Linux, or when it could not start)."""
    return _watcher


# ------------------------------------------------------------------ marks and sweeps


def _start_watcher(token: str) -> int:
    """Run this file as the watcher of this process; its pid (it double-forks: not our child)."""
    me = os.getpid()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), str(me), str(_start_time(me)), token],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        close_fds=True, start_new_session=True, cwd="/",
    )
    try:
        out, _ = proc.communicate(timeout=START_WAIT_S)  # EOF once the watcher let go of the pipe
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return int(out)


def _marked_mapping(token: str):
    """A one-page shared mapping named after ``token``: every fork of this process inherits it."""
    import mmap

    fd = os.memfd_create(MAPPING_PREFIX + token, 0)
    try:
        os.ftruncate(fd, mmap.PAGESIZE)
        return mmap.mmap(fd, mmap.PAGESIZE)
    finally:
        os.close(fd)  # the mapping stays; no descriptor is left to inherit


def _start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot; tells a pid from a later one that reuses it);
    None when there is no such process or it has ended (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def _marked(pid: int, token: str) -> bool:
    """Whether ``pid`` carries the mark ``token`` (in its exec-time environment or its mappings)."""
    entry = (ENV_PREFIX + token + "=").encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if any(item.startswith(entry) for item in f.read().split(b"\0")):
                return True
        with open(f"/proc/{pid}/maps", "rb") as f:
            return (MAPPING_PREFIX + token).encode() in f.read()
    except OSError:  # gone, another user's, a kernel thread
        return False


def _kill(pid: int, token: str) -> None:
    """SIGKILL ``pid`` if it carries the mark, checked again once the pid is pinned (not reused)."""
    try:
        pidfd = os.pidfd_open(pid)
    except AttributeError:
        pidfd = None
    except OSError:
        return
    try:
        if not _marked(pid, token):
            return
        if pidfd is None:
            os.kill(pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _sweep(token: str, spare: set[int], quiet_s: float, limit_s: float) -> None:
    """Kill every marked process but ``spare`` until no sweep has found one for ``quiet_s``.

    A marked process found again was still dying (its mappings not yet released), or it forked
    before the signal: so it is repeated until a sweep finds nothing.
    """
    started = last_found = time.monotonic()
    while True:
        found = [int(name) for name in os.listdir("/proc")
                 if name.isdigit() and int(name) not in spare and _marked(int(name), token)]
        for pid in found:
            _kill(pid, token)
        now = time.monotonic()
        if found:
            last_found = now
        elif now - last_found >= quiet_s:
            return
        if now - started >= limit_s:
            return
        time.sleep(SCAN_S)


def _wait_for_end(pid: int, start_time: int) -> None:
    """Return once the process ``pid`` that started at ``start_time`` has ended."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        if _start_time(pid) == start_time:  # else it ended before the pid was pinned
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while not poller.poll():
                pass
        os.close(pidfd)
        return
    while _start_time(pid) == start_time:
        time.sleep(WATCH_POLL_S)


def _watch(argv: list[str]) -> None:
    """The watcher: report our pid to the actor (double fork), wait for it to end, sweep, exit."""
    actor, start_time, token = int(argv[0]), int(argv[1]), argv[2]
    pid = os.fork()
    if pid:  # the first child: its parent (the actor) reaps it, the watcher is re-parented
        os.write(1, str(pid).encode())
        os._exit(0)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # let go of the pipe to the actor: start() reads it to EOF
    os.close(null)
    _wait_for_end(actor, start_time)
    _sweep(token, {os.getpid()}, quiet_s=QUIET_S, limit_s=LIMIT_S)


if __name__ == "__main__":
    _watch(sys.argv[1:])
