"""Bad data while running: return counting, exceptions, retries and the three thresholds."""

from __future__ import annotations

import pytest


@pytest.fixture
def mixed(tmp_path):
    """20 files, of which f003, f011 and f017 are 'bad' (the script raises on them)."""
    root = tmp_path / "data"
    root.mkdir()
    for i in range(20):
        name = f"f{i:03d}{'-bad' if i in (3, 11, 17) else ''}.txt"
        (root / name).write_text(f"{i}\n")
    return root


def test_short_return_counts_missing_items_as_failed(job, text_files):
    data = text_files(10)
    run = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", "short"], mini_batch_size=5)
    assert run.code == 0, run.stderr
    summary = run.summary
    assert (summary["items_succeeded"], summary["items_failed"]) == (8, 2)
    assert summary["mini_batches_failed"] == 0 and summary["tries"] == 2  # not retried
    assert len(run.rows()) == 8
    assert {e["kind"] for e in run.errors()} == {"short_return"}
    assert "returned 4 results for 5 items" in run.errors()[0]["message"]


def test_long_return_keeps_rows_and_caps_the_count(job, text_files):
    data = text_files(6)
    run = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", "long"], mini_batch_size=3)
    assert run.code == 0, run.stderr
    assert run.summary["items_succeeded"] == 6 and run.summary["items_failed"] == 0
    assert len(run.rows()) == 8
    assert "all rows are kept" in run.log("worker-0.log") + run.log("worker-1.log")


@pytest.mark.parametrize("mode", ["none", "dict", "string"])
def test_wrong_return_type_fails_the_mini_batch_with_a_clear_message(job, text_files, mode):
    data = text_files(4)
    run = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", mode], mini_batch_size=2, run_max_try=2)
    assert run.code == 1  # no item succeeded
    summary = run.summary
    assert summary["status"] == "failed" and summary["reason"].startswith("no item succeeded")
    assert summary["items_failed"] == 4 and summary["tries"] == 4
    errors = run.errors()
    assert len(errors) == 4 and {e["kind"] for e in errors} == {"wrong_type"}
    assert "must return a list, tuple, numpy array or pandas DataFrame" in errors[0]["message"]
    assert "first error" in run.stderr and "wrong" not in run.stdout


def test_exception_is_retried_then_fails_its_whole_mini_batch_without_isolation(job, mixed):
    run = job("fail_on_bad.py", inputs={"path": str(mixed)}, mini_batch_size=4, run_max_try=3, isolate_failures=False)
    assert run.code == 0, run.stderr  # error_threshold -1 tolerates everything
    summary = run.summary
    # f003 is in batch 0, f011 in batch 2, f017 in batch 4: three batches of 4 failed
    assert (summary["items_succeeded"], summary["items_failed"]) == (8, 12)
    assert summary["mini_batches_failed"] == 3 and summary["tries"] == 2 + 3 * 3
    errors = run.errors()
    assert len(errors) == 9 and {e["kind"] for e in errors} == {"exception"}
    assert sorted({e["try"] for e in errors}) == [1, 2, 3]
    assert any("ValueError: cannot score f003-bad.txt" in e["message"] for e in errors)
    assert all("Traceback" in e["traceback"] for e in errors)
    failed = run.log("failed_items.txt").splitlines()
    assert len(failed) == 12 and any(line.endswith("f003-bad.txt") for line in failed)
    assert len(run.rows()) == 8


def test_isolation_bisects_a_failing_mini_batch_down_to_the_bad_files(job, mixed):
    run = job("fail_on_bad.py", inputs={"path": str(mixed)}, mini_batch_size=4, run_max_try=2)
    assert run.code == 0, run.stderr
    summary = run.summary
    assert (summary["items_succeeded"], summary["items_failed"]) == (17, 3)
    assert summary["mini_batches_failed"] == 3  # the three mini-batches that held a bad file
    failed = run.log("failed_items.txt").splitlines()
    assert [line.rsplit("/", 1)[1] for line in failed] == ["f003-bad.txt", "f011-bad.txt", "f017-bad.txt"]
    assert sorted(run.rows()) == sorted(p.name for p in mixed.iterdir() if "bad" not in p.name)
    # per bad batch: 2 whole tries, then halves of 2 (one fails), then halves of 1
    parts = [e["part"] for e in run.errors() if e["mini_batch"] == 0]
    assert parts == [None, None, [2, 4], [3, 4]]


def test_error_threshold_stops_the_job(job, mixed):
    run = job("fail_on_bad.py", inputs={"path": str(mixed)}, mini_batch_size=1, run_max_try=1,
              error_threshold=1, process_count_per_node=1)
    assert run.code == 1
    summary = run.summary
    assert summary["status"] == "failed"
    assert "2 items failed, more than error_threshold (1)" in summary["reason"]
    assert summary["items_failed"] == 2
    assert "more than error_threshold" in run.stderr
    assert len(run.rows()) < 18  # it stopped before the end


def test_error_threshold_tolerates_up_to_the_limit(job, mixed):
    run = job("fail_on_bad.py", inputs={"path": str(mixed)}, mini_batch_size=1, run_max_try=1, error_threshold=3)
    assert run.code == 0, run.stderr
    assert run.summary["items_failed"] == 3 and len(run.rows()) == 17


def test_allowed_failed_count_counts_mini_batches(job, mixed):
    run = job("fail_on_bad.py", inputs={"path": str(mixed)}, mini_batch_size=2, run_max_try=1,
              allowed_failed_count=1, process_count_per_node=1)
    assert run.code == 1
    assert "2 mini-batches failed, more than allowed_failed_count (1)" in run.summary["reason"]


def test_allowed_failed_percent_is_checked_over_all_items(job, mixed):
    ok = job("fail_on_bad.py", inputs={"path": str(mixed)}, mini_batch_size=1, run_max_try=1, allowed_failed_percent=15)
    assert ok.code == 0, ok.stderr  # 3 of 20 = 15%
    too_many = job("fail_on_bad.py", "--restart", inputs={"path": str(mixed)}, mini_batch_size=1, run_max_try=1,
                   allowed_failed_percent=10)
    assert too_many.code == 1
    assert "15.0% of items failed, more than allowed_failed_percent (10%)" in too_many.summary["reason"]


def test_init_that_always_fails_stops_the_job_with_its_message(job, text_files):
    data = text_files(4)
    run = job("init_fails.py", inputs={"path": str(data)}, process_count_per_node=1)
    assert run.code == 1
    assert "failed to start 3 times in a row: init() raised RuntimeError: model file is missing" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.summary["status"] == "failed"
    assert "model file is missing" in run.log("worker-0.log")
