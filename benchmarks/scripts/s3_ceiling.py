"""Reference for the storage benchmark: a bare loop of concurrent s3fs reads, the server's ceiling.

    python s3_ceiling.py URL_PREFIX ENDPOINT OUTPUT [--mode cat|threads] [--threads 16] [--limit N]

Lists ``URL_PREFIX`` (``s3://bucket/folder``) with ``fs.find``, then reads every
object whole (``--limit N``: only the first N, for a quick probe): ``--mode
cat`` with one ``fs.cat(paths)`` call (s3fs runs the GETs concurrently on its
event loop), ``--mode threads`` with ``fs.cat_file`` in a thread pool. Writes
one ``"<name>: <bytes>"`` line per object to OUTPUT and ``phase NAME: SECONDS``
lines (seconds since the script started; ``phase cpu`` is the CPU time this
process used, all threads) to stderr. Credentials are dummies
(moto accepts any); the region is eu-west-1.
"""

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

T0 = time.perf_counter()

import s3fs  # noqa: E402


def phase(name):
    print(f"phase {name}: {time.perf_counter() - T0:.3f}s", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix")
    parser.add_argument("endpoint")
    parser.add_argument("output")
    parser.add_argument("--mode", choices=("cat", "threads"), default="cat")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    fs = s3fs.S3FileSystem(key="bench-key", secret="bench-secret",
                           client_kwargs={"endpoint_url": args.endpoint, "region_name": "eu-west-1"})
    paths = sorted(fs.find(args.prefix))[:args.limit]
    phase("listed")
    if args.mode == "cat":
        contents = fs.cat(paths)  # a dict path -> bytes; raises on the first failed object
        sizes = [len(contents[p]) for p in paths]
    else:
        with ThreadPoolExecutor(args.threads) as pool:
            sizes = [len(b) for b in pool.map(fs.cat_file, paths)]
    phase("read")
    print(f"phase cpu: {time.process_time():.3f}s", file=sys.stderr, flush=True)
    with open(args.output, "w", encoding="utf-8") as out:
        out.write("".join(f"{p.rsplit('/', 1)[-1]}: {n}\n" for p, n in zip(paths, sizes)))


if __name__ == "__main__":
    main()
