"""In the shape of the batch-scoring tutorial's script: Run, Model and Dataset from azureml.core,
Run.get_context(), --model_name and --labels_name, labels fetched with Dataset.get_by_name(...).download()
into the working folder, a model file found with Model.get_model_path. The 'model' maps a file's first
byte to a label index; the tutorial's Inception network needs TensorFlow 1."""

import argparse
import os

from azureml.core import Run
from azureml.core.dataset import Dataset
from azureml.core.model import Model


def init():
    global labels, table
    parser = argparse.ArgumentParser(description="Start a model serving")
    parser.add_argument("--model_name", dest="model_name", required=True)
    parser.add_argument("--labels_name", dest="labels_name", required=True)
    args, _ = parser.parse_known_args()
    run = Run.get_context(allow_offline=False)
    workspace = run.experiment.workspace
    label_ds = Dataset.get_by_name(workspace=workspace, name=args.labels_name)
    label_ds.download(target_path=".", overwrite=True)
    with open("labels.txt") as f:
        labels = [line.rstrip() for line in f]
    with open(Model.get_model_path(args.model_name)) as f:
        table = [int(x) for x in f.read().split()]
    run.log("classes", len(labels))


def run(mini_batch):
    result = []
    for path in mini_batch:
        with open(path, "rb") as f:
            first = f.read(1)[0]
        result.append(os.path.basename(path) + ": " + labels[table[first % len(table)]])
    return result
