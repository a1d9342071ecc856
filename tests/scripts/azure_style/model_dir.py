"""Opens its models the way Azure ML's documentation and batch-endpoint scripts do.

--open RELATIVE: read $AZUREML_MODEL_DIR/RELATIVE (a file, or a folder's weights.txt), as in
``os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl")``; --glob: the first folder
``glob.glob(os.environ["AZUREML_MODEL_DIR"] + "/*/")[0]``, as Azure's MLflow batch drivers do;
--name NAME: also report Model.get_model_path(NAME).
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
    parser.add_argument("--glob", action="store_true")
    parser.add_argument("--name", action="append", default=[])
    args, _ = parser.parse_known_args()
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    seen = {"opened": {}, "model_path": {}, "listing": sorted(os.listdir(model_dir))}
    for relative in args.open:
        path = os.path.join(model_dir, relative)
        if os.path.isdir(path):
            path = os.path.join(path, "weights.txt")
        with open(path) as f:
            seen["opened"][relative] = f.read().strip()
    if args.glob:
        folder = glob.glob(model_dir + "/*/")[0]
        with open(os.path.join(folder, "weights.txt")) as f:
            seen["opened"]["glob"] = f.read().strip()
    for name in args.name:
        seen["model_path"][name] = Model.get_model_path(name)


def run(mini_batch):
    return [json.dumps(seen, sort_keys=True) for _ in mini_batch]
