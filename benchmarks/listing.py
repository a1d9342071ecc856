"""listing: how soon the first mini-batch of a big folder runs, and the coordinator's memory.

Folders of 200,000 (``--quick``: 50,000) and of 20,000 empty files, default
``mini_batch_size`` (10 files), 2 processes. The entry script
(``first_call_entry.py``) does nothing in ``init()``; its first ``run()``
call writes ``time.time()`` once (O_EXCL) to a file: "first mini-batch
dispatched" = that time minus the time just before the process was started.
The coordinator's peak RSS is that of the ``batchinfer`` process alone (not
the fork server nor the workers), sampled every 50 ms over the whole job.

Targets: first mini-batch < 1 s for 200,000 files; coordinator peak RSS
< 250 MB, and not growing with the number of files (here: the big folder's
peak at most 10% above the small one's).
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks._harness import (
    MB,
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
    result.targets.append(Target(NAME, f"coordinator peak RSS, {big:,} files (MB)", coordinator[big], 250,
                                 higher_is_better=False, fmt="{:.0f}"))
    result.targets.append(Target(NAME, f"coordinator peak RSS {big:,} files / {small:,} files", coordinator[big] / coordinator[small],
                                 1.10, higher_is_better=False))
    result.notes.append(f"coordinator peak RSS grows {coordinator[big] - coordinator[small]:+.0f} MB from {small:,} to "
                        f"{big:,} files ({(coordinator[big] - coordinator[small]) * 1024 * 1000 / (big - small):.2f} KB per "
                        f"1,000 files)")
    return result
