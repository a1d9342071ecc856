"""Runs a pipeline's command step so that it dies with batchinfer, even when batchinfer is SIGKILLed.

    batchinfer --start_new_session--> this guard (leader of its own process group) --> bash -c COMMAND --> ...

The kernel sends the guard SIGHUP when batchinfer exits (``PR_SET_PDEATHSIG``, no Python code
of batchinfer's needs to run), and the guard then SIGKILLs its whole process group: bash and
everything the command started (only double-forked daemons that left the group escape).
Ctrl-C and SIGTERM reach the whole group from batchinfer (``os.killpg``): the guard lets the
command handle them and exits with its status.

Usage (by ``command_step.py`` only): ``python -m batchinfer._command_guard PARENT_PID COMMAND``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from batchinfer._forkserver import die_with_parent


def _kill_group(_signum: int, _frame: object) -> None:
    os.killpg(0, signal.SIGKILL)  # this process too: nothing of the command outlives batchinfer


def main() -> int:
    """Start the command, die with batchinfer, and end as the command ended (its exit code, or its signal)."""
    parent, command = int(sys.argv[1]), sys.argv[2]
    signal.signal(signal.SIGHUP, _kill_group)
    if not die_with_parent(parent, signal.SIGHUP):
        return 128 + signal.SIGHUP  # batchinfer is gone already: run nothing
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)  # they reach bash too (the whole group): the guard waits for it
    proc = subprocess.Popen(["bash", "-c", command], preexec_fn=_default_signals)
    code = proc.wait()
    if code < 0:  # bash was killed by a signal: so is the guard, so that batchinfer sees which
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # the two whose action cannot be set
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _default_signals() -> None:
    """In bash (before exec): Ctrl-C and SIGTERM as in any shell, not ignored as in the guard."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
