"""Reference for the dispatch and cpu benchmarks: a hand-written multiprocessing pool.

    python pool_ref.py FOLDER OUTPUT --size N [--processes 2] [--work names|cpu]

Lists FOLDER (names sorted, names starting with '.' skipped, as batchinfer
does), cuts the paths into mini-batches of N, and maps them with
``multiprocessing.get_context("spawn").Pool(P)`` and ``imap_unordered``
(chunksize 1); each task returns the files' names (``--work cpu``: after
``cpu_work.burn(BENCH_CPU_LOOPS)`` per file), and the parent writes one line
per name to OUTPUT. ``--processes 0`` does the same work in this one process
(the cpu benchmark's single-process baseline).
"""

import argparse
import multiprocessing
import os

from cpu_work import burn

LOOPS = int(os.environ.get("BENCH_CPU_LOOPS", "0"))


def names(batch):
    """What the dispatch benchmark's run() does."""
    return [os.path.basename(path) for path in batch]


def cpu(batch):
    """What the cpu benchmark's run() does."""
    out = []
    for path in batch:
        burn(LOOPS)
        out.append(os.path.basename(path))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("output")
    parser.add_argument("--size", type=int, required=True, help="paths per mini-batch")
    parser.add_argument("--processes", type=int, default=2, help="0: no pool, this process only")
    parser.add_argument("--work", choices=["names", "cpu"], default="names")
    args = parser.parse_args()

    with os.scandir(args.folder) as scan:
        paths = [e.path for e in sorted(scan, key=lambda e: e.name) if not e.name.startswith(".")]
    batches = [paths[i:i + args.size] for i in range(0, len(paths), args.size)]
    fn = cpu if args.work == "cpu" else names
    with open(args.output, "w", encoding="utf-8") as out:
        if args.processes == 0:
            results = map(fn, batches)
            out.writelines("".join(f"{x}\n" for x in result) for result in results)
        else:
            with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
                out.writelines("".join(f"{x}\n" for x in result) for result in pool.imap_unordered(fn, batches, chunksize=1))


if __name__ == "__main__":
    main()
