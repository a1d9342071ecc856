"""Reads its models and side input in init(), through every helper, and returns what it read in each row."""

import json
import os

import batchinfer
from azureml.core import Model

seen = {}


def _tree(root):
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f)).read()
            for d, _, files in os.walk(root, followlinks=True) for f in files}


def init():
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    weights = batchinfer.model_path("weights")
    seen.update(
        weights_path=weights,
        net_path=batchinfer.model_path("net"),
        labels_path=batchinfer.side_input("labels"),
        weights=open(weights).read(),
        weights_azure=open(Model.get_model_path("weights")).read(),
        weights_model_dir=open(os.path.join(model_dir, "weights", "1", os.path.basename(weights))).read(),
        net=_tree(batchinfer.model_path("net")),
        net_model_dir=_tree(os.path.join(model_dir, "net", "1")),
        labels=open(batchinfer.side_input("labels")).read(),
    )


def run(mini_batch):
    return [json.dumps({"item": os.path.basename(p), **seen}, sort_keys=True) for p in mini_batch]
