"""A per-partition trainer (the shape of Azure's OJ parallel_train.py): writes one model file per
partition into --model_folder and returns nothing, by design."""

import argparse
import os


def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--target_col", required=True)
    parser.add_argument("--model_folder", required=True)
    args, _ = parser.parse_known_args()


def run(mini_batch, mini_batch_context):
    key = "_".join(str(v) for v in mini_batch_context.partition_key_value.values())
    mean = float(mini_batch[args.target_col].mean())
    with open(os.path.join(args.model_folder, f"{key}.model"), "w") as f:
        f.write(f"{mean}\n")
    return []
