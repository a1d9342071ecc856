"""cpu: how close batchinfer gets to perfect scaling when every item costs the same pure-Python work.

Each item (a tiny file) costs ``cpu_work.burn(loops)``, with ``loops``
calibrated at the start to take about 4 ms here. 4,000 items (``--quick``:
500), ``mini_batch_size`` 1, 2 worker processes. Reference: the ideal, i.e.
the same work in ONE process (``pool_ref.py --processes 0``, a whole process)
divided by 2. For comparison (full run only), the hand-written spawn
``Pool(2)`` on the same mini-batches.

Target: batchinfer >= 0.90 of the ideal (throughput).
"""

from __future__ import annotations

import subprocess

from benchmarks._harness import BenchResult, Context, Row, Target, measure, run_batchinfer, run_reference, write_job
from benchmarks.dispatch import make_tiny_files

NAME = "cpu"
ITEMS = 4_000
ITEMS_QUICK = 500
SECONDS_PER_ITEM = 0.004


def calibrate(ctx: Context) -> int:
    """Loops of ``burn`` that take SECONDS_PER_ITEM, measured in a fresh process."""
    out = subprocess.run(
        [ctx.python, str(ctx.scripts / "cpu_work.py"), "--calibrate", str(SECONDS_PER_ITEM)],
        capture_output=True, text=True, check=True, env=ctx.env(),
    )
    return int(out.stdout.strip())


def run(ctx: Context) -> BenchResult:
    """Measure one process, batchinfer and the pool; the ideal is one process / 2."""
    count = ITEMS_QUICK if ctx.quick else ITEMS
    folder = make_tiny_files(ctx, count)
    loops = calibrate(ctx)
    ctx.log(f"{NAME}: {count:,} items of {loops:,} loops (~{SECONDS_PER_ITEM * 1000:.0f} ms each)")
    env = ctx.env(BENCH_CPU_LOOPS=str(loops))
    job = write_job(ctx.workdir / "jobs" / "cpu.yaml", {
        "name": "cpu",
        "entry_script": "cpu_entry.py",
        "source_directory": str(ctx.scripts),
        "inputs": {"type": "file", "path": str(folder)},
        "mini_batch_size": 1,
        "node_count": 1,
        "process_count_per_node": 2,
        "environment_variables": {"BENCH_CPU_LOOPS": str(loops)},
    })
    script = str(ctx.scripts / "pool_ref.py")

    def reference(processes: int, label: str):
        return lambda: run_reference(
            ctx, label,
            lambda out, _: [ctx.python, script, str(folder), str(out), "--size", "1",
                            "--processes", str(processes), "--work", "cpu"],
            count, env=env,
        )

    tools = [
        ("single", reference(0, "cpu-single")),
        ("batchinfer", lambda: run_batchinfer(ctx, job, "cpu-bi", count)[0]),
    ]
    if not ctx.quick:
        tools.append(("pool", reference(2, "cpu-pool")))
    runs = measure(ctx, tools)
    single = Row.from_runs(NAME, "one process (same work)", count, runs["single"])
    per_item_ms = single.wall_s / count * 1000
    single.note = f"{per_item_ms:.2f} ms per item, start-up included"
    ideal = Row(NAME, "ideal: one process / 2 (ref)", count, single.wall_s / 2, ratio=1.0, computed=True)
    bi = Row.from_runs(NAME, "batchinfer, mini_batch_size 1", count, runs["batchinfer"])
    rows = [single, ideal, bi]
    notes = []
    if "pool" in runs:
        pool = Row.from_runs(NAME, "pool(2) spawn, size 1", count, runs["pool"])
        rows.append(pool)
        notes.append(f"batchinfer throughput / pool(2) throughput: {pool.wall_s / bi.wall_s:.2f} (what this "
                     f"machine gives two processes is in the pool's own ratio to the ideal)")
    for row in rows:
        if row is not ideal:
            row.ratio = ideal.wall_s / row.wall_s
    result = BenchResult(rows=rows, notes=notes)
    result.targets.append(Target(NAME, "batchinfer throughput / ideal (one process x 2)", bi.ratio, 0.90))
    result.notes.append(f"burn({loops:,}) per item; calibrated to {SECONDS_PER_ITEM * 1000:.0f} ms, "
                        f"measured {per_item_ms:.2f} ms per item in the one-process run")
    return result
