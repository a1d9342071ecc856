"""Echoes '<file name> <content>' once the file --gate exists: a test opens the gate when it has seen what it waits for.

Tests use it to hold a job in a known state (running, workers busy) for as long as they
need, instead of hoping that a slow script is still running when they look.
"""

import argparse
import os
import time

gate = None


def init():
    global gate
    parser = argparse.ArgumentParser()
    parser.add_argument("--gate", required=True)
    gate = parser.parse_known_args()[0].gate


def run(mini_batch):
    while not os.path.exists(gate):
        time.sleep(0.01)
    return [f"{os.path.basename(p)} {open(p).read().strip()}" for p in mini_batch]
