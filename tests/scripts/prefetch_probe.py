"""Proves prefetching: run(k) waits (bounded) until mini-batch k+1's files are on disk, and records
how many mini-batches' download folders the worker's private folder held meanwhile.

Environment: BATCHES (the job's mini-batch count) and SIZE (files per mini-batch). Rows:
``<k> <file name> next_ready=<bool> folders=<most seen>``.
"""

import glob
import os
import time

WAIT_S = 60


def _complete(k, size):
    """Whether mini-batch k's download folder holds all its files, each complete (they end with a newline)."""
    files = [p for p in glob.glob(f"mb{k}-*/*/*") if os.path.isfile(p)]
    if len(files) != size:
        return False
    for path in files:
        with open(path, "rb") as f:
            if not f.read().endswith(b"\n"):
                return False
    return True


def run(mini_batch, context):
    k = context.minibatch_index
    batches, size = int(os.environ["BATCHES"]), int(os.environ["SIZE"])
    folders = len(glob.glob("mb*-*"))
    ready = None
    if k + 1 < batches:
        next_size = min(size, int(os.environ["FILES"]) - (k + 1) * size)
        deadline = time.monotonic() + WAIT_S
        while not (ready := _complete(k + 1, next_size)) and time.monotonic() < deadline:
            folders = max(folders, len(glob.glob("mb*-*")))
            time.sleep(0.01)
        folders = max(folders, len(glob.glob("mb*-*")))
    return [f"{k} {os.path.basename(p)} next_ready={ready} folders={folders}" for p in mini_batch]
