"""tabular: a big CSV and the same rows as Parquet through a vectorised scoring function.

A 1 GiB CSV (``--quick``: 100 MiB) of ``id`` + ten float columns ``f0`` ..
``f9`` (seeded random normals, 6 decimals), and the same rows as Parquet
(row groups of 131,072 rows, about 11 MB). The function (``tabular_score.py``)
is a weighted sum and a threshold, returning a DataFrame (``id``, ``label``)
written as ``"<id> <label>"`` lines. batchinfer: 2 processes,
``mini_batch_size`` 16MB. Reference: ``tabular_ref.py``, pyarrow
(``pyarrow.csv.read_csv`` / ``pq.read_table``, Arrow limited to one thread)
+ the same function + the same lines, in one process; the ideal is its time / 2.
The full run also shows pyarrow with all its threads, for comparison.

Target: batchinfer >= 0.85 of the ideal, for CSV and for Parquet.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._harness import BenchResult, Context, Row, Target, measure, run_batchinfer, run_reference, write_job

NAME = "tabular"
SIZE = 1 << 30
SIZE_QUICK = 100 << 20
CHUNK_ROWS = 262_144
ROW_GROUP_ROWS = 131_072
SEED = 20261125


def make_tables(ctx: Context, size: int) -> tuple[Path, Path, int]:
    """(csv, parquet, rows): whole chunks of CHUNK_ROWS rows until the CSV reaches ``size`` bytes."""
    folder = ctx.workdir / "data" / f"tabular-{size}"
    csv_path, parquet_path, done = folder / "data.csv", folder / "data.parquet", folder / ".rows"
    if done.exists():
        return csv_path, parquet_path, int(done.read_text())
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    schema = pa.schema([("id", pa.int64())] + [(f"f{i}", pa.float64()) for i in range(10)])
    rows = 0
    with pacsv.CSVWriter(csv_path, schema) as csv_writer, pq.ParquetWriter(parquet_path, schema) as pq_writer:
        while csv_path.stat().st_size < size:
            values = rng.standard_normal((CHUNK_ROWS, 10)).round(6)
            table = pa.table(
                [pa.array(np.arange(rows, rows + CHUNK_ROWS, dtype=np.int64))] + [pa.array(values[:, i]) for i in range(10)],
                schema=schema,
            )
            csv_writer.write_table(table)
            pq_writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            rows += CHUNK_ROWS
    done.write_text(str(rows))
    return csv_path, parquet_path, rows


def run(ctx: Context) -> BenchResult:
    """Per format: the one-thread pyarrow reference, batchinfer, and (full run) threaded pyarrow."""
    size = SIZE_QUICK if ctx.quick else SIZE
    ctx.log(f"{NAME}: making a {size / 2**20:,.0f} MiB CSV and the same rows as Parquet")
    csv_path, parquet_path, rows = make_tables(ctx, size)
    ref_script = str(ctx.scripts / "tabular_ref.py")

    def reference(path: Path, fmt: str, threads: bool):
        label = f"tabular-{fmt}-ref" + ("-threads" if threads else "")
        return lambda: run_reference(
            ctx, label,
            lambda out, _: [ctx.python, ref_script, str(path), str(out), "--format", fmt] + (["--threads"] if threads else []),
            rows,
        )

    def batchinfer(path: Path, fmt: str):
        job = write_job(ctx.workdir / "jobs" / f"tabular-{fmt}.yaml", {
            "name": f"tabular-{fmt}",
            "entry_script": "tabular_entry.py",
            "source_directory": str(ctx.scripts),
            "inputs": {"type": "tabular", "path": str(path)},
            "mini_batch_size": "16MB",
            "node_count": 1,
            "process_count_per_node": 2,
        })
        return lambda: run_batchinfer(ctx, job, f"tabular-{fmt}-bi", rows)[0]

    formats = (("csv", csv_path), ("parquet", parquet_path))
    tools = []
    for fmt, path in formats:
        tools.append((f"{fmt}-ref", reference(path, fmt, False)))
        tools.append((f"{fmt}-bi", batchinfer(path, fmt)))
        if not ctx.quick:
            tools.append((f"{fmt}-threads", reference(path, fmt, True)))
    ctx.log(f"{NAME}: measuring ({rows:,} rows)")
    runs = measure(ctx, tools)

    result = BenchResult()
    for fmt, path in formats:
        mib = path.stat().st_size / 2**20
        ref = Row.from_runs(NAME, f"{fmt}: pyarrow + function, 1 thread", rows, runs[f"{fmt}-ref"],
                            note=f"{mib:,.0f} MiB file")
        ideal = Row(NAME, f"{fmt}: ideal = that / 2 (ref)", rows, ref.wall_s / 2, ratio=1.0, computed=True)
        bi = Row.from_runs(NAME, f"{fmt}: batchinfer, 16MB, 2 processes", rows, runs[f"{fmt}-bi"])
        group = [ref, ideal, bi]
        if not ctx.quick:
            group.append(Row.from_runs(NAME, f"{fmt}: pyarrow + function, all threads", rows, runs[f"{fmt}-threads"]))
        for row in group:
            if row is not ideal:
                row.ratio = ideal.wall_s / row.wall_s
            row.extra["mib_per_s"] = mib / row.wall_s
            if row is not ref:
                row.note = f"{mib / row.wall_s:,.0f} MiB/s"
        ref.note += f", {mib / ref.wall_s:,.0f} MiB/s"
        result.rows += group
        result.targets.append(Target(NAME, f"{fmt}: batchinfer throughput / ideal (one process / 2)", bi.ratio, 0.85))
    return result
