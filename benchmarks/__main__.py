"""``python -m benchmarks``: run the benchmark suite and print one table (see ``benchmarks/__init__.py``).

    python -m benchmarks [--quick] [--only NAME ...] [--repeat N] [--json PATH]
                         [--workdir DIR] [--keep] [--batchinfer-ref REV] [--[no-]ray]
                         [--wait-quiet S] [--redo-noisy N]

Data, outputs and logs go to a new temporary folder that is removed at the
end (``--keep`` keeps it; ``--workdir`` uses a given folder and keeps it, and
data already made there is reused).

Which batchinfer is measured: a copy of the working tree's ``batchinfer/``
taken at the start (so edits made while the suite runs do not mix into it),
or with ``--batchinfer-ref REV`` the package as committed at git revision REV
(``git archive``). Either copy is byte-compiled in the workdir (this
environment may set PYTHONDONTWRITEBYTECODE, and a user's installed package
has its bytecode) and put first on PYTHONPATH of every measured process.
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import NAMES
from benchmarks._harness import REPO, BenchmarkError, BenchResult, Context, format_report, machine_info, report_json


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _snapshot(rev: str | None, workdir: Path) -> tuple[str, str]:
    """Copy ``batchinfer/`` (working tree, or git ``rev``) into the workdir; (PYTHONPATH entry, description)."""
    target = workdir / "batchinfer-src"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if rev is None:
        shutil.copytree(REPO / "batchinfer", target / "batchinfer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        sha = _git("rev-parse", "--short=10", "HEAD")
        dirty = _git("status", "--porcelain", "--", "batchinfer")
        description = f"working tree at git {sha or '?'}" + (" + uncommitted changes in batchinfer/" if dirty else "")
    else:
        sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
        if not sha:
            raise SystemExit(f"benchmarks: error: {rev!r} is not a git revision of {REPO}")
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "batchinfer"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
        description = f"git {sha[:10]} ({rev})"
    return str(target), description


def _compile(*folders: Path) -> None:
    """Byte-compile the measured Python code once, so no run pays for it."""
    for folder in folders:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder)], check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (still median of --repeat runs)")
    parser.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(NAMES)})")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the median is reported (default 3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--workdir", type=Path, help="use (and keep) this folder for data and outputs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--batchinfer-ref", metavar="REV", help="benchmark batchinfer/ as committed at REV")
    parser.add_argument("--ray", action=argparse.BooleanOptionalAction, default=None,
                        help="run the Ray rows: mnist's Ray references and batchinfer with backend ray, "
                             "dispatch's backend ray (default: in the full run only)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each run, wait up to S seconds for other processes to go quiet (default 0)")
    parser.add_argument("--redo-noisy", type=int, default=0, metavar="N",
                        help="redo a run during which other processes used > 0.25 cores, up to N times (default 0)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.repeat < 3:
        print("benchmarks: warning: fewer than 3 runs per tool; medians are not robust", file=sys.stderr)

    started = time.perf_counter()
    if args.workdir:
        workdir = args.workdir.absolute()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="batchinfer-bench-"))
    ctx = Context(workdir=workdir, quick=args.quick, repeat=args.repeat, wait_quiet_s=args.wait_quiet,
                  redo_noisy=args.redo_noisy, ray=args.ray)
    ctx.pythonpath, source = _snapshot(args.batchinfer_ref, workdir)
    _compile(Path(ctx.pythonpath), ctx.scripts)
    ctx.log(f"workdir {workdir}; batchinfer: {source}")

    results: dict[str, BenchResult] = {}
    failed = False
    try:
        for name in NAMES:
            if args.only and name not in args.only:
                continue
            module = importlib.import_module(f"benchmarks.{name}")
            t0 = time.perf_counter()
            try:
                result = module.run(ctx)
            except BenchmarkError as exc:
                failed = True
                ctx.log(f"{name}: FAILED: {exc}")
                result = BenchResult(notes=[f"FAILED: {str(exc).splitlines()[0]}"])
            result.seconds = time.perf_counter() - t0
            results[name] = result
            ctx.log(f"{name}: done in {result.seconds:.0f}s")
    finally:
        ctx.cleanup()
        if not (args.workdir or args.keep):
            shutil.rmtree(workdir, ignore_errors=True)
        elif results:
            ctx.log(f"kept {workdir}")

    duration = time.perf_counter() - started
    machine = machine_info() | {"batchinfer_source": source}
    mode = "quick" if args.quick else "full"
    print(format_report(results, machine, mode, args.repeat, duration))
    print(f"batchinfer source: {source}")
    if args.json:
        args.json.write_text(json.dumps(report_json(results, machine, mode, args.repeat, duration), indent=2) + "\n")
        ctx.log(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
