"""summary_only: writes its own file per mini-batch under batchinfer.output_dir()."""

import os

import batchinfer


def run(mini_batch):
    name = os.path.basename(mini_batch[0]) + ".out"
    with open(os.path.join(batchinfer.output_dir(), name), "w") as f:
        f.write("\n".join(os.path.basename(p) for p in mini_batch))
    return [True] * len(mini_batch)
