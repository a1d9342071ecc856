"""Raises when a mini-batch holds a file whose name contains 'bad'; otherwise echoes names."""

import os


def run(mini_batch):
    for path in mini_batch:
        if "bad" in os.path.basename(path):
            raise ValueError(f"cannot score {os.path.basename(path)}")
    return [os.path.basename(p) for p in mini_batch]
