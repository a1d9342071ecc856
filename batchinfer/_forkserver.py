"""Ties multiprocessing's fork server to the coordinator's life, through the kernel (Linux).

The workers are children of the fork server, not of the coordinator, and the fork
server only exits when every holder of its "alive" pipe has closed it: the workers
hold it too, so a SIGKILLed coordinator left a live fork server and live workers.
A watch thread in each worker cannot help while ``run()`` holds the GIL.

So the chain of deaths is made kernel-driven, needing no Python code to run:

    coordinator dies --PR_SET_PDEATHSIG--> fork server gets SIGTERM --PR_SET_PDEATHSIG--> workers get SIGKILL

The fork server's SIGTERM is handled: it never runs user code (its main thread waits in
``select``, so the handler runs at once), and it first SIGKILLs every process below it, the
children that the scripts started included, which a worker's death alone would orphan.
Only a script's double-forked daemons (re-parented to the coordinator, then to init) escape.

This module is the first module the fork server preloads (see ``executors/local.py``);
importing it anywhere else does nothing. The coordinator names itself in
``ARM_ENV`` only while it starts the fork server; the fork server removes the
variable, so that the workers and whatever they start never see it.
"""

from __future__ import annotations

import os
import signal

import psutil

ARM_ENV = "BATCHINFER_FORKSERVER_OF"
PR_SET_PDEATHSIG = 1

# the fork server's pid, seen by the workers it forks (they inherit this module): a worker
# whose parent is no longer this process was orphaned before it could arm its own signal
SERVER_PID: int | None = None


def die_with_parent(expected_parent: int, signum: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent exits; False if it is already gone.

    The check after ``prctl`` closes the race of a parent that died before the call
    (its children are then re-parented and the signal would never come).
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return True  # not Linux: the worker's watch thread is the only guard
    return os.getppid() == expected_parent


def _kill_everything_below_and_exit(_signum: int, _frame: object) -> None:
    """The coordinator died: SIGKILL the workers and whatever they started, then exit."""
    try:
        below = psutil.Process().children(recursive=True)
    except psutil.Error:
        below = []
    for proc in below:
        try:
            proc.kill()
        except psutil.Error:
            pass
    os._exit(0)


def _arm() -> None:
    global SERVER_PID
    coordinator = os.environ.pop(ARM_ENV, None)
    if not coordinator:
        return
    # the forked workers inherit this handler until worker_main resets SIGTERM to its default
    signal.signal(signal.SIGTERM, _kill_everything_below_and_exit)
    if not die_with_parent(int(coordinator), signal.SIGTERM):
        _kill_everything_below_and_exit(signal.SIGTERM, None)  # the coordinator died while this fork server started
    SERVER_PID = os.getpid()


_arm()
