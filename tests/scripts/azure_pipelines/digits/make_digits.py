"""A data-preparation command step (the shape of Azure's prepare_data.py): writes "images" into a folder."""

import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--output_folder", required=True)
parser.add_argument("--count", type=int, default=10)
parser.add_argument("--subfolder", default="")
args, _ = parser.parse_known_args()
folder = os.path.join(args.output_folder, args.subfolder)
os.makedirs(folder, exist_ok=True)
for i in range(args.count):
    with open(os.path.join(folder, f"{i}.txt"), "w") as f:
        f.write(str(i % 10))
print(f"wrote {args.count} digits to {folder}")
