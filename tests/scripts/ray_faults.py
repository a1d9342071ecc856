"""A file's first try can hang in run() so that a test acts at a known point; every later try succeeds.

FAULTS_DIR (environment_variables) is a folder shared with the test. The first try of the file named
HANG_ON writes ``hanging.<pid>`` there and sleeps for an hour: the test then kills the actor (or the
coordinator), or run_invocation_timeout does. With HANG_ON_NODE (a Ray node id), every first try on
that node hangs the same way (the test removes the node), and tries on other nodes wait until one
hangs there (so that node gets work). GO_FILE: run() waits until the test creates it (to look at the
processes of a running job). HANG_IN_INIT: init() hangs the same way, after a line on stdout.
"""

import os
import time
from pathlib import Path

import batchinfer

FOLDER = Path(os.environ["FAULTS_DIR"])


def _hang() -> None:
    (FOLDER / f"hanging.{os.getpid()}").write_text(batchinfer.node_id())
    time.sleep(3600)


def init():
    print(f"init() on node {batchinfer.node_id()}", flush=True)
    if os.environ.get("HANG_IN_INIT"):
        _hang()


def run(mini_batch):
    rows = []
    for path in mini_batch:
        name = os.path.basename(path)
        tried = FOLDER / f"{name}.tried"
        first = not tried.exists()
        tried.touch()
        if first and (name == os.environ.get("HANG_ON") or batchinfer.node_id() == os.environ.get("HANG_ON_NODE")):
            _hang()
        lost = os.environ.get("HANG_ON_NODE")
        while lost and batchinfer.node_id() != lost and not list(FOLDER.glob("hanging.*")):
            time.sleep(0.05)
        go = os.environ.get("GO_FILE")
        while go and not os.path.exists(go):
            time.sleep(0.05)
        print(f"ran {name}")
        rows.append(name)
    return rows
