"""Partitioned inputs: values taken from file paths by ``partition_format`` (v1's partition_format,
MLTable's extract_columns_from_partition_format).

File inputs with ``partition_keys``: the files whose paths give equal key values are one
mini-batch, and ``mini_batch_context.partition_key_value`` holds the values (the shape of
Azure's ``total_file_size.py`` notebook). Tabular inputs get the values as columns, and when
every key comes from the paths the partitions are found from the listing alone.
"""

from __future__ import annotations

import collections
import json
import os

import pytest

# Azure's partition-per-folder notebook uploads its four sample files in this layout
AUDIO = {
    "user1/winter/disco.wav": 11, "user1/fall/orchestra.wav": 12, "user2/summer/piano.wav": 13,
    "user3/fall/spirituality.wav": 14, "user4/spring/piano.wav": 15, "user4/fall/piano.wav": 16,
}
AUDIO_PARTITIONS = [  # by (user, genres), sorted by values; files in listing order
    ("user1", "disco", ["user1/winter/disco.wav"]), ("user1", "orchestra", ["user1/fall/orchestra.wav"]),
    ("user2", "piano", ["user2/summer/piano.wav"]), ("user3", "spirituality", ["user3/fall/spirituality.wav"]),
    ("user4", "piano", ["user4/fall/piano.wav", "user4/spring/piano.wav"]),
]


def _write(root, files: dict[str, int]) -> None:
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"w" * size)


LAYOUTS = [
    # (id, inputs.path, partition_format, partition_keys): a format naming an outer folder, as the notebook's
    ("format_names_an_outer_folder", "dataset_partition_test/*/*/*.wav",
     "dataset_partition_test/{user}/{season}/{genres}.wav", ["user", "genres"]),
    ("format_starts_at_the_input_folder", "dataset_partition_test", "{user}/{season}/{genres}.wav", ["user", "genres"]),
    ("format_with_a_leading_slash", "dataset_partition_test", "/{user}/{season}/{genres}.wav", ["user", "genres"]),
]


@pytest.mark.parametrize("path, partition_format, keys", [l[1:] for l in LAYOUTS], ids=[l[0] for l in LAYOUTS])
def test_files_with_equal_path_values_are_one_mini_batch(tmp_path, job, path, partition_format, keys):
    _write(tmp_path / "dataset_partition_test", AUDIO)
    run = job("partition_files.py", inputs={"path": path, "partition_format": partition_format},
              partition_keys=keys, ordered=True, append_row_file_name="file_size_outputs.txt")
    assert run.code == 0, run.stderr
    assert run.summary["mini_batches_total"] == len(AUDIO_PARTITIONS)
    expected = [
        f"{os.path.basename(name)},{AUDIO[name]},user={user};genres={genre},{len(names)}"
        for user, genre, names in AUDIO_PARTITIONS for name in names
    ]
    assert run.rows("file_size_outputs.txt") == expected  # ordered: mini-batch ids follow the sorted values


@pytest.mark.parametrize("files, partition_format, keys, expected", [
    ({"logs/web1-mon.txt": 1, "logs/web1-tue.txt": 2, "logs/db-mon.txt": 3}, "{host}-{day}.txt", ["host"],
     {"host=db": 1, "host=web1": 2}),
    ({"a/x/1.bin": 1, "b/x/2.bin": 2, "b/y/3.bin": 3}, "{top}/{mid}/{name}.bin", ["mid"], {"mid=x": 2, "mid=y": 1}),
    ({"a/x/1.bin": 1, "b/x/2.bin": 2, "b/y/3.bin": 3}, "{top}/{mid}/{name}.bin", ["mid", "top"],
     {"mid=x;top=a": 1, "mid=x;top=b": 1, "mid=y;top=b": 1}),
    ({"logs/2020/01/02/a.log": 1, "logs/2020/01/02/b.log": 2, "logs/2021/12/31/c.log": 3}, "{day:yyyy/MM/dd}/{name}.log",
     ["day"], {"day=2020-01-02 00:00:00": 2, "day=2021-12-31 00:00:00": 1}),
], ids=["part_of_a_file_name", "a_middle_folder", "two_keys_in_their_given_order", "a_date_across_folders"])
def test_partition_layouts(tmp_path, job, files, partition_format, keys, expected):
    _write(tmp_path / "in", files)
    run = job("partition_files.py", inputs={"path": "in", "partition_format": partition_format}, partition_keys=keys)
    assert run.code == 0, run.stderr
    per_partition = collections.Counter(row.split(",")[2] for row in run.rows())
    assert per_partition == expected
    assert run.summary["mini_batches_total"] == len(expected)


@pytest.mark.parametrize("keys, partition_format, fragment", [
    (["genre"], "{user}/{season}/{genres}.wav", "'genre' is not a {field} of the input's partition_format"),
    (["user"], None, "none given"),
    (["user"], "{user}/{season:yy}/{genres}.wav", "the date format 'yy' uses 'y'"),
    (["user"], "{user}{season}/x.wav", "two fields must be separated"),
])
def test_partition_spec_mistakes_are_one_line(tmp_path, job, keys, partition_format, fragment):
    _write(tmp_path / "in", AUDIO)
    inputs = {"path": "in", **({"partition_format": partition_format} if partition_format else {})}
    run = job("partition_files.py", inputs=inputs, partition_keys=keys)
    assert run.code == 2
    assert run.stderr.count("\n") == 1 and fragment in run.stderr, run.stderr


def test_a_file_the_format_does_not_describe_is_named(tmp_path, job):
    _write(tmp_path / "in", {**AUDIO, "README.txt": 3})
    run = job("partition_files.py", inputs={"path": "in", "partition_format": "{user}/{season}/{genres}.wav"},
              partition_keys=["user"])
    assert run.code == 2
    last = run.stderr.splitlines()[-1]
    assert last.startswith("batchinfer: error: input file ") and "README.txt does not match partition_format" in last


def test_failed_partitions_are_listed_and_retried_by_their_files(tmp_path, job, batchinfer):
    root = tmp_path / "in"
    _write(root, AUDIO)
    (root / "user4/fall/piano.wav.bad").write_text("marked")  # the user4 piano partition fails, for this file
    keys = {"inputs": {"path": "in/*/*/*.wav", "partition_format": "{user}/{season}/{genres}.wav"},
            "partition_keys": ["user", "genres"], "run_max_try": 1}
    first = job("partition_files.py", **keys)
    assert first.code == 0, first.stderr
    # isolate_failures splits the partition: only the marked file fails, with its partition's values
    assert first.summary["items_failed"] == 1 and first.summary["items_succeeded"] == 5
    failed = first.log("failed_items.txt").splitlines()
    assert [os.path.relpath(line, root) for line in failed if not line.startswith("#")] == ["user4/fall/piano.wav"]

    plan = batchinfer("plan", str(tmp_path / "job.yaml"), "--json")
    assert plan.code == 0, plan.stderr
    described = json.loads(plan.stdout)
    assert described["mini_batches"] == 5 and described["items"] == 6

    (root / "user4/fall/piano.wav.bad").unlink()
    retried = job("partition_files.py", "--retry-failed", **keys)
    assert retried.code == 0, retried.stderr
    rows = retried.rows()
    assert len(rows) == 6 and len(set(rows)) == 6  # every file exactly once
    assert sum(row.split(",")[2] == "user=user4;genres=piano" for row in rows) == 2

    again = job("partition_files.py", **keys)  # nothing changed: the finished job is not run again
    assert again.code == 0, again.stderr
    assert again.rows() == rows


OJ = {f"{store}/{brand}/partitioned_data.csv": "".join(
    ["WeekStarting,Quantity\n"] + [f"1990-06-{d:02d},{store + d}\n" for d in range(10, 10 + rows)])
    for (store, brand), rows in {(1000, "dominicks"): 3, (1000, "tropicana"): 2, (1001, "dominicks"): 4}.items()}


def _write_text(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_tabular_partitions_by_path_columns(tmp_path, job):
    """Azure's OJ shape: partitions named by folders, keys taken from the paths."""
    _write_text(tmp_path / "oj", OJ)
    run = job("partitions.py", inputs={"type": "tabular", "path": "oj/**/*.csv", "format": "csv",
                                       "partition_format": "{Store}/{Brand}/{file_name}.{extension}",
                                       "drop_columns": ["file_name", "extension"]},
              partition_keys=["Store", "Brand"])
    assert run.code == 0, run.stderr
    assert collections.Counter(run.rows()) == {
        "Brand=dominicks,Store=1000 rows=3": 3, "Brand=tropicana,Store=1000 rows=2": 2,
        "Brand=dominicks,Store=1001 rows=4": 4}
    assert run.summary["mini_batches_total"] == 3


def test_path_keys_need_no_file_read_before_the_run(tmp_path, batchinfer):
    """With every key from the paths, plan lists the partitions without opening a file: a FIFO
    among them (which would block any read) does not stop it."""
    _write_text(tmp_path / "oj", OJ)
    (tmp_path / "oj/1002/dominicks").mkdir(parents=True)
    os.mkfifo(tmp_path / "oj/1002/dominicks/partitioned_data.csv")
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({
        "entry_script": "partitions.py", "source_directory": str(tmp_path),
        "inputs": {"type": "tabular", "path": "oj", "format": "csv",
                   "partition_format": "{Store}/{Brand}/{file_name}.csv"},
        "partition_keys": ["Store", "Brand"]}))
    (tmp_path / "partitions.py").write_text("def run(mini_batch, mini_batch_context):\n    return []\n")
    plan = batchinfer("plan", str(spec), "--json", timeout=60)
    assert plan.code == 0, plan.stderr
    described = json.loads(plan.stdout)
    assert described["mini_batches"] == 4
    assert [b["first"] for b in described["first_mini_batches"]] == [
        "Store=1000, Brand=dominicks", "Store=1000, Brand=tropicana", "Store=1001, Brand=dominicks",
        "Store=1002, Brand=dominicks"]


def test_keys_from_paths_and_columns_together(tmp_path, job):
    _write_text(tmp_path / "oj", OJ)
    run = job("partitions.py", inputs={"type": "tabular", "path": "oj", "format": "csv",
                                       "partition_format": "{Store}/{Brand}/{file_name}.csv"},
              partition_keys=["Brand", "WeekStarting"])
    assert run.code == 0, run.stderr
    counts = collections.Counter(run.rows())
    assert counts["Brand=dominicks,WeekStarting=1990-06-10 rows=2"] == 2  # one row from each store
    assert counts["Brand=tropicana,WeekStarting=1990-06-11 rows=1"] == 1
    assert run.summary["mini_batches_total"] == 4 + 2  # dominicks: 4 weeks; tropicana: 2
