"""listing: how soon the first mini-batch of a big folder runs, and the coordinator's memory.

Folders of 200,000 (``--quick``: 50,000) and of 20,000 empty files, default
``mini_batch_size`` (10 files), 2 processes. The entry script
(``first_call_entry.py``) does nothing in ``init()``; its first ``run()``
call writes ``time.time()`` once (O_EXCL) to a file: "first mini-batch
dispatched" = that time minus the time just before the process was started.
The coordinator's peak RSS is that of the ``batchinfer`` process alone (not
the fork server nor the workers), sampled every 50 ms over the whole job.

The early total (issue 15): the big folder's job is run once more under a
pseudo-terminal, so that the real rich bar is drawn, and the time from just
before the process starts until the bar first shows ``/20000`` (the total:
200,000 files / 10) is taken from its output as it arrives. The bar rather
than ``.batchinfer/status.json``: status.json is written at most once a
second, which would blur a 2 s target by up to 1 s, while the bar redraws
ten times a second; both show the same number (``Progress.shown_total``).

Targets: first mini-batch < 1 s for 200,000 files; coordinator peak RSS
< 250 MB, and not growing with the number of files (here: the big folder's
peak at most 10% above the small one's); the total shown < 2 s.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

from benchmarks._harness import (
    MB,
    BenchmarkError,
    BenchResult,
    Context,
    ProcResult,
    Row,
    Target,
    measure,
    median_of,
    run_batchinfer,
    write_job,
)

NAME = "listing"
BIG = 200_000
BIG_QUICK = 50_000
SMALL = 20_000


def make_empty_files(ctx: Context, count: int) -> Path:
    """A folder of ``count`` empty files (made once per run)."""
    folder = ctx.workdir / "data" / f"empty-{count}"
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        os.close(os.open(folder / f"e_{i:07d}", os.O_WRONLY | os.O_CREAT, 0o644))
    done.touch()
    return folder


def run_under_a_terminal(ctx: Context, job: Path, label: str, total: int) -> ProcResult:
    """Run the job with the bar drawn on a pseudo-terminal; ``extra["total_shown_s"]``: when the bar first
    showed ``/<total>``, from just before the process started. Its output is kept as the run's stderr."""
    run_dir = ctx.fresh_dir(label)
    err_path = run_dir / "batchinfer.stderr"
    master, slave = pty.openpty()
    start_epoch, t0 = time.time(), time.perf_counter()
    proc = subprocess.Popen([ctx.python, "-m", "batchinfer", "run", str(job), "--output", str(run_dir / "out")],
                            stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL, cwd=run_dir,
                            env=ctx.env(TERM="xterm", COLUMNS="160", BENCH_FIRST_RUN_FILE=str(run_dir / "first.txt")))
    os.close(slave)
    wanted, shown_at, tail = re.compile(rf"\d/{total}\b"), None, ""
    with open(err_path, "wb") as err:
        while True:
            ready, _, _ = select.select([master], [], [], 0.05)
            try:
                chunk = os.read(master, 65536) if ready else b""
            except OSError:
                break  # the process closed the terminal: it ended
            if ready and not chunk:
                break
            err.write(chunk)
            tail = (tail + re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", chunk.decode(errors="replace")))[-200:]
            if shown_at is None and wanted.search(tail):
                shown_at = time.perf_counter() - t0
            if not ready and proc.poll() is not None:
                break
    os.close(master)
    code = proc.wait(timeout=600)
    wall = time.perf_counter() - t0
    result = ProcResult(wall, start_epoch, 0, 0, code, 1, 0, 0.0, run_dir / "batchinfer.stdout", err_path)
    if code != 0 or shown_at is None:
        raise BenchmarkError(f"batchinfer ({label}): exit {code}, total shown: {shown_at}: {result.stderr_tail()}")
    result.extra["total_shown_s"] = shown_at
    return result


def run(ctx: Context) -> BenchResult:
    """Time to the first run() call and the coordinator's peak RSS, for a big and a small folder."""
    sizes = (BIG_QUICK if ctx.quick else BIG, SMALL)
    tools = []
    for count in sizes:
        ctx.log(f"{NAME}: making {count:,} empty files")
        folder = make_empty_files(ctx, count)
        job = write_job(ctx.workdir / "jobs" / f"listing-{count}.yaml", {
            "name": f"listing-{count}",
            "entry_script": "first_call_entry.py",
            "source_directory": str(ctx.scripts),
            "inputs": {"type": "file", "path": str(folder)},
            "node_count": 1,
            "process_count_per_node": 2,
        })

        def tool(job: Path = job, count: int = count) -> ProcResult:
            stamp = ctx.runs_root / f"first-run-{ctx._runs + 1:04d}.txt"
            result, _ = run_batchinfer(ctx, job, f"listing-{count}", count, env=ctx.env(BENCH_FIRST_RUN_FILE=str(stamp)))
            result.extra["first_dispatch_s"] = float(stamp.read_text()) - result.start_epoch
            result.extra["coordinator_rss_mb"] = result.peak_rss_root / MB
            return result

        tools.append((f"listing-{count}", tool))
        if count == sizes[0]:
            tools.append((f"total-{count}", lambda job=job, count=count: run_under_a_terminal(
                ctx, job, f"total-{count}", count // 10)))
    ctx.log(f"{NAME}: measuring")
    runs = measure(ctx, tools)

    result = BenchResult()
    coordinator = {}
    for count in sizes:
        r = runs[f"listing-{count}"]
        first, rss = median_of(r, "first_dispatch_s"), median_of(r, "coordinator_rss_mb")
        coordinator[count] = rss
        row = Row.from_runs(NAME, f"batchinfer, {count:,} files", count, r,
                            note=f"first mini-batch at {first:.2f}s; coordinator peak RSS {rss:.0f} MB")
        row.extra.update(first_dispatch_s=first, coordinator_rss_mb=rss,
                         first_dispatch_runs=[round(x.extra["first_dispatch_s"], 3) for x in r])
        result.rows.append(row)
        if count == sizes[0]:
            result.targets.append(Target(NAME, f"first mini-batch dispatched, {count:,} files (s)", first, 1.0,
                                         higher_is_better=False))
    big, small = sizes
    total_runs = runs[f"total-{big}"]
    shown = median_of(total_runs, "total_shown_s")
    row = Row.from_runs(NAME, f"batchinfer, {big:,} files, on a terminal", big, total_runs,
                        note=f"bar shows the total ({big // 10:,} mini-batches) at {shown:.2f}s")
    row.peak_rss_mb = None  # not sampled in this run
    row.extra.update(total_shown_s=shown, total_shown_runs=[round(x.extra["total_shown_s"], 3) for x in total_runs])
    result.rows.append(row)
    result.targets.append(Target(NAME, f"total shown by the bar, {big:,} files (s)", shown, 2.0,
                                 higher_is_better=False))
    result.targets.append(Target(NAME, f"coordinator peak RSS, {big:,} files (MB)", coordinator[big], 250,
                                 higher_is_better=False, fmt="{:.0f}"))
    result.targets.append(Target(NAME, f"coordinator peak RSS {big:,} files / {small:,} files", coordinator[big] / coordinator[small],
                                 1.10, higher_is_better=False))
    result.notes.append(f"coordinator peak RSS grows {coordinator[big] - coordinator[small]:+.0f} MB from {small:,} to "
                        f"{big:,} files ({(coordinator[big] - coordinator[small]) * 1024 * 1000 / (big - small):.2f} KB per "
                        f"1,000 files)")
    return result
