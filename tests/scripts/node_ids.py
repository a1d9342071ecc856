"""Returns '<file name> <node id>' for each file."""

import os

import batchinfer


def run(mini_batch):
    return [f"{os.path.basename(p)} {batchinfer.node_id()}" for p in mini_batch]
