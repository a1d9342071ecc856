"""Each item's row names the node that ran it (batchinfer.node_id()) and the GPUs Ray gave the actor;
prints a line on stdout and one on stderr per mini-batch (they belong in logs/worker-N.log)."""

import os
import sys

import batchinfer


def run(mini_batch):
    print(f"stdout line for {len(mini_batch)} items")
    print(f"stderr line on {batchinfer.node_id()}", file=sys.stderr)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "none")
    return [f"{os.path.basename(path)} {batchinfer.node_id()} {gpus}" for path in mini_batch]
