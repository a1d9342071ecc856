"""A partition command step (the shape of Azure's OJ partition_data.py): one CSV per key value, and an MLTable."""

import argparse
import os

import pandas as pd

parser = argparse.ArgumentParser()
parser.add_argument("--data_source", required=True)
parser.add_argument("--partition_keys", required=True)
parser.add_argument("--tabular_output_data", required=True)
parser.add_argument("--note")
args = parser.parse_args()
assert args.note is None, "the optional part of the command was not dropped"
keys = args.partition_keys.split(",")
data = pd.read_csv(args.data_source)
for values, group in data.groupby(keys[0] if len(keys) == 1 else keys):
    values = values if isinstance(values, tuple) else (values,)  # one key: a scalar (pandas 1.x and 2.x alike)
    folder = os.path.join(args.tabular_output_data, *[str(v) for v in values])
    os.makedirs(folder, exist_ok=True)
    group.to_csv(os.path.join(folder, "partitioned_data.csv"), index=False)
with open(os.path.join(args.tabular_output_data, "MLTable"), "w") as f:
    f.write("paths:\n  - pattern: ./**/*.csv\ntransformations:\n  - read_delimited:\n      delimiter: ','\n"
            "      header: all_files_same_headers\n")
print(f"partitioned {len(data)} rows by {keys}")
