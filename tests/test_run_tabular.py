"""Tabular inputs: CSV, Parquet and JSON lines, cut into mini-batches of one file each."""

from __future__ import annotations

import collections

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def frame(start: int, count: int) -> pd.DataFrame:
    ids = range(start, start + count)
    return pd.DataFrame({"id": [f"r{i:05d}" for i in ids], "value": [i * 0.5 for i in ids],
                         "group": [f"g{i % 3}" for i in ids]})


def rows_per_batch(run) -> collections.Counter:
    """'<id> <batch rows>' rows -> how many mini-batches had how many rows."""
    sizes = collections.Counter(int(r.split()[1]) for r in run.rows())
    return collections.Counter({size: count // size for size, count in sizes.items()})


def ids(run) -> list[str]:
    return sorted(r.split()[0] for r in run.rows())


def test_csv_split_across_two_files_keeps_header_and_every_row(tmp_path, job):
    (tmp_path / "t").mkdir()
    frame(0, 2000).to_csv(tmp_path / "t" / "a.csv", index=False)
    frame(2000, 500).to_csv(tmp_path / "t" / "b.csv", index=False)
    size_a = (tmp_path / "t" / "a.csv").stat().st_size
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t"}, mini_batch_size="10KB")
    assert run.code == 0, run.stderr
    assert ids(run) == [f"r{i:05d}" for i in range(2500)]  # every row once: no header row, no loss at cuts
    summary = run.summary
    assert summary["items_total"] == summary["items_succeeded"] == 2500
    assert summary["mini_batches_total"] >= size_a // (10 * 1024) + 2
    # no mini-batch holds rows of both files: the 'r02000' cut falls between batches
    batches = pd.read_csv(run.output_dir / "logs" / "processed_mini_batches.csv")
    assert batches["items"].sum() == 2500


def test_small_file_is_one_mini_batch(tmp_path, job):
    frame(0, 10).to_csv(tmp_path / "small.csv", index=False)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "small.csv"})
    assert run.code == 0, run.stderr
    assert rows_per_batch(run) == {10: 1}


def test_csv_by_row_count(tmp_path, job):
    frame(0, 250).to_csv(tmp_path / "t.csv", index=False)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t.csv"}, mini_batch_size="100rows")
    assert run.code == 0, run.stderr
    assert rows_per_batch(run) == {100: 2, 50: 1}


def test_parquet_with_many_row_groups_is_split_by_row_groups(tmp_path, job):
    pq.write_table(pa.Table.from_pandas(frame(0, 1000)), tmp_path / "t.parquet", row_group_size=100)
    group_bytes = pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(0).total_byte_size
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t.parquet"}, mini_batch_size=str(group_bytes * 2))
    assert run.code == 0, run.stderr
    assert ids(run) == [f"r{i:05d}" for i in range(1000)]
    counts = rows_per_batch(run)
    assert sum(counts.values()) >= 4 and all(size % 100 == 0 for size in counts)  # whole row groups


def test_parquet_with_one_huge_row_group_is_split_by_rows(tmp_path, job):
    pq.write_table(pa.Table.from_pandas(frame(0, 3000)), tmp_path / "t.parquet", row_group_size=10_000)
    assert pq.ParquetFile(tmp_path / "t.parquet").metadata.num_row_groups == 1
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t.parquet"}, mini_batch_size="4KB")
    assert run.code == 0, run.stderr
    assert ids(run) == [f"r{i:05d}" for i in range(3000)]
    assert sum(rows_per_batch(run).values()) > 3


def test_parquet_by_row_count_across_row_groups(tmp_path, job):
    pq.write_table(pa.Table.from_pandas(frame(0, 1000)), tmp_path / "t.parquet", row_group_size=300)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t.parquet"}, mini_batch_size="250rows")
    assert run.code == 0, run.stderr
    assert ids(run) == [f"r{i:05d}" for i in range(1000)]
    assert rows_per_batch(run) == {250: 4}
    assert run.summary["items_total"] == 1000


def test_jsonl_split_on_lines(tmp_path, job):
    frame(0, 600).to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t.jsonl"}, mini_batch_size="8KB")
    assert run.code == 0, run.stderr
    assert ids(run) == [f"r{i:05d}" for i in range(600)]
    assert sum(rows_per_batch(run).values()) > 2


def test_format_given_explicitly(tmp_path, job):
    frame(0, 20).to_csv(tmp_path / "export.dat", index=False)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "export.dat", "format": "csv"})
    assert run.code == 0, run.stderr
    assert len(run.rows()) == 20


def test_compressed_csv_is_one_mini_batch(tmp_path, job):
    frame(0, 300).to_csv(tmp_path / "t.csv.gz", index=False)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t.csv.gz"}, mini_batch_size="1KB")
    assert run.code == 0, run.stderr
    assert rows_per_batch(run) == {300: 1}


def test_partition_keys_make_one_mini_batch_per_value(tmp_path, job):
    (tmp_path / "t").mkdir()
    frame(0, 90).to_csv(tmp_path / "t" / "a.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame(90, 30)), tmp_path / "t" / "b.parquet")
    run = job("partitions.py", inputs={"type": "tabular", "path": "t"}, partition_keys=["group"])
    assert run.code == 0, run.stderr
    assert collections.Counter(run.rows()) == {"group=g0 rows=40": 40, "group=g1 rows=40": 40, "group=g2 rows=40": 40}
    assert run.summary["mini_batches_total"] == 3


def test_partition_key_missing_is_an_input_error(tmp_path, job):
    frame(0, 5).to_csv(tmp_path / "a.csv", index=False)
    run = job("partitions.py", inputs={"type": "tabular", "path": "a.csv"}, partition_keys=["region"])
    assert run.code == 2
    assert "column 'region' is not in" in run.stderr and "Traceback" not in run.stderr


def test_corrupt_parquet_fails_its_items_only(tmp_path, job):
    (tmp_path / "t").mkdir()
    frame(0, 50).to_csv(tmp_path / "t" / "a.csv", index=False)
    (tmp_path / "t" / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t"}, run_max_try=1)
    assert run.code == 0, run.stderr
    assert len(run.rows()) == 50
    summary = run.summary
    assert summary["items_failed"] == 1 and summary["mini_batches_failed"] == 1
    errors = run.errors()
    assert errors[0]["kind"] == "exception" and "cannot read the mini-batch" in errors[0]["message"]
    assert "b.parquet" in run.log("failed_items.txt")


EMPTY_TABLES = {  # files that hold no rows, each in its own way
    "zero_bytes.csv": b"",
    "header_only.csv": b"id,value,group\n",
    "header_no_newline.tsv": b"id\tvalue\tgroup",
    "blank.jsonl": b"",
}


def _write_empty_tables(folder) -> list[str]:
    folder.mkdir(exist_ok=True)
    for name, content in EMPTY_TABLES.items():
        (folder / name).write_bytes(content)
    pq.write_table(pa.Table.from_pandas(frame(0, 0)), folder / "no_rows.parquet")
    return sorted([*EMPTY_TABLES, "no_rows.parquet"])


def test_files_without_rows_are_scored_as_nothing_with_a_note(tmp_path, job):
    empty = _write_empty_tables(tmp_path / "t")
    frame(0, 30).to_csv(tmp_path / "t" / "rows.csv", index=False)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t"}, mini_batch_size="1KB")
    assert run.code == 0, run.stderr
    assert ids(run) == [f"r{i:05d}" for i in range(30)]
    note = next(line for line in run.stderr.splitlines() if "note:" in line)
    assert f"note: {len(empty)} input files hold no rows: " in note
    assert all(name in note for name in empty), note


def test_only_files_without_rows_is_exit_0_with_a_note_and_no_files_is_exit_2(tmp_path, job, batchinfer):
    _write_empty_tables(tmp_path / "t")
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t"})
    assert run.code == 0, run.stderr
    assert run.summary["items_total"] == 0
    assert "input files hold no rows" in run.stderr
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "readme.txt").write_text("not a table\n")
    for command in ("run", "validate"):
        none = job("tabular_ids.py", inputs={"type": "tabular", "path": "none"}) if command == "run" else \
            batchinfer("validate", str(tmp_path / "job.yaml"))
        assert none.code == 2 and "no input table files match" in none.stderr, none.stderr
