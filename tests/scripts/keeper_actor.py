"""A stand-in for a Ray actor (no Ray): keeper.start(), then processes started as careless scripts do.

    python keeper_actor.py STATE {sigkill,exit,segfault,graceful}

Starts ``sleep 1000`` once before keeper.start() ("before": not marked), then after it: as a child
("child"), as a double-forked daemon in a new session ("daemon"), as a child in a new session
("session"), and a pure-Python double-forked daemon that never execs and closes every descriptor
("forked"). Writes STATE (JSON: those pids, the watcher's pid, the mark's variable name), then
reads a line from stdin and ends as told: ``sigkill`` waits for stdin's EOF (the test kills it
first), ``exit`` calls os._exit(3), ``segfault`` crashes, ``graceful`` calls keeper.kill_marked(),
writes STATE.killed and exits at stdin's EOF.
"""

import ctypes
import json
import os
import subprocess
import sys
import time

from batchinfer.executors import keeper


def double_fork(then_exec: bool) -> int:
    """The classic daemon: fork, setsid, fork, the parent exits; the daemon's pid."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            if then_exec:
                os.execvp("sleep", ["sleep", "1000"])
            os.closerange(0, 1 << 16)  # as python-daemon does: only the memory mapping is left of the mark
            while True:
                time.sleep(1000)
        os.write(write, str(daemon).encode())
        os._exit(0)
    os.waitpid(middle, 0)
    os.close(write)
    daemon = int(os.read(read, 100))
    os.close(read)
    return daemon


def main() -> None:
    state, ending = sys.argv[1], sys.argv[2]
    before = subprocess.Popen(["sleep", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    keeper.start()
    pids = {
        "before": before.pid,
        "child": subprocess.Popen(["sleep", "1000"], close_fds=False).pid,
        "session": subprocess.Popen(["sleep", "1000"], start_new_session=True).pid,
        "daemon": double_fork(then_exec=True),
        "forked": double_fork(then_exec=False),
    }
    mark = [name for name in os.environ if name.startswith(keeper.ENV_PREFIX)]
    with open(state + ".tmp", "w") as f:
        json.dump({"pids": pids, "watcher": keeper.watcher_pid(), "mark": mark}, f)
    os.replace(state + ".tmp", state)

    sys.stdin.readline()
    if ending == "exit":
        os._exit(3)
    if ending == "segfault":
        ctypes.string_at(0)
    if ending == "graceful":
        keeper.kill_marked()
        with open(state + ".killed", "w"):
            pass
    sys.stdin.read()


if __name__ == "__main__":
    main()
