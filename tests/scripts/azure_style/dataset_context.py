"""Reads mini_batch_context.dataset as ParallelRunStep scripts do: prints it, and returns per item what
the dataset says (to_path() for files, to_pandas_dataframe() for rows)."""

import os


def init():
    print("init")


def run(mini_batch, mini_batch_context):
    dataset = mini_batch_context.dataset
    print(f"dataset = {dataset}")
    if isinstance(mini_batch, list):
        relative = dataset.to_path()
        return [f"{os.path.basename(p)} {r} {len(relative)}" for p, r in zip(mini_batch, relative)]
    frame = dataset.to_pandas_dataframe()
    frame["rows_in_dataset"] = len(frame)
    return frame
