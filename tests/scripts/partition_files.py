"""Files partitioned by their paths (the shape of Azure's total_file_size.py): one row per file,
'<file name>,<size>,<key=value;...>,<files in the mini-batch>'. run() raises for a mini-batch
holding a file beside which a '<name>.bad' marker exists (remove it to fix the input)."""

import os


def run(mini_batch, mini_batch_context):
    values = ";".join(f"{k}={v}" for k, v in mini_batch_context.partition_key_value.items())
    bad = [p for p in mini_batch if os.path.exists(p + ".bad")]
    if bad:
        raise RuntimeError(f"{os.path.basename(bad[0])} is marked bad")
    return [f"{os.path.basename(p)},{os.path.getsize(p)},{values},{len(mini_batch)}" for p in mini_batch]
