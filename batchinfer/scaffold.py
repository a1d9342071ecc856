"""``batchinfer init DIR``: a starter job that runs as it is, to edit into your own."""

from __future__ import annotations

from pathlib import Path

from batchinfer.errors import UsageError

JOB_YAML = """\
# A batchinfer job. Run it with:  batchinfer run {folder}/job.yaml
# Every key is described in batchinfer's README ("The job spec").
# Relative paths are relative to this file's folder.

entry_script: score.py        # defines init() and run(mini_batch)
# source_directory: .         # the script's folder (default: this file's folder)
# arguments: [--threshold, "0.5"]   # the script's sys.argv[1:]

inputs:
  type: file                  # file: run() gets a list of paths; tabular: a pandas DataFrame
  path: data/*.txt            # a path, a glob, a folder, or a list of them

mini_batch_size: 2            # files per run() call (tabular: a size such as 1MB, or 5000rows)
error_threshold: -1           # failed items tolerated over the whole job (-1: all)
run_max_try: 3                # tries per mini-batch
run_invocation_timeout: 60    # seconds one run() may take
output_action: append_row     # each element run() returns becomes a line of parallel_run_step.txt
process_count_per_node: 2     # worker processes (default: the number of CPUs)
# models:
#   my-model: models/model.keras      # batchinfer.model_path("my-model") in the script
# output: outputs/my-job              # default: ./outputs/<name>
"""

SCORE_PY = '''\
"""A batchinfer entry script: init() once per worker, run(mini_batch) for every mini-batch."""

import os

import batchinfer


def init():
    """Load your model here, once per worker process (e.g. batchinfer.model_path("my-model"))."""
    batchinfer.logger().info("init() done")


def run(mini_batch):
    """Score a list of file paths; return one result per item (a list, numpy array or DataFrame)."""
    results = []
    for path in mini_batch:
        with open(path, encoding="utf-8") as f:
            words = len(f.read().split())
        results.append(f"{os.path.basename(path)}: {words} words")
    return results
'''

SAMPLES = {
    "data/hello.txt": "hello world\n",
    "data/lorem.txt": "lorem ipsum dolor sit amet\n",
    "data/numbers.txt": "one two three\n",
}


def write_scaffold(folder: Path) -> list[Path]:
    """Write job.yaml, score.py and a few sample inputs into ``folder``; never overwrite a file."""
    files = {"job.yaml": JOB_YAML.format(folder=folder), "score.py": SCORE_PY, **SAMPLES}
    existing = [name for name in files if (folder / name).exists()]
    if existing:
        raise UsageError(f"{folder / existing[0]} already exists", hint="choose an empty or new folder")
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
