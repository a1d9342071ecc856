"""Records its life in $LIFE_FILE (init with its working folder, arguments and node; each run; shutdown).

An item named oom.txt raises MemoryError and one named exit.txt calls sys.exit(3): both end the worker.
"""

import os
import sys

import batchinfer


def _note(text):
    with open(os.environ["LIFE_FILE"], "a") as f:
        f.write(text + "\n")


def init():
    _note(f"init {os.getcwd()} {' '.join(sys.argv[1:])} {batchinfer.node_id()}")


def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if "oom.txt" in names:
        raise MemoryError("no room")
    if "exit.txt" in names:
        sys.exit(3)
    _note("run " + " ".join(names))
    return names


def shutdown():
    _note("shutdown")
