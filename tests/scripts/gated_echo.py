"""Echoes '<file name> <content>' once the file --gate exists: a test opens the gate when it has seen what it waits for.

With --held WORD, only files whose name contains WORD wait for the gate; the others are echoed at once.
--gate and --held may be given again (in pairs): a file waits for every gate whose word its name holds,
so that a test can let a job start, then hold it again before its end.

Tests use it to hold a job in a known state (running, workers busy) for as long as they
need, instead of hoping that a slow script is still running when they look.
"""

import argparse
import os
import time

gates = []


def init():
    global gates
    parser = argparse.ArgumentParser()
    parser.add_argument("--gate", required=True, action="append")
    parser.add_argument("--held", action="append")
    known = parser.parse_known_args()[0]
    held = known.held or []
    gates = [(gate, held[i] if i < len(held) else "") for i, gate in enumerate(known.gate)]


def run(mini_batch):
    for gate, held in gates:
        while any(held in os.path.basename(p) for p in mini_batch) and not os.path.exists(gate):
            time.sleep(0.01)
    return [f"{os.path.basename(p)} {open(p).read().strip()}" for p in mini_batch]
