"""Misbehaves once of each kind, by file name: 'kill' SIGKILLs its worker on the first try (a marker in
--state DIR lets the next try succeed), 'hang' sleeps forever (every try times out), 'bad' raises.

The report's browser test runs it to see a killed worker, a timeout and an exception on one page.
"""

import argparse
import os
import signal
import time

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
        if "hang" in name:
            while True:
                time.sleep(1)
        if "bad" in name:
            raise ValueError(f"cannot score {name}")
    return [os.path.basename(p) for p in mini_batch]
