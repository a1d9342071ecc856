"""Returns '<file name> <whether ray is imported in this worker>' for each file."""

import os
import sys


def run(mini_batch):
    return [f"{os.path.basename(p)} {'ray' in sys.modules}" for p in mini_batch]
