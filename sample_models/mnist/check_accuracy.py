"""Check batchinfer's MNIST output against the labels.

    python sample_models/mnist/check_accuracy.py OUTPUT_FILE [LABELS_CSV] [--min 0.96]

OUTPUT_FILE holds lines ``"<name>: <digit>"``, as the sample entry scripts
return them (batchinfer's ``parallel_run_step.txt``; ``-`` reads stdin).
LABELS_CSV has the columns ``file_name,label`` and defaults to
``sample_data/mnist/labels.csv`` in this repository. Prints for example::

    1000 rows, 1000 unique, accuracy 0.9730

and exits 1 when the accuracy is below ``--min``, when a name has no label,
when a name appears twice, when a labelled digit has no output row (unless
``--allow-missing``) or when a line cannot be parsed. Standard library only.
"""

import argparse
import csv
import os
import sys
from pathlib import Path

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "sample_data" / "mnist" / "labels.csv"


def read_labels(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"file_name", "label"} <= set(reader.fieldnames):
            raise SystemExit(f"Error: {path}: expected the columns file_name,label")
        return {row["file_name"]: row["label"].strip() for row in reader}


def read_predictions(lines, source):
    """Yield (line number, name, digit) for each non-blank ``"<name>: <digit>"`` line."""
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        name, sep, digit = line.rpartition(": ")
        if not sep or not name or not digit.strip().isdigit():
            raise SystemExit(f'Error: {source}, line {number}: expected "<name>: <digit>", got {line!r}')
        # Accept paths too: the labels are keyed by base name.
        yield number, os.path.basename(name), digit.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_file", help='file of "<name>: <digit>" lines, or - for stdin')
    parser.add_argument("labels_csv", nargs="?", default=str(DEFAULT_LABELS),
                        help="CSV with file_name,label (default: %(default)s)")
    parser.add_argument("--min", type=float, default=0.96, dest="min_accuracy",
                        help="lowest accuracy that passes (default: %(default)s)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="do not fail when some labelled digits have no output row")
    args = parser.parse_args(argv)

    labels = read_labels(args.labels_csv)
    if args.output_file == "-":
        rows = list(read_predictions(sys.stdin, "<stdin>"))
    else:
        with open(args.output_file, encoding="utf-8") as f:
            rows = list(read_predictions(f, args.output_file))

    problems = []
    seen = {}
    correct = 0
    for number, name, digit in rows:
        if name in seen:
            problems.append(f"{name} appears twice (lines {seen[name]} and {number})")
            continue
        seen[name] = number
        if name not in labels:
            problems.append(f"{name} (line {number}) has no label in {args.labels_csv}")
        elif digit == labels[name]:
            correct += 1
    missing = len(set(labels) - set(seen))

    accuracy = correct / len(seen) if seen else 0.0
    print(f"{len(rows)} rows, {len(seen)} unique, accuracy {accuracy:.4f}")
    if missing:
        note = "" if args.allow_missing else " (use --allow-missing to accept that)"
        print(f"{missing} of {len(labels)} labelled digits have no output row{note}", file=sys.stderr)
        if not args.allow_missing:
            problems.append(f"{missing} labelled digits have no output row")
    if accuracy < args.min_accuracy:
        problems.append(f"accuracy {accuracy:.4f} is below --min {args.min_accuracy}")
    for problem in problems[:20]:
        print(f"Error: {problem}", file=sys.stderr)
    if len(problems) > 20:
        print(f"Error: ... and {len(problems) - 20} more", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
