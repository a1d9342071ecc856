"""Echoes '<file name> <content>'; raises on a file holding 'bad'; a mini-batch holding 'wrong' gets a dict back.

A user fixes an input by rewriting its content, so --retry-failed can then score it.
"""

import os


def run(mini_batch):
    contents = [open(p).read().strip() for p in mini_batch]
    if "wrong" in contents:
        return {"not": "a list"}  # a wrong return type: the whole mini-batch fails, it is not bisected
    for path, content in zip(mini_batch, contents):
        if content == "bad":
            raise ValueError(f"cannot score {os.path.basename(path)}")
    return [f"{os.path.basename(p)} {c}" for p, c in zip(mini_batch, contents)]
