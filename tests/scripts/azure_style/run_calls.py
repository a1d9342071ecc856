"""Calls Azure's Run API the way scripts written for Azure do; which call comes from --call.

init() makes the call; run() returns each file's name with the tags this worker's run holds,
so a test sees what get_tags() answers.
"""

import argparse
import io
import json
import os

import numpy as np
from azureml.core import Dataset, Model, Run


def _upload_file(run):
    with open("result.txt", "w") as f:
        f.write("scored\n")
    run.upload_file("outputs/result.txt", "result.txt")


def _upload_folder(run):
    os.makedirs("report/sub", exist_ok=True)
    for name, text in (("report/a.txt", "a"), ("report/sub/b.txt", "b")):
        with open(name, "w") as f:
            f.write(text)
    run.upload_folder("outputs/report", "report")


def _log_image(run):
    with open("plot.png", "wb") as f:
        f.write(b"\x89PNG not really")
    run.log_image("confusion", path="plot.png")


def _model_download(run):
    path = Model(run.experiment.workspace, "clf").download(target_dir="downloaded")
    with open(path) as f:
        run.log("downloaded", f.read())


CALLS = {
    "log": lambda run: run.log("accuracy", 0.93, description="held out"),
    "log_step": lambda run: run.log("loss", 0.25, step=3),
    "log_numpy": lambda run: run.log("mean", np.float64(1.5)),
    "log_list": lambda run: run.log_list("losses", np.array([0.5, 0.25])),
    "log_row": lambda run: run.log_row("per_digit", digit=7, count=12),
    "log_table": lambda run: run.log_table("counts", {"digit": [0, 1], "n": [3, 4]}),
    "log_secret_url": lambda run: run.log("source", "https://acct.blob.core.windows.net/c/x.csv?sv=1&sig=SECRET"),
    "log_secret_name": lambda run: run.log("storage_account_key", "SECRET"),
    "parent_log": lambda run: run.parent.log("rows_scored", 4),
    "tag": lambda run: run.tag("stage", "scoring"),
    "set_tags": lambda run: run.set_tags({"stage": "scoring", "owner": "ada"}),
    "upload_file": _upload_file,
    "upload_stream": lambda run: run.upload_file("outputs/stream.bin", io.BytesIO(b"bytes")),
    "upload_folder": _upload_folder,
    "log_image": _log_image,
    "input_datasets": lambda run: run.log("inputs", {k: v.to_path() for k, v in run.input_datasets.items()}),
    "dataset_rows": lambda run: run.log("rows", len(Dataset.get_by_name(run.experiment.workspace, "labels")
                                                    .to_pandas_dataframe())),
    "model_download": _model_download,
}


def init():
    global azure_run
    parser = argparse.ArgumentParser()
    parser.add_argument("--call", required=True)
    args, _ = parser.parse_known_args()
    azure_run = Run.get_context()
    CALLS[args.call](azure_run)


def run(mini_batch):
    return [f"{os.path.basename(p)} {json.dumps(azure_run.get_tags(), sort_keys=True)}" for p in mini_batch]
