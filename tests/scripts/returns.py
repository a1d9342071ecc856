"""Returns what --mode says: short (one fewer), long (one more), none, dict, string, numpy, frame."""

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
