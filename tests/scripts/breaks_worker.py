"""Does something to its worker process on each file whose name contains 'bad' (--mode):

  memory     raises MemoryError, and from then on fails every run() in this process with
             MemoryError (as a process whose heap is exhausted does)
  alloc      a real MemoryError: asks for a petabyte (then broken like 'memory')
  exit       calls sys.exit(3)
  interrupt  raises KeyboardInterrupt
  recursion  recurses until RecursionError
Other files are echoed by name.
"""

import argparse
import os
import sys

mode = None
broken = False


def init():
    global mode
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    mode = parser.parse_known_args()[0].mode


def _recurse(n):
    return _recurse(n + 1) + 1


def run(mini_batch):
    global broken
    if broken:
        raise MemoryError("the heap is still exhausted")
    for path in mini_batch:
        if "bad" not in os.path.basename(path):
            continue
        if mode == "memory":
            broken = True
            raise MemoryError("cannot allocate the model's buffers")
        if mode == "alloc":
            broken = True
            bytearray(1 << 50)
        if mode == "exit":
            sys.exit(3)
        if mode == "interrupt":
            raise KeyboardInterrupt
        if mode == "recursion":
            _recurse(0)
    return [os.path.basename(p) for p in mini_batch]
