"""Starts long-lived processes, as careless scripts do, then waits for a gate file.

Once per worker, in init() or run() (--where), it starts `sleep 1000` as a child
(inheriting every file descriptor) and as a double-forked daemon (new session,
its parent gone), and writes their pids to --state DIR/<worker pid>. Each run()
then waits until the file --gate exists, and returns (--end ok) or raises (--end fail).
"""

import argparse
import os
import subprocess
import time

args = None
spawned = False


def _spawn():
    global spawned
    if spawned:
        return
    spawned = True
    child = subprocess.Popen(["sleep", "1000"], close_fds=False)
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:  # the classic daemon: fork, setsid, fork, parent exits
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            os.execvp("sleep", ["sleep", "1000"])
        os.write(write, str(daemon).encode())
        os._exit(0)
    os.waitpid(middle, 0)
    os.close(write)
    daemon = int(os.read(read, 100))
    os.close(read)
    path = os.path.join(args.state, str(os.getpid()))
    with open(path + ".tmp", "w") as f:
        f.write(f"{child.pid} {daemon}\n")
    os.replace(path + ".tmp", path)


def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    parser.add_argument("--gate", required=True)
    parser.add_argument("--where", choices=["init", "run"], required=True)
    parser.add_argument("--end", choices=["ok", "fail"], default="ok")
    args = parser.parse_known_args()[0]
    if args.where == "init":
        _spawn()


def run(mini_batch):
    if args.where == "run":
        _spawn()
    while not os.path.exists(args.gate):
        time.sleep(0.01)
    if args.end == "fail":
        raise ValueError("this script fails every mini-batch")
    return [os.path.basename(p) for p in mini_batch]
