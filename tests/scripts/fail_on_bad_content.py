"""Raises for a file that holds 'bad' (fix the file, then --retry-failed); otherwise '<file name> <content>'."""

import os


def run(mini_batch):
    rows = []
    for path in mini_batch:
        content = open(path).read().strip()
        if content == "bad":
            raise ValueError(f"{os.path.basename(path)} holds bad data")
        rows.append(f"{os.path.basename(path)} {content}")
    return rows
