"""batchinfer entry script for the dispatch benchmark: return each file's name (no other work)."""

import os


def run(mini_batch):
    """One name per path: the cheapest possible run(), so only batchinfer's overhead is left."""
    return [os.path.basename(path) for path in mini_batch]
