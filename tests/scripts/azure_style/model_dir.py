"""Opens its models the way Azure ML's documentation and batch-endpoint scripts do.

--open RELATIVE: read $AZUREML_MODEL_DIR/RELATIVE (a file, or a folder's weights.txt), as in
``os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl")``; --glob PATTERN: read the first match
(a file, or a folder's weights.txt) of ``glob.glob(os.environ["AZUREML_MODEL_DIR"] + PATTERN)``, as
Azure's batch drivers do with "/*/" (MLflow) and "/*/*.pt" (PyTorch); --name NAME: also report
Model.get_model_path(NAME).
"""

import argparse
import glob
import json
import os

from azureml.core.model import Model


def init():
    global seen
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", action="append", default=[])
    parser.add_argument("--glob", action="append", default=[])
    parser.add_argument("--name", action="append", default=[])
    args, _ = parser.parse_known_args()
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    seen = {"opened": {}, "model_path": {}, "listing": sorted(os.listdir(model_dir))}
    for relative in args.open:
        seen["opened"][relative] = _read(os.path.join(model_dir, relative))
    for pattern in args.glob:
        seen["opened"][pattern] = _read(glob.glob(model_dir + pattern)[0])
    for name in args.name:
        seen["model_path"][name] = Model.get_model_path(name)


def _read(path):
    with open(os.path.join(path, "weights.txt") if os.path.isdir(path) else path) as f:
        return f.read().strip()


def run(mini_batch):
    return [json.dumps(seen, sort_keys=True) for _ in mini_batch]
