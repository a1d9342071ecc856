"""A ParallelRunStep-style script (the shape of Azure's digit_identification.py): one "name: digit" row per file."""

import argparse
import os

from azureml_user.parallel_run import EntryScript


def init():
    global offset
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    args, _ = parser.parse_known_args()
    with open(os.path.join(args.model, "offset.txt")) as f:
        offset = int(f.read())
    EntryScript().logger.info("model loaded from %s", args.model)


def run(mini_batch):
    rows = []
    for path in mini_batch:
        with open(path) as f:
            digit = (int(f.read()) + offset) % 10
        rows.append(f"{os.path.basename(path)}: {digit}")
    return rows
