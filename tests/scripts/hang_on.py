"""Sleeps forever on any file whose name contains 'hang'; echoes the others."""

import os
import time


def run(mini_batch):
    for path in mini_batch:
        if "hang" in os.path.basename(path):
            while True:
                time.sleep(1)
    return [os.path.basename(p) for p in mini_batch]
