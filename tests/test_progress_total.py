"""The total from the start: the bar, the plain lines and ``status`` know how many mini-batches a
job has before the first one commits (counting.py counts the inputs ahead of dispatch).

The real runs hold their workers at a gate (tests/scripts/gated_echo.py) and look at the output
before opening it: no timing guess. The table of inputs compares the counter's number at the start
with what dispatch then lists, through the real listing, without workers.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pty
import re
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from background import stop_at_once, wait_until
from conftest import MARKER, SCRIPTS

from batchinfer.counting import Counter
from batchinfer.inputs import InputPlan
from batchinfer.spec import load_spec

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def write_spec(tmp_path: Path, data: Path, *gates: str, **keys) -> Path:
    spec = {"entry_script": "gated_echo.py", "source_directory": str(SCRIPTS), "inputs": {"path": str(data)},
            "process_count_per_node": 2, "mini_batch_size": 3, "arguments": list(gates), **keys}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bar_shows_total_percentage_and_time_left_before_the_first_commit(tmp_path, text_files, run_marker):
    gate, last_gate = tmp_path / "gate", tmp_path / "last-gate"
    # every mini-batch waits at the first gate; the last two (f054-f059) at the second one too
    spec = write_spec(tmp_path, text_files(60), "--gate", str(gate), "--held", "",
                      "--gate", str(last_gate), "--held", "f05")
    out = tmp_path / "out"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=slave,
        env={**os.environ, MARKER: run_marker, "TERM": "xterm", "COLUMNS": "200"},
    )
    os.close(slave)
    seen: list[str] = []

    def read() -> None:
        while True:
            try:
                ready, _, _ = select.select([master], [], [], 0.2)
                chunk = os.read(master, 65536) if ready else b"x"
            except OSError:
                return  # the terminal's other side closed: the job ended
            if not chunk:
                return
            if chunk != b"x":
                seen.append(chunk.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def text() -> str:
        return ANSI.sub("", "".join(seen))

    try:
        # the gate is shut: nothing can commit, yet the bar knows the total
        wait_until(lambda: "0/20" in text() and "0%" in text(), proc, "a bar with 0/20 and a percentage")
        before = text()
        assert "still listing" not in before.split("0/20")[-1]
        gate.touch()
        # while it still runs, the time-left column shows a time once mini-batches have committed
        wait_until(lambda: re.search(r"\b1[0-9]/20\b[^\r\n]*?\d:\d\d:\d\d", text()), proc, "a time left")
        last_gate.touch()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        reader.join(timeout=10)
        os.close(master)
    final = text()
    assert "20/20" in final and "100%" in final
    assert "-:--:--" not in re.findall(r"[1-9]\d*/20\b[^\n\r]*", final)[-1]


def test_plain_lines_and_status_show_the_total_before_the_first_commit(tmp_path, text_files, run_marker, batchinfer):
    gate = tmp_path / "gate"
    spec = write_spec(tmp_path, text_files(60), "--gate", str(gate))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out), "--progress-interval", "0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, MARKER: run_marker},
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(": 0/20 mini-batches" in line for line in list(seen)), proc, "a plain line with 0/20")
        # status.json is rewritten at most once a second: wait for the one that holds the total
        status = out / ".batchinfer" / "status.json"
        wait_until(lambda: status.exists() and json.loads(status.read_text() or "{}").get("mini_batches_expected") == 20,
                 proc, "status.json with the total")
        line = batchinfer("status", str(out))
        assert line.code == 0, line.stderr
        assert ": 0/20 mini-batches" in line.stdout and "listing" not in line.stdout
        gate.touch()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    reader.join(timeout=10)
    lines = [line for line in seen if " mini-batches, " in line and not line.startswith("batchinfer")]
    assert all("/20 mini-batches" in line and "(listing)" not in line for line in lines), lines
    assert " 20/20 mini-batches" in lines[-1]


def totals_shown(stderr: str) -> list[str]:
    """'done/total' of each progress line ('10/20', or '10/12+' while nothing is known)."""
    return re.findall(r": (\d+/\d+\+?)(?: \(listing\))? mini-batches, ", stderr)


def test_a_resumed_job_shows_its_whole_total_from_its_first_line(tmp_path, text_files, run_marker, batchinfer):
    gate = tmp_path / "gate"
    # mini-batches 0-9 (f000-f029) are scored at once; 10-19 (f030-f059) wait at the gate
    spec = write_spec(tmp_path, text_files(60), *(arg for word in ("f03", "f04", "f05")
                                                  for arg in ("--gate", str(gate), "--held", word)))
    out = tmp_path / "out"
    status = out / ".batchinfer" / "status.json"

    def status_doc() -> dict:
        try:
            return json.loads(status.read_text())
        except (OSError, ValueError):
            return {}

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out), "--progress-interval", "0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, MARKER: run_marker},
        )

    first = start()
    try:
        wait_until(lambda: status_doc().get("mini_batches_done") == 10, first, "10 mini-batches committed")
        stop_at_once(first)  # SIGTERM twice: the held mini-batches given up
        assert first.wait(timeout=60) == 143
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=60)
    status.unlink()
    second = start()  # the gate still shut: the run holds at 10 done
    seen_lines: list[str] = []
    reader = threading.Thread(target=lambda: seen_lines.extend(second.stderr), daemon=True)
    reader.start()
    try:
        wait_until(lambda: "10/20" in totals_shown("".join(seen_lines)), second, "a progress line with 10/20")
        wait_until(lambda: status_doc().get("mini_batches_expected") == 20, second, "status.json with the total")
        line = batchinfer("status", str(out))
        assert line.code == 0, line.stderr
        assert ": 10/20 mini-batches" in line.stdout, line.stdout
        gate.touch()
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()
        second.wait(timeout=60)
    reader.join(timeout=10)
    shown = totals_shown("".join(seen_lines))
    # the journal's 10 are done from the first line, and the total is never short of the whole job
    # (e.g. '10/10'); a line before the counter's first answer may say '10/12+ (listing)', not a total
    assert re.fullmatch(r"10/(20|\d+\+)", shown[0]), shown
    assert all(t.endswith(("/20", "+")) for t in shown), shown
    assert next(t for t in shown if not t.endswith("+")) == "10/20" and shown[-1] == "20/20", shown


def test_retry_failed_shows_the_whole_job_with_the_failed_ones_left(tmp_path, text_files, job):
    """--retry-failed: the total is every mini-batch of the job (it needs a finished one), those not
    retried are done: 18/20 at the start, 20/20 at the end, never 0/20."""
    data = text_files(60)
    for name in ("f012.txt", "f040.txt"):  # in mini-batches 4 and 13
        (data / name).write_text("bad\n")
    keys = {"inputs": {"path": str(data)}, "mini_batch_size": 3, "process_count_per_node": 2}
    first = job("fail_on_bad_content.py", **keys)
    summary = first.summary
    assert (summary["mini_batches_total"], summary["mini_batches_failed"]) == (20, 2), summary
    for name in ("f012.txt", "f040.txt"):
        (data / name).write_text("fixed\n")
    second = job("fail_on_bad_content.py", "--retry-failed", "--progress-interval", "0.1", **keys)
    assert second.code == 0, second.stderr
    shown = totals_shown(second.stderr)
    assert shown and shown[-1] == "20/20", second.stderr
    assert all(t in ("18/20", "19/20", "20/20") for t in shown), shown


# ------------------------------------------------------------------ the count, from a table of inputs


def _csv(path: Path, rows: int, start: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,text\n" + "".join(f"{i},row number {i}\n" for i in range(start, start + rows)))


def files_across_two_inputs(root: Path) -> dict:
    for name, n in (("a", 7), ("b", 5)):
        for i in range(n):
            (root / name).mkdir(exist_ok=True)
            (root / name / f"{name}{i}.txt").write_text("x")
    return {"inputs": [{"path": "a"}, {"path": "b"}], "mini_batch_size": 3}  # 3 + 2: never across inputs


def a_glob(root: Path) -> dict:
    for i in range(10):
        (root / "d").mkdir(exist_ok=True)
        (root / "d" / f"x{i}.{'png' if i % 3 else 'txt'}").write_text("x")
    return {"inputs": {"path": "d/*.png"}, "mini_batch_size": 2}


def nested_with_hidden_and_output(root: Path) -> dict:
    for i in range(9):
        sub = root / "in" / f"s{i % 3}" / ("deep" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_text("x")
    (root / "in" / ".hidden.txt").write_text("x")
    (root / "in" / ".hidden-dir").mkdir()
    (root / "in" / ".hidden-dir" / "f.txt").write_text("x")
    (root / "in" / "out" / ".batchinfer").mkdir(parents=True)  # the job's output folder, inside the inputs
    (root / "in" / "out" / "parallel_run_step.txt").write_text("x")
    (root / "in" / "old-job" / ".batchinfer").mkdir(parents=True)  # another job's output folder
    (root / "in" / "old-job" / "rows.txt").write_text("x")
    return {"inputs": {"path": "in"}, "mini_batch_size": 2}


def file_partitions(root: Path) -> dict:
    for store in ("s1", "s2", "s3"):
        for brand in ("b1", "b2"):
            for i in range(2 if store != "s3" else 1):
                (root / "p" / store / brand).mkdir(parents=True, exist_ok=True)
                (root / "p" / store / brand / f"{i}.txt").write_text("x")
    return {"inputs": {"path": "p", "partition_format": "{store}/{brand}/{name}.txt"}, "partition_keys": ["store"]}


def csv_rows(root: Path) -> dict:
    _csv(root / "t" / "a.csv", 1000)
    _csv(root / "t" / "b.csv", 250, 1000)
    return {"inputs": {"type": "tabular", "path": "t"}, "mini_batch_size": "100rows"}


def csv_bytes(root: Path) -> dict:
    _csv(root / "t" / "a.csv", 2000)
    return {"inputs": {"type": "tabular", "path": "t"}, "mini_batch_size": "4KB"}


def parquet_rows(root: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "t").mkdir()
    pq.write_table(pa.table({"id": list(range(3000))}), root / "t" / "a.parquet", row_group_size=250)
    return {"inputs": {"type": "tabular", "path": "t"}, "mini_batch_size": "400rows"}


def compressed_csv(root: Path) -> dict:
    (root / "t").mkdir()
    (root / "t" / "a.csv.gz").write_bytes(gzip.compress(b"id\n" + b"".join(b"%d\n" % i for i in range(5000))))
    _csv(root / "t" / "b.csv", 300)
    return {"inputs": {"type": "tabular", "path": "t"}, "mini_batch_size": "100rows"}


# (inputs, how far the count at the start may be from what dispatch lists: 0 = exact)
CASES = [
    (files_across_two_inputs, 0),
    (a_glob, 0),
    (nested_with_hidden_and_output, 0),
    (file_partitions, 0),
    (csv_rows, 0.25),
    (csv_bytes, 0.25),
    (parquet_rows, 0),
    (compressed_csv, 0.25),
]


def plan_for(tmp_path: Path, keys: dict) -> InputPlan:
    spec = {"entry_script": "echo_names.py", "source_directory": str(SCRIPTS), **keys}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    plan = InputPlan(load_spec(tmp_path / "job.yaml"), exclude=[tmp_path / "in" / "out"])
    plan.check()
    return plan


@pytest.mark.parametrize("make,tolerance", CASES, ids=[c[0].__name__ for c in CASES])
def test_count_at_the_start_matches_what_dispatch_lists(tmp_path, make, tolerance):
    plan = plan_for(tmp_path, make(tmp_path))
    counter = Counter(plan).start()
    assert counter.wait(60)
    early, estimated = counter.expected()
    listed = list(plan.mini_batches())
    assert early is not None, "no count"
    if tolerance == 0:
        assert early == len(listed), (early, len(listed))
    else:
        assert estimated
        assert abs(early - len(listed)) <= math.ceil(tolerance * len(listed)), (early, len(listed))
    if make in (files_across_two_inputs, a_glob, nested_with_hidden_and_output, file_partitions):
        assert not estimated  # files are counted, not estimated


def test_table_estimate_becomes_the_count_as_files_are_cut(tmp_path):
    plan = plan_for(tmp_path, csv_rows(tmp_path))  # a.csv: 10 slices, b.csv: 3
    counter = Counter(plan).start()
    assert counter.wait(60)
    batches = plan.mini_batches()
    first_of_b = next(i for i, b in enumerate(batches) if b.table.path.endswith("b.csv"))
    # a.csv is cut: its 10 are counted, b.csv still estimated from its size, less the slice listed
    total, estimated = counter.expected()
    assert first_of_b == 10 and estimated
    assert abs(total - 13) <= 1, total


def test_a_counter_that_fails_leaves_the_listing_whole_with_no_total(tmp_path, text_files):
    data = text_files(12)
    plan = plan_for(tmp_path, {"inputs": {"path": str(data)}, "mini_batch_size": 3})  # check() holds its names
    # the folder becomes unreachable after the check: the counter's walk fails at once
    data.rename(tmp_path / "moved")
    os.symlink(data, data)  # a link to itself: ELOOP for anything that walks it
    counter = Counter(plan).start()
    assert counter.wait(60)
    assert counter.expected() == (None, False)
    assert len(list(plan.mini_batches())) == 4  # dispatch never noticed: it lists what check() began


def test_a_remote_input_is_counted_by_a_second_listing(tmp_path, s3_server):
    from tests.stores import upload_tree

    local = tmp_path / "local"
    for i in range(11):
        (local / ("sub" if i % 2 else "")).mkdir(parents=True, exist_ok=True)
        (local / ("sub" if i % 2 else "") / f"f{i}.txt").write_text(str(i))
    (local / ".hidden").write_text("x")
    bucket = s3_server.new_bucket()
    upload_tree(s3_server.fs(), local, f"{bucket}/data")
    plan = plan_for(tmp_path, {"inputs": {"path": f"s3://{bucket}/data", "storage_options": s3_server.storage_options},
                               "mini_batch_size": 2})
    counter = Counter(plan).start()
    assert counter.wait(60)
    assert counter.expected() == (6, False)
    assert len(list(plan.mini_batches())) == 6


def test_a_remote_table_is_counted_through_its_store(tmp_path, s3_server):
    """A remote Parquet file is counted from its footer, read from the store; a remote CSV estimated
    from its size and first rows, read from the store too (never as a local path)."""
    from tests.stores import upload_tree

    local = tmp_path / "local"
    local.mkdir()
    parquet_rows(local)  # t/a.parquet: 3000 rows in row groups of 250, cut by 400 rows: 8
    _csv(local / "t" / "b.csv", 1250)  # 4 of 400 rows
    bucket = s3_server.new_bucket()
    upload_tree(s3_server.fs(), local / "t", f"{bucket}/t")
    plan = plan_for(tmp_path, {"inputs": {"type": "tabular", "path": f"s3://{bucket}/t",
                                          "storage_options": s3_server.storage_options},
                               "mini_batch_size": "400rows"})
    counter = Counter(plan).start()
    assert counter.wait(60)
    assert counter.tables is not None, "no estimate"
    assert counter.tables[0] == (8, True)  # the footer's count, exact
    early, estimated = counter.expected()
    listed = list(plan.mini_batches())
    assert [b.table.path.rsplit("/", 1)[-1] for b in listed].count("a.parquet") == 8
    assert estimated and abs(early - len(listed)) <= 1, (early, len(listed))


def test_a_stopped_counter_asks_a_remote_store_nothing_more(tmp_path, s3_server, monkeypatch):
    """The job ends while the counter walks a big remote tree: the walk stops before its next request.
    Here the folders hold no input (only hidden files), so no name reaches the counter between requests."""
    from tests.stores import upload_tree

    local = tmp_path / "local"
    for i in range(30):
        (local / f"a{i:02d}").mkdir(parents=True)
        (local / f"a{i:02d}" / ".keep").write_text("x")
    (local / "z").mkdir()
    (local / "z" / "f.txt").write_text("x")
    bucket = s3_server.new_bucket()
    upload_tree(s3_server.fs(), local, f"{bucket}/data")
    url = f"s3://{bucket}/data"
    plan = plan_for(tmp_path, {"inputs": {"path": url, "storage_options": s3_server.storage_options},
                               "mini_batch_size": 2})
    fs = plan.listers[0].filesystem(url)[0]  # fsspec's cached instance: the counter's Lister gets it too
    counter = Counter(plan)
    listings = []
    real_ls = fs.ls

    def ls(path, *args, **kwargs):
        listings.append(path)
        if len(listings) == 3:
            counter.stop()  # the job ends during the walk's third listing
        return real_ls(path, *args, **kwargs)

    monkeypatch.setattr(fs, "ls", ls)
    counter.start()
    assert counter.wait(60)
    assert len(listings) == 3, listings  # the walk has 32 folders to list: it asked for none after the stop
    assert counter.expected() == (None, False)  # stopped: no count
