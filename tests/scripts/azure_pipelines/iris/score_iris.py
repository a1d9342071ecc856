"""An Azure-style tabular scorer (the shape of Azure's iris_prediction.py): returns the mini-batch with a prediction column."""

import argparse
import os


def init():
    global threshold
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    args, _ = parser.parse_known_args()
    with open(os.path.join(args.model, "threshold.txt")) as f:
        threshold = float(f.read())


def run(mini_batch):
    mini_batch["predict"] = ["big" if v > threshold else "small" for v in mini_batch["petal_length"]]
    return mini_batch[["flower", "petal_length", "predict"]]
