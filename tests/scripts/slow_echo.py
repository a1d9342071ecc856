"""Echoes '<file name> <content>' after sleeping SLOW_ECHO_S seconds per file (default 0.02)."""

import os
import time

DELAY = float(os.environ.get("SLOW_ECHO_S", "0.02"))


def run(mini_batch):
    rows = []
    for path in mini_batch:
        time.sleep(DELAY)
        rows.append(f"{os.path.basename(path)} {open(path).read().strip()}")
    return rows
