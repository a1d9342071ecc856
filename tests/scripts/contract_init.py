"""init() misbehaves (--fault) and run() echoes the files' names.

  raise     raises RuntimeError("model file is missing")
  hang      sleeps for an hour (longer than any run_invocation_timeout of the tests)
  exit      calls os._exit(3)
  segfault  reads address 0 (ctypes.string_at(0)): SIGSEGV
When (--when):
  always          in every worker
  once            in the first worker to start only (a marker file --state DIR/failed remembers it)
  while_broken    while the file --state DIR/broken exists (the user fixes it, then reruns)
"""

import argparse
import ctypes
import os
import time


def _misbehave(fault):
    if fault == "raise":
        raise RuntimeError("model file is missing: /nowhere/model.bin")
    if fault == "hang":
        time.sleep(3600)
    if fault == "exit":
        os._exit(3)
    if fault == "segfault":
        ctypes.string_at(0)


def init():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault", required=True, choices=["raise", "hang", "exit", "segfault"])
    parser.add_argument("--when", choices=["always", "once", "while_broken"], default="always")
    parser.add_argument("--state", metavar="DIR")
    args = parser.parse_known_args()[0]
    if args.when == "always":
        _misbehave(args.fault)
    elif args.when == "while_broken":
        if os.path.exists(os.path.join(args.state, "broken")):
            _misbehave(args.fault)
    else:
        try:
            os.close(os.open(os.path.join(args.state, "failed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        _misbehave(args.fault)


def run(mini_batch):
    return [os.path.basename(p) for p in mini_batch]
