"""Short returns are judged by the thresholds alone; "no item succeeded" is kept for jobs where every try failed.

Azure's OJ sales example trains one model per partition and returns ``[]`` by design, with
``error_threshold: -1`` and ``mini_batch_error_threshold: 5`` over 99 partitions: Azure completes
it, so a short (even empty) return fails items, never the mini-batch (Azure's failed mini-batch is
one that raised, timed out or returned nothing at all).
"""

from __future__ import annotations

import pytest

NOTHING_SUCCEEDED = "no item succeeded: every mini-batch failed"

# 10 files f000..f009, mini_batch_size 2: five mini-batches starting at f000, f002, f004, f006, f008;
# the mixed modes return [] for those starting at a multiple of 4 (f000, f004, f008: 6 items)
CASES = [
    # id, --mode, spec keys, exit code, status, items succeeded, failed, not returned, reason (a part of it)
    ("empty-tolerate-all", "empty", {}, 0, "succeeded", 0, 10, 10, None),
    ("empty-summary-only", "empty", {"output_action": "summary_only"}, 0, "succeeded", 0, 10, 10, None),
    ("empty-error-threshold-0", "empty", {"error_threshold": 0}, 1, "failed", 0, None, None,
     "2 items failed, more than error_threshold (0)"),
    ("empty-allowed-failed-count-0", "empty", {"allowed_failed_count": 0}, 0, "succeeded", 0, 10, 10, None),
    ("empty-allowed-failed-percent-50", "empty", {"allowed_failed_percent": 50}, 1, "failed", 0, None, None,
     "% of items failed, more than allowed_failed_percent (50%)"),
    ("short-within-error-threshold", "short", {"error_threshold": 5}, 0, "succeeded", 5, 5, 5, None),
    ("short-over-error-threshold", "short", {"error_threshold": 4, "process_count_per_node": 1,
                                             "ordered": True}, 1, "failed", 5, 5, 5,
     "5 items failed, more than error_threshold (4)"),
    ("raise-tolerate-all", "raise", {}, 1, "failed", 0, 10, 0, NOTHING_SUCCEEDED),
    ("wrong-type-tolerate-all", "none", {}, 1, "failed", 0, 10, 0, NOTHING_SUCCEEDED),
    ("mixed-empty-and-raise", "empty_or_raise", {}, 0, "succeeded", 0, 10, 6, None),
    ("mixed-empty-and-wrong-type", "empty_or_none", {}, 0, "succeeded", 0, 10, 6, None),
    ("mixed-empty-and-raise-allowed-failed-count-1", "empty_or_raise", {"allowed_failed_count": 1}, 1, "failed",
     0, None, None, "2 mini-batches failed, more than allowed_failed_count (1)"),
]


@pytest.mark.parametrize(
    "mode, keys, code, status, succeeded, failed, not_returned, reason",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_short_returns_are_judged_by_the_thresholds(
    job, text_files, mode, keys, code, status, succeeded, failed, not_returned, reason
):
    data = text_files(10)
    keys = {"mini_batch_size": 2, "run_max_try": 1, **keys}
    run = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", mode], **keys)
    assert run.code == code, run.stderr
    summary = run.summary
    assert summary["status"] == status and summary["exit_code"] == code
    assert summary["items_succeeded"] == succeeded
    if failed is not None:  # else a threshold stops the job early: how many settled depends on the race
        assert summary["items_total"] == 10 and summary["items_failed"] == failed
        assert summary["items_not_returned"] == not_returned
        short = [e for e in run.errors() if e["kind"] == "short_return"]  # logged per try, committed or not
        assert not_returned == sum(len(e["items"]) - _returned(e) for e in short)
    if reason is None:
        assert summary["reason"] is None
    else:
        assert reason in summary["reason"], summary["reason"]
    notes = [line for line in run.stderr.splitlines() if line.startswith("batchinfer: note: ")]
    if summary["items_not_returned"]:
        expected = "run() returned no rows" if not succeeded else "run() returned fewer rows than items"
        assert summary["note"].startswith(expected)
        assert notes == [f"batchinfer: note: {summary['note']}"], run.stderr
    else:
        assert summary["note"] is None and notes == [], run.stderr


def _returned(error: dict) -> int:
    """Rows a short return gave back, from its message ("run() returned N results for M items: ...")."""
    return int(error["message"].split("returned ", 1)[1].split(" ", 1)[0])


def test_an_empty_return_resumed_is_still_judged_by_the_thresholds(job, text_files):
    """The rule reads the journal, not this run's memory: a rerun that reuses or resumes keeps the verdict."""
    data = text_files(6)
    first = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", "empty"], mini_batch_size=2)
    assert first.code == 0, first.stderr
    again = job("returns.py", inputs={"path": str(data)}, arguments=["--mode", "empty"], mini_batch_size=2)
    assert again.code == 0, again.stderr
    assert again.summary["items_not_returned"] == 6 and again.summary["status"] == "succeeded"
    assert "batchinfer: note: run() returned no rows" in again.stderr


def test_status_of_a_finished_job_repeats_the_note(job, batchinfer, text_files, tmp_path):
    run = job("returns.py", inputs={"path": str(text_files(4))}, arguments=["--mode", "empty"], mini_batch_size=2)
    assert run.code == 0, run.stderr
    status = batchinfer("status", str(run.output_dir))
    assert status.code == 0 and "succeeded: 0/4 items succeeded" in status.stdout
    assert "(note: run() returned no rows" in status.stdout
