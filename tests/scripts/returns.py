"""Returns what --mode says: short (one fewer), long (one more), none, dict, string, numpy, frame,
empty ([]), raise, or a mix by mini-batch: empty_or_raise, empty_or_none ([] when the first file's
number is a multiple of 4)."""

import argparse
import os

args = None


def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    args, _ = parser.parse_known_args()


def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    first = int(names[0][1:4]) if names and names[0][1:4].isdigit() else 0
    if args.mode in ("empty_or_raise", "empty_or_none"):
        if first % 4 == 0:
            return []
        if args.mode == "empty_or_none":
            return None
        raise ValueError(f"cannot score {names[0]}")
    if args.mode == "empty":
        return []
    if args.mode == "raise":
        raise ValueError(f"cannot score {names[0]}")
    if args.mode == "short":
        return names[:-1]
    if args.mode == "long":
        return names + ["extra"]
    if args.mode == "none":
        return None
    if args.mode == "dict":
        return {"a": 1}
    if args.mode == "string":
        return "abc"
    if args.mode == "numpy":
        import numpy as np

        return np.array([len(n) for n in names])
    if args.mode == "tuple":
        return tuple(names)
    if args.mode == "frame":
        import pandas as pd

        return pd.DataFrame({"name": names, "length": [len(n) for n in names]})
    raise ValueError(args.mode)
