"""Never returns, holding the GIL (a catastrophic regex) or sleeping, in init() or run().

Each worker first writes its pid to a file in --marker DIR, so that a test knows it got there.
  --where init|run   where to get stuck
  --how regex|sleep  regex: a C loop that never releases the GIL; sleep: an ordinary wait
"""

import argparse
import os
import re
import time

args = None


def _stuck(where):
    if args.where != where:
        return
    with open(os.path.join(args.marker, str(os.getpid())), "w") as f:
        f.write(where)
    if args.how == "regex":
        re.match(r"(a+)+$", "a" * 64 + "b")  # about 2**64 steps, all inside the re module
    while True:
        time.sleep(1)


def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--marker", required=True)
    parser.add_argument("--where", choices=["init", "run"], required=True)
    parser.add_argument("--how", choices=["regex", "sleep"], required=True)
    args = parser.parse_known_args()[0]
    _stuck("init")


def run(mini_batch):
    _stuck("run")
    return [os.path.basename(p) for p in mini_batch]
