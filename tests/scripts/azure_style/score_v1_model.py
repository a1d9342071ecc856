"""The seed's style: azureml.core.Model.get_model_path for a model named in the spec."""

import os

from azureml.core import Model


def init():
    global multiplier
    with open(Model.get_model_path("scaler")) as f:
        multiplier = float(f.read())


def run(mini_batch):
    return [f"{os.path.basename(p)}: {float(open(p).read()) * multiplier:g}" for p in mini_batch]
