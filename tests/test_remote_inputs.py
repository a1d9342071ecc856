"""Inputs on object stores, fetched by the workers: files downloaded concurrently and ahead of run(),
table slices read by their byte ranges, store errors retried or counted as tries of kind 'storage'.

The stores are real servers on 127.0.0.1 (tests/stores.py): moto's S3 server, Azurite, and an
HTTP server that answers Range requests, counts the bytes it serves, and fails or holds GETs
when told to.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchinfer.fetch import TRANSFERS
from conftest import MARKER
from tests.stores import RangeHttpServer, upload_tree


@pytest.fixture
def range_http(tmp_path):
    """A Range-aware, byte-counting HTTP server of ``tmp_path/served`` (one per test: its counters are the test's)."""
    server = RangeHttpServer(tmp_path / "served")
    yield server
    server.stop()


def frame(start: int, count: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i:05d}" for i in range(start, start + count)],
                         "value": [i * 0.5 for i in range(start, start + count)],
                         "text": [f"row {i}, quoted \"text\"" for i in range(start, start + count)]})


def remote_input(store, url: str, **keys) -> dict:
    return {"path": url, "storage_options": store.storage_options, **keys}


# ---------------------------------------------------------------- file inputs


def test_file_job_on_store_gives_the_rows_of_the_same_files_locally(store, job, text_files, tmp_path):
    data = text_files(23)
    bucket = store.new_bucket()
    upload_tree(store.fs(), data, f"{bucket}/data")
    remote = job("echo_names.py", "--output", str(tmp_path / "remote"), spec_name="remote.yaml",
                 inputs=remote_input(store, store.url(bucket, "data")), mini_batch_size=4)
    local = job("echo_names.py", "--output", str(tmp_path / "local"), spec_name="local.yaml",
                inputs={"path": str(data)}, mini_batch_size=4)
    assert remote.code == 0 and local.code == 0, remote.stderr + local.stderr
    assert sorted(remote.rows()) == sorted(local.rows()) == [f"f{i:03d}.txt {i}" for i in range(23)]
    assert remote.summary["items_succeeded"] == 23 and remote.summary["tries"] == 6
    # the downloads went with their tries: the workers' private folders hold none now
    assert not list((tmp_path / "remote").rglob("mb*-*"))


@pytest.mark.parametrize(("files", "size"), [(70, 16), (30, 4)])
def test_next_mini_batch_is_fetched_while_run_works_and_disk_stays_bounded(store, job, text_files, files, size):
    batches = -(-files // size)
    data = text_files(files)
    bucket = store.new_bucket()
    upload_tree(store.fs(), data, f"{bucket}/data")
    run = job("prefetch_probe.py", inputs=remote_input(store, store.url(bucket, "data")), mini_batch_size=size,
              process_count_per_node=1, environment_variables={"BATCHES": str(batches), "SIZE": str(size),
                                                               "FILES": str(files)})
    assert run.code == 0, run.stderr
    rows = [r.split() for r in run.rows()]
    assert sorted(r[1] for r in rows) == [f"f{i:03d}.txt" for i in range(files)]
    ready = {int(r[0]): r[2] for r in rows}
    # run(k) saw mini-batch k+1's files complete on disk before it returned: the download overlapped it
    assert ready == {**{k: "next_ready=True" for k in range(batches - 1)}, batches - 1: "next_ready=None"}
    # on disk: the running mini-batch's downloads and the next one's, or up to fetch.TRANSFERS (16)
    # files ahead when mini-batches are smaller (so that small mini-batches keep 16 transfers busy)
    ahead = max(1, TRANSFERS // size)
    assert max(int(r[3].split("=")[1]) for r in rows) <= 1 + ahead


def test_signed_http_urls_are_fetched_as_written(range_http, job):
    for i in range(5):
        (range_http.root / f"f{i}.txt").write_text(f"{i}\n")
    # a signed URL's query string is part of the request (never read as a glob) and not of the file name
    urls = [f"{range_http.url}/f{i}.txt?sv=2024&sig=abc%2Fdef%3D&se=x[1]" for i in range(5)]
    run = job("echo_names.py", inputs={"path": urls}, mini_batch_size=2)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == [f"f{i}.txt {i}" for i in range(5)]


def test_transient_errors_are_retried_and_the_item_succeeds(range_http, job):
    for i in range(3):
        (range_http.root / f"f{i}.txt").write_text(f"{i}\n")
    range_http.fail("f1.txt", 2)  # 503 twice, then the file
    run = job("echo_names.py", inputs={"path": [f"{range_http.url}/f{i}.txt" for i in range(3)]},
              mini_batch_size=3, run_max_try=1)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == ["f0.txt 0", "f1.txt 1", "f2.txt 2"]
    assert run.summary["tries"] == 1 and range_http.gets["f1.txt"] == 3
    assert not (run.output_dir / "logs" / "errors.jsonl").exists() or run.errors() == []


@pytest.mark.parametrize(("thresholds", "code"), [({}, 0), ({"error_threshold": 0}, 1)])
def test_store_that_keeps_failing_fails_the_try_with_kind_storage(range_http, job, thresholds, code):
    for i in range(3):
        (range_http.root / f"f{i}.txt").write_text(f"{i}\n")
    range_http.fail("f1.txt", -1)  # always 503
    urls = [f"{range_http.url}/f{i}.txt?sig=SECRETVALUE" for i in range(3)]
    run = job("echo_names.py", inputs={"path": urls}, mini_batch_size=1, run_max_try=1, **thresholds)
    assert run.code == code, run.stderr
    assert "Traceback" not in run.stderr
    errors = run.errors()
    assert [e["kind"] for e in errors] == ["storage"]
    assert f"reading {range_http.url}/f1.txt?sig=" in errors[0]["message"]
    assert "503" in errors[0]["message"] and "SECRETVALUE" not in errors[0]["message"]
    if code == 0:
        assert sorted(run.rows()) == ["f0.txt 0", "f2.txt 2"]
        assert (run.summary["items_succeeded"], run.summary["items_failed"]) == (2, 1)


def test_object_deleted_after_listing_is_a_failed_item_with_a_clear_message(store, job, text_files):
    data = text_files(4)
    bucket = store.new_bucket()
    fs = store.fs()
    upload_tree(fs, data, f"{bucket}/data")
    # init() deletes a file after the coordinator listed it, as another process might
    run = job("deletes_input.py", inputs=remote_input(store, store.url(bucket, "data")), mini_batch_size=1,
              process_count_per_node=1, run_max_try=2,
              environment_variables={"DELETE_URL": store.url(bucket, "data/f003.txt"),
                                     "STORAGE_OPTIONS": json.dumps(store.storage_options)})
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == ["f000.txt 0", "f001.txt 1", "f002.txt 2"]
    errors = run.errors()
    assert [e["kind"] for e in errors] == ["exception"] * len(errors) and errors
    assert "data/f003.txt no longer exists" in errors[-1]["message"]
    assert run.summary["items_failed"] == 1


def _worker_downloading_from(port: int, marker: str) -> psutil.Process | None:
    """The worker process (not the coordinator, a child of this test) with a connection to ``port``."""
    for proc in psutil.process_iter():
        try:
            if proc.ppid() == os.getpid() or proc.environ().get(MARKER) != marker:
                continue
            if any(c.raddr and c.raddr.port == port for c in proc.net_connections(kind="tcp")):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def test_worker_killed_mid_download_loses_one_try_and_every_row_comes_once(range_http, job, run_marker):
    for i in range(6):
        (range_http.root / f"f{i}.txt").write_text(f"{i}\n")
    started = range_http.hold("f2.txt")  # the first GET of f2.txt waits until the worker is killed
    result = {}
    runner = threading.Thread(target=lambda: result.update(run=job(
        "echo_names.py", inputs={"path": [f"{range_http.url}/f{i}.txt" for i in range(6)]},
        mini_batch_size=1, process_count_per_node=1, run_max_try=3)))
    runner.start()
    try:
        assert started.wait(120), "the worker never asked for f2.txt"
        worker = _worker_downloading_from(range_http.port, run_marker)
        assert worker is not None, "no worker holds a connection to the server"
        worker.kill()
    finally:
        range_http.release("f2.txt")
        runner.join(300)
    run = result["run"]
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == [f"f{i}.txt {i}" for i in range(6)]
    assert [e["kind"] for e in run.errors()] == ["worker_died"]
    assert run.summary["items_succeeded"] == 6


# ---------------------------------------------------------------- tables


def _plan(batchinfer, tmp_path: Path, name: str, inputs: dict, size: str) -> dict:
    import yaml

    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({"entry_script": "tabular_ids.py", "source_directory": str(tmp_path),
                                    "inputs": {"type": "tabular", **inputs}, "mini_batch_size": size}))
    run = batchinfer("plan", str(spec), "--json")
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_plan_of_tables_on_store_matches_the_same_files_on_disk(s3_server, batchinfer, tmp_path, kind):
    from tests.stores import Store

    store = Store("s3", s3_server)
    local = tmp_path / "t"
    local.mkdir()
    if kind == "csv":
        frame(0, 900).to_csv(local / "a.csv", index=False)
        frame(900, 400).to_csv(local / "b.csv", index=False)
        size = "16KB"
    else:
        pq.write_table(pa.Table.from_pandas(frame(0, 3000)), local / "a.parquet", row_group_size=250)
        size = "8KB"
    bucket = store.new_bucket()
    upload_tree(store.fs(), local, f"{bucket}/t")
    on_disk = _plan(batchinfer, tmp_path, "local", {"path": str(local)}, size)
    remote_url = store.url(bucket, "t")
    on_store = _plan(batchinfer, tmp_path, "remote", remote_input(store, remote_url), size)
    assert on_disk["mini_batches"] > 3
    text = json.dumps(on_store).replace(remote_url, str(local))
    assert json.loads(text) == on_disk


def test_csv_slice_of_a_remote_file_reads_its_byte_range_only(range_http):
    from batchinfer.protocol import TableSlice
    from batchinfer.readers import read_table

    frame(0, 40000).to_csv(range_http.root / "big.csv", index=False)
    data = (range_http.root / "big.csv").read_bytes()
    header_end = data.index(b"\n") + 1
    start = data.index(b"\n", len(data) // 2) + 1
    end = data.index(b"\n", start + 20000) + 1
    expected = read_table(TableSlice(str(range_http.root / "big.csv"), "csv", (start, end), header_end), {})
    got = read_table(TableSlice(f"{range_http.url}/big.csv", "csv", (start, end), header_end), {})
    pd.testing.assert_frame_equal(got, expected)
    assert range_http.served["big.csv"] == header_end + (end - start)  # not a byte more
    assert range_http.served["big.csv"] < len(data) / 50


def test_parquet_slice_of_a_remote_file_reads_its_footer_and_row_groups_only(range_http):
    from batchinfer.protocol import TableSlice
    from batchinfer.readers import read_table

    pq.write_table(pa.Table.from_pandas(frame(0, 60000)), range_http.root / "big.parquet", row_group_size=2000)
    size = (range_http.root / "big.parquet").stat().st_size
    groups = pq.ParquetFile(range_http.root / "big.parquet").metadata.num_row_groups
    assert groups == 30
    local = read_table(TableSlice(str(range_http.root / "big.parquet"), "parquet", row_groups=(7,),
                                  row_window=(100, 600)), {})
    got = read_table(TableSlice(f"{range_http.url}/big.parquet", "parquet", row_groups=(7,), row_window=(100, 600)), {})
    pd.testing.assert_frame_equal(got, local)
    assert got["id"].iloc[0] == "r14100"
    assert range_http.served["big.parquet"] < size / 5  # the footer and one row group of 30


@pytest.mark.parametrize("kind", ["csv", "parquet", "csv.gz"])
def test_table_slice_reads_are_retried_then_reported_as_storage_errors(range_http, kind):
    from batchinfer.protocol import TableSlice
    from batchinfer.readers import read_table
    from batchinfer.retry import StorageUnavailable

    name = f"t.{kind}"
    if kind == "parquet":
        pq.write_table(pa.Table.from_pandas(frame(0, 100)), range_http.root / name, row_group_size=50)
        table = TableSlice(f"{range_http.url}/{name}", "parquet", row_groups=(1,))
    else:
        frame(0, 100).to_csv(range_http.root / name, index=False)
        data = pd.read_csv(range_http.root / name).to_csv(index=False).encode()
        header_end = data.index(b"\n") + 1
        table = (TableSlice(f"{range_http.url}/{name}", "csv", compression="gzip") if kind == "csv.gz"
                 else TableSlice(f"{range_http.url}/{name}", "csv", (header_end, len(data)), header_end))
    range_http.fail(name, 2)  # 503 twice: read on the third try
    assert read_table(table, {})["id"].tolist()[-1] == "r00099"
    range_http.fail(name, -1)
    with pytest.raises(StorageUnavailable, match=f"reading {range_http.url}/{name} failed 5 times"):
        read_table(table, {})
