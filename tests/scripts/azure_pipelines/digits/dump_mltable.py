"""Writes an MLTable beside the prepared files (the shape of Azure's dump_mltable.py)."""

import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--output_folder", required=True)
args, _ = parser.parse_known_args()
with open(os.path.join(args.output_folder, "MLTable"), "w") as f:
    f.write("paths:\n  - folder: ./digits\n")
print("Saved MLTable file")
