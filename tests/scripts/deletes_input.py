"""init() deletes the input named by DELETE_URL (after the coordinator listed it); run() echoes names and contents."""

import json
import os

import fsspec


def init():
    fs, path = fsspec.core.url_to_fs(os.environ["DELETE_URL"], **json.loads(os.environ["STORAGE_OPTIONS"]))
    fs.rm(path)


def run(mini_batch):
    return [f"{os.path.basename(p)} {open(p).read().strip()}" for p in mini_batch]
