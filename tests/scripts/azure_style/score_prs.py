"""A ParallelRunStep-style scoring script, in the shape of Azure's public samples.

It uses EntryScript for its logger and output folder, reads its own arguments
with parse_known_args (the driver's flags are mixed in on Azure), and loads a
'model' (a text file holding a multiplier) from the folder given by --model.
"""

import argparse
import os
import sys

from azureml_user.parallel_run import EntryScript


def init():
    global multiplier, logger, output_dir
    parser = argparse.ArgumentParser(description="score numbers")
    parser.add_argument("--model", type=str, help="the model folder")
    parser.add_argument("--scale", type=float, default=1.0)
    args, _unknown = parser.parse_known_args()
    entry_script = EntryScript()
    logger = entry_script.logger
    output_dir = entry_script.output_dir
    with open(os.path.join(args.model, "multiplier.txt")) as f:
        multiplier = float(f.read()) * args.scale
    logger.info("argv: %s", sys.argv[1:])
    logger.info("init: agent %s, log_dir %s, working_dir %s", entry_script.agent_name, entry_script.log_dir,
                entry_script.working_dir)


def run(mini_batch):
    logger.info(f"run({len(mini_batch)} files)")
    result_list = []
    for file_path in mini_batch:
        with open(file_path) as f:
            value = float(f.read())
        result_list.append(f"{os.path.basename(file_path)},{value * multiplier:g}")
    return result_list
