"""batchinfer entry script for the listing benchmark: note when the first mini-batch arrives.

``init()`` does nothing. The first ``run()`` call of each worker writes
``time.time()`` to the file named by ``BENCH_FIRST_RUN_FILE``, created with
O_EXCL so that only the very first call of the job (whichever worker) wins.
``run()`` then returns the names.
"""

import os
import time

_noted = False


def init():
    """Nothing: the worker is ready at once."""


def run(mini_batch):
    """Note the first call's time once, then return one name per path."""
    global _noted
    if not _noted:
        now = time.time()
        _noted = True
        try:
            fd = os.open(os.environ["BENCH_FIRST_RUN_FILE"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            os.write(fd, repr(now).encode())
            os.close(fd)
    return [os.path.basename(path) for path in mini_batch]
