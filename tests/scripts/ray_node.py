"""Each item's row names the node that ran it (batchinfer.node_id()) and the GPUs Ray gave the actor;
prints a line on stdout and one on stderr per mini-batch (they belong in logs/worker-N.log).

With WAIT_FOR_NODES=n, run() first waits until actors on n distinct nodes have called it (markers in
FAULTS_DIR), so that every node surely gets work, however fast the first actor is.
"""

import os
import sys
import time
from pathlib import Path

import batchinfer


def run(mini_batch):
    folder = Path(os.environ["FAULTS_DIR"])
    (folder / f"node.{batchinfer.node_id()}").touch()
    while len(list(folder.glob("node.*"))) < int(os.environ.get("WAIT_FOR_NODES", "1")):
        time.sleep(0.05)
    print(f"stdout line for {len(mini_batch)} items")
    print(f"stderr line on {batchinfer.node_id()}", file=sys.stderr)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "none")
    return [f"{os.path.basename(path)} {batchinfer.node_id()} {gpus}" for path in mini_batch]
