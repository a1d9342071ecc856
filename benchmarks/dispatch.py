"""dispatch: batchinfer's cost per mini-batch, with a run() that does nothing but return names.

50,000 tiny files (``--quick``: 10,000), 2 worker processes, ``mini_batch_size``
100 and 1. Reference: ``scripts/pool_ref.py``, a hand-written spawn
``multiprocessing.Pool(2)`` with ``imap_unordered`` (chunksize 1) over the same
mini-batches (lists of 100 or 1 path), returning the names and writing the
same lines to a file, run as a whole process. In the full run, a 2-file job
of each tool gives the fixed cost (interpreter start, workers, exit), so the
per-mini-batch rate can also be given without it ("marginal").

Targets: batchinfer's wall <= 1.05 x the pool's (each size); >= 10,000
mini-batches/s with size 1.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._harness import (
    BenchResult,
    Context,
    Row,
    Target,
    measure,
    run_batchinfer,
    run_reference,
    write_job,
)

NAME = "dispatch"
FILES = 50_000
FILES_QUICK = 10_000
SIZES = (100, 1)


def make_tiny_files(ctx: Context, count: int) -> Path:
    """A folder of ``count`` files of 2 bytes each (made once per run)."""
    folder = ctx.workdir / "data" / f"tiny-{count}"
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        with open(folder / f"file_{i:07d}.txt", "wb") as f:
            f.write(b"x\n")
    done.touch()  # names starting with '.' are skipped by batchinfer and by pool_ref
    return folder


def job_for(ctx: Context, folder: Path, size: int, name: str) -> Path:
    """A job spec: names_entry.py over ``folder`` in mini-batches of ``size``, 2 processes."""
    return write_job(ctx.workdir / "jobs" / f"{name}.yaml", {
        "name": name,
        "entry_script": "names_entry.py",
        "source_directory": str(ctx.scripts),
        "inputs": {"type": "file", "path": str(folder)},
        "mini_batch_size": size,
        "node_count": 1,
        "process_count_per_node": 2,
    })


def pool_tool(ctx: Context, folder: Path, size: int, count: int, label: str):
    """The reference pool over ``folder`` in mini-batches of ``size``."""
    script = str(ctx.scripts / "pool_ref.py")
    return lambda: run_reference(
        ctx, label,
        lambda out, _: [ctx.python, script, str(folder), str(out), "--size", str(size), "--processes", "2"],
        count,
    )


def bi_tool(ctx: Context, job: Path, label: str, count: int):
    """batchinfer on ``job`` as a whole process."""
    return lambda: run_batchinfer(ctx, job, label, count)[0]


def run(ctx: Context) -> BenchResult:
    """Measure both sizes and the fixed cost; return rows and targets."""
    count = FILES_QUICK if ctx.quick else FILES
    ctx.log(f"{NAME}: making {count:,} tiny files")
    folder = make_tiny_files(ctx, count)

    tools = []
    for size in SIZES:
        tools.append((f"pool-{size}", pool_tool(ctx, folder, size, count, f"pool-{size}")))
        tools.append((f"bi-{size}", bi_tool(ctx, job_for(ctx, folder, size, f"dispatch-{size}"), f"bi-{size}", count)))
    if not ctx.quick:
        small = make_tiny_files(ctx, 2)
        tools.append(("pool-fixed", pool_tool(ctx, small, 1, 2, "pool-fixed")))
        tools.append(("bi-fixed", bi_tool(ctx, job_for(ctx, small, 1, "dispatch-fixed"), "bi-fixed", 2)))
    ctx.log(f"{NAME}: measuring")
    runs = measure(ctx, tools)

    result = BenchResult()
    fixed = {tool: Row.from_runs(NAME, tool, 2, runs[f"{tool}-fixed"]).wall_s
             for tool in ("pool", "bi") if f"{tool}-fixed" in runs}
    for size in SIZES:
        batches = -(-count // size)
        pool = Row.from_runs(NAME, f"pool(2) spawn, size {size} (ref)", count, runs[f"pool-{size}"], ratio=1.0)
        bi = Row.from_runs(NAME, f"batchinfer, mini_batch_size {size}", count, runs[f"bi-{size}"])
        bi.ratio = pool.wall_s / bi.wall_s
        for row, tool in ((pool, "pool"), (bi, "bi")):
            per_s = batches / row.wall_s
            marginal = (batches - 2) / (row.wall_s - fixed[tool]) if row.wall_s > fixed.get(tool, row.wall_s) else None
            row.extra.update(mini_batches=batches, mini_batches_per_s=per_s, marginal_mini_batches_per_s=marginal)
            row.note = f"{batches:,} mini-batches, {per_s:,.0f} mb/s" + (
                f" ({marginal:,.0f} mb/s marginal)" if marginal else "")
        result.rows += [pool, bi]
        result.targets.append(Target(NAME, f"batchinfer wall / pool wall, mini_batch_size {size}",
                                     bi.wall_s / pool.wall_s, 1.05, higher_is_better=False))
        if size == 1:
            result.targets.append(Target(NAME, "batchinfer mini-batches/s (end to end), mini_batch_size 1",
                                         bi.extra["mini_batches_per_s"], 10_000, fmt="{:,.0f}"))
            if bi.extra["marginal_mini_batches_per_s"] and pool.extra["marginal_mini_batches_per_s"]:
                result.notes.append(
                    f"marginal rate (fixed cost of a 2-file job taken off), size 1: batchinfer "
                    f"{bi.extra['marginal_mini_batches_per_s']:,.0f} mb/s, pool "
                    f"{pool.extra['marginal_mini_batches_per_s']:,.0f} mb/s")
    for tool, label in (("pool", "pool(2) spawn, 2-file job"), ("bi", "batchinfer, 2-file job")):
        if tool not in fixed:
            continue
        row = Row.from_runs(NAME, label, 2, runs[f"{tool}-fixed"], note="fixed cost: start, workers, exit")
        result.rows.append(row)
    return result
