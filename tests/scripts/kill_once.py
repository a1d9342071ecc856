"""SIGKILLs its own worker on the first try of each file whose name contains 'kill'.

The first try leaves a marker in --state DIR, so the next try (on a new worker) succeeds.
"""

import argparse
import os
import signal

state = None


def init():
    global state
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    state = parser.parse_known_args()[0].state


def run(mini_batch):
    for path in mini_batch:
        name = os.path.basename(path)
        marker = os.path.join(state, name)
        if "kill" in name and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    return [os.path.basename(p) for p in mini_batch]
