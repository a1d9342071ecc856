"""Reference for the tabular benchmark: pyarrow read + the same scoring function, in one process.

    python tabular_ref.py INPUT OUTPUT --format csv|parquet [--threads]

Reads the whole file with ``pyarrow.csv.read_csv`` or ``pyarrow.parquet.read_table``,
converts it to pandas, applies ``tabular_score.score`` and writes the same
``"<id> <label>"`` lines batchinfer writes. Without ``--threads``, Arrow's
thread pools are limited to one thread, so this is a one-core baseline (the
ideal on N cores is its time / N); with ``--threads`` Arrow uses every core.
"""

import argparse

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tabular_score import score, to_lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--format", choices=["csv", "parquet"], required=True)
    parser.add_argument("--threads", action="store_true", help="let Arrow use every core")
    args = parser.parse_args()

    if not args.threads:
        pa.set_cpu_count(1)
        pa.set_io_thread_count(1)
    if args.format == "csv":
        table = pacsv.read_csv(args.input, read_options=pacsv.ReadOptions(use_threads=args.threads))
    else:
        table = pq.read_table(args.input, use_threads=args.threads)
    frame = table.to_pandas(use_threads=args.threads)
    del table
    with open(args.output, "wb") as out:
        out.write(to_lines(score(frame)))


if __name__ == "__main__":
    main()
