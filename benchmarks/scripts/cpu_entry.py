"""batchinfer entry script for the cpu benchmark: ``burn(BENCH_CPU_LOOPS)`` per file, then its name."""

import os

from cpu_work import burn

LOOPS = 0


def init():
    """Read the calibrated loop count (set in the job's environment_variables)."""
    global LOOPS
    LOOPS = int(os.environ["BENCH_CPU_LOOPS"])


def run(mini_batch):
    """The fixed work once per item; one name per item."""
    out = []
    for path in mini_batch:
        burn(LOOPS)
        out.append(os.path.basename(path))
    return out
