"""dispatch: batchinfer's cost per mini-batch, with a run() that does nothing but return names.

50,000 tiny files (``--quick``: 10,000), 2 worker processes, ``mini_batch_size``
100 and 1. Reference: ``scripts/pool_ref.py``, a hand-written spawn
``multiprocessing.Pool(2)`` with ``imap_unordered`` (chunksize 1) over the same
mini-batches (lists of 100 or 1 path), returning the names and writing the
same lines to a file, run as a whole process. In the full run, a 2-file job
of each tool gives the fixed cost (interpreter start, workers, exit), so the
per-mini-batch rate can also be given without it ("marginal").

With Ray (the full run, or ``--ray``): the size-1 job again with ``--set
backend=ray`` (one node, 2 actors, batchinfer starting its own Ray instance on
loopback only), and in the full run its 2-file job, for the Ray backend's
mini-batches per second beside the local backend's. No target for it: the
issue asks for the number.

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
    ray_env,
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


def bi_tool(ctx: Context, job: Path, label: str, count: int, ray: bool = False):
    """batchinfer on ``job`` as a whole process; ``ray``: with ``--set backend=ray`` on loopback."""
    if not ray:
        return lambda: run_batchinfer(ctx, job, label, count)[0]

    def one_run():
        env = ray_env(ctx) | {"RAY_TMPDIR": str(ctx.short_tmp())}  # Ray's files in a folder of ours
        try:
            return run_batchinfer(ctx, job, label, count, args=("--set", "backend=ray"), ray=True, env=env)[0]
        finally:
            ctx.cleanup()

    return one_run


def _rates(row: Row, batches: int, fixed: float | None) -> None:
    """Mini-batches per second of a row, end to end and without the fixed cost (marginal); in its note."""
    per_s = batches / row.wall_s
    marginal = (batches - 2) / (row.wall_s - fixed) if fixed is not None and row.wall_s > fixed else None
    row.extra.update(mini_batches=batches, mini_batches_per_s=per_s, marginal_mini_batches_per_s=marginal)
    row.note = f"{batches:,} mini-batches, {per_s:,.0f} mb/s" + (f" ({marginal:,.0f} mb/s marginal)" if marginal else "")


def run(ctx: Context) -> BenchResult:
    """Measure both sizes and the fixed cost; return rows and targets."""
    count = FILES_QUICK if ctx.quick else FILES
    ctx.log(f"{NAME}: making {count:,} tiny files")
    folder = make_tiny_files(ctx, count)

    tools = []
    for size in SIZES:
        tools.append((f"pool-{size}", pool_tool(ctx, folder, size, count, f"pool-{size}")))
        tools.append((f"bi-{size}", bi_tool(ctx, job_for(ctx, folder, size, f"dispatch-{size}"), f"bi-{size}", count)))
    if ctx.with_ray:
        tools.append(("ray-1", bi_tool(ctx, job_for(ctx, folder, 1, "dispatch-1"), "bi-ray-1", count, ray=True)))
    if not ctx.quick:
        small = make_tiny_files(ctx, 2)
        tools.append(("pool-fixed", pool_tool(ctx, small, 1, 2, "pool-fixed")))
        tools.append(("bi-fixed", bi_tool(ctx, job_for(ctx, small, 1, "dispatch-fixed"), "bi-fixed", 2)))
        if ctx.with_ray:
            tools.append(("ray-fixed", bi_tool(ctx, job_for(ctx, small, 1, "dispatch-fixed"), "bi-ray-fixed", 2,
                                               ray=True)))
    ctx.log(f"{NAME}: measuring")
    runs = measure(ctx, tools)

    result = BenchResult()
    fixed = {tool: Row.from_runs(NAME, tool, 2, runs[f"{tool}-fixed"]).wall_s
             for tool in ("pool", "bi", "ray") if f"{tool}-fixed" in runs}
    for size in SIZES:
        batches = -(-count // size)
        pool = Row.from_runs(NAME, f"pool(2) spawn, size {size} (ref)", count, runs[f"pool-{size}"], ratio=1.0)
        bi = Row.from_runs(NAME, f"batchinfer, mini_batch_size {size}", count, runs[f"bi-{size}"])
        bi.ratio = pool.wall_s / bi.wall_s
        for row, tool in ((pool, "pool"), (bi, "bi")):
            _rates(row, batches, fixed.get(tool))
        result.rows += [pool, bi]
        if size == 1 and "ray-1" in runs:
            ray = Row.from_runs(NAME, "batchinfer backend: ray, mini_batch_size 1", count, runs["ray-1"])
            ray.ratio = pool.wall_s / ray.wall_s
            _rates(ray, batches, fixed.get("ray"))
            result.rows.append(ray)
            result.notes.append(
                f"backend ray / local, mini_batch_size 1: {ray.extra['mini_batches_per_s']:,.0f} / "
                f"{bi.extra['mini_batches_per_s']:,.0f} mb/s end to end"
                + (f", {ray.extra['marginal_mini_batches_per_s']:,.0f} / {bi.extra['marginal_mini_batches_per_s']:,.0f}"
                   f" mb/s marginal" if ray.extra["marginal_mini_batches_per_s"] and bi.extra[
                       "marginal_mini_batches_per_s"] else ""))
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
    for tool, label in (("pool", "pool(2) spawn, 2-file job"), ("bi", "batchinfer, 2-file job"),
                        ("ray", "batchinfer backend: ray, 2-file job")):
        if tool not in fixed:
            continue
        row = Row.from_runs(NAME, label, 2, runs[f"{tool}-fixed"], note="fixed cost: start, workers, exit")
        result.rows.append(row)
    return result
