"""run() misbehaves (--fault) on each file whose name contains 'bad'; echoes the other files' names.

  raise       raises ValueError
  short       returns one result fewer than it was given
  wrong_type  returns a dict
  hang        sleeps for an hour (longer than any run_invocation_timeout of the tests)
  exit        calls os._exit(3): the process ends without any Python clean-up
  segfault    reads address 0 (ctypes.string_at(0)): SIGSEGV
  sigkill     SIGKILLs its own process, as the OOM killer or a user would
  memory      raises MemoryError
With --once DIR it misbehaves only on an item's first try (a marker in DIR remembers it).
"""

import argparse
import ctypes
import os
import signal
import time

args = None


def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault", required=True,
                        choices=["raise", "short", "wrong_type", "hang", "exit", "segfault", "sigkill", "memory"])
    parser.add_argument("--once", metavar="DIR")
    args = parser.parse_known_args()[0]


def _first_try(name):
    if args.once is None:
        return True
    try:
        os.close(os.open(os.path.join(args.once, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    for name in names:
        if "bad" not in name or not _first_try(name):
            continue
        if args.fault == "raise":
            raise ValueError(f"cannot score {name}")
        if args.fault == "short":
            return names[:-1]
        if args.fault == "wrong_type":
            return {"name": name}
        if args.fault == "hang":
            time.sleep(3600)
        if args.fault == "exit":
            os._exit(3)
        if args.fault == "segfault":
            ctypes.string_at(0)
        if args.fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if args.fault == "memory":
            raise MemoryError(f"cannot allocate the buffers for {name}")
    return names
