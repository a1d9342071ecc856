"""For the report's tests: one job that meets every kind of fault, each on the file whose name says so.

On its first try only (a marker in --state DIR), a file named *kill* SIGKILLs its worker and one named
*slow* sleeps until the job's run_invocation_timeout kills it; a file named *bad* always raises,
naming itself. A file named *held* first waits until the file --gate exists (so that a test can stop
the job at a known point and resume it).
"""

import argparse
import os
import signal
import time

state = gate = None


def init():
    global state, gate
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    parser.add_argument("--gate", required=True)
    known = parser.parse_known_args()[0]
    state, gate = known.state, known.gate


def run(mini_batch):
    for path in mini_batch:
        name = os.path.basename(path)
        marker = os.path.join(state, name.replace("<", "_").replace(">", "_"))
        while "held" in name and not os.path.exists(gate):
            time.sleep(0.01)
        first = not os.path.exists(marker)
        if first and ("kill" in name or "slow" in name):
            open(marker, "w").close()
            if "kill" in name:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(600)  # the timeout ends it
        if "bad" in name:
            raise ValueError(f"cannot read {name}: not an image")
    return [os.path.basename(p) for p in mini_batch]
