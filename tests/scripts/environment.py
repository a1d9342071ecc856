"""Reports what the worker sees: argv, environment, helpers, working folder and sys.path."""

import json
import os
import sys

import batchinfer


def run(mini_batch):
    seen = {
        "argv": sys.argv[1:],
        "greeting": os.environ.get("GREETING"),
        "model": batchinfer.model_path("clf"),
        "model_dir": os.environ.get("AZUREML_MODEL_DIR"),
        "model_dir_files": sorted(os.listdir(os.environ["AZUREML_MODEL_DIR"])),
        "lookup": open(batchinfer.side_input("lookup")).read().strip(),
        "output_dir": batchinfer.output_dir(),
        "bi_output": os.environ.get("AZUREML_BI_OUTPUT_PATH"),
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "node": batchinfer.node_id(),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "tf_intra": os.environ.get("TF_NUM_INTRAOP_THREADS"),
    }
    batchinfer.logger().info("scored %d files", len(mini_batch))
    return [json.dumps(seen)] * len(mini_batch)
