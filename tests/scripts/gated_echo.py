"""Echoes '<file name> <content>' once the file --gate exists: a test opens the gate when it has seen what it waits for.

With --held WORD, only files whose name contains WORD wait for the gate; the others are echoed at once.

Tests use it to hold a job in a known state (running, workers busy) for as long as they
need, instead of hoping that a slow script is still running when they look.
"""

import argparse
import os
import time

gate = None
held = ""


def init():
    global gate, held
    parser = argparse.ArgumentParser()
    parser.add_argument("--gate", required=True)
    parser.add_argument("--held", default="")
    known = parser.parse_known_args()[0]
    gate, held = known.gate, known.held


def run(mini_batch):
    while any(held in os.path.basename(p) for p in mini_batch) and not os.path.exists(gate):
        time.sleep(0.01)
    return [f"{os.path.basename(p)} {open(p).read().strip()}" for p in mini_batch]
