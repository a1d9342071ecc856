"""Misbehaves once of each kind, by file name: 'kill' SIGKILLs its worker on the first try (kill_once.py:
a marker in --state DIR lets the next try succeed), 'hang' sleeps forever (every try times out), 'bad' raises.

The report's browser test runs it to see a killed worker, a timeout and an exception on one page.
"""

import os
import time

import kill_once

init = kill_once.init


def run(mini_batch):
    for path in mini_batch:
        name = os.path.basename(path)
        if "hang" in name:
            while True:
                time.sleep(1)
        if "bad" in name:
            raise ValueError(f"cannot score {name}")
    return kill_once.run(mini_batch)
