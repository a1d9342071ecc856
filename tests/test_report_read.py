"""The report's reader: what a job records while it runs, and the model read back from its output folder.

One job meets every fault in two runs (a worker killed, a timeout, a bad file whose name is hostile
HTML, then a resume); a small finished job is damaged file by file, and each damage must give a note,
never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from background import stop_at_once, wait_until
from conftest import MARKER, SCRIPTS, _processes_with

from batchinfer.errors import OutputError
from batchinfer.eventlog import iso_ms
from batchinfer.htmlreport import read as reader
from batchinfer.htmlreport.model import JobReport, PipelineReport
from batchinfer.htmlreport.read import read_job, read_target

HOSTILE = "zz_held_bad<img src=x onerror=alert(1)>.txt"
HELD = ["zz_held.txt", "zz_held_kill.txt", "zz_held_slow.txt", HOSTILE]  # listed last: nothing waits behind them
FILES = [f"f{i}.txt" for i in range(5)] + HELD


def _command(*args: str, marker: str, cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "batchinfer", *args], cwd=cwd, env={**os.environ, MARKER: marker},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


def _status(out: Path) -> dict:
    try:
        return json.loads((out / ".batchinfer" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_gone(marker: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _processes_with(marker):
        assert time.monotonic() < deadline, "a worker outlived its job"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """The model of a job that met every fault. Run 1 (no timeout: run_invocation_timeout is not part of a
    job's identity) scores the plain files while the others wait for the gate, and is stopped by SIGTERM
    (twice: at once); run 2 resumes with the gate open: a worker killed, a timeout and a bad file."""
    root = tmp_path_factory.mktemp("faults")
    data, state = root / "data", root / "state"
    data.mkdir()
    state.mkdir()
    for name in FILES:
        (data / name).write_text(name + "\n")
    gate = root / "gate"
    spec = {"entry_script": "report_faults.py", "source_directory": str(SCRIPTS), "inputs": {"path": str(data)},
            "arguments": ["--state", str(state), "--gate", str(gate)], "mini_batch_size": 1,
            "process_count_per_node": 3, "run_invocation_timeout": 2, "run_max_try": 2}
    (root / "job.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out, marker = root / "out", uuid.uuid4().hex
    first = _command("run", "job.yaml", "--output", str(out), "--set", "run_invocation_timeout=600", "--report",
                     marker=marker, cwd=root)
    wait_until(lambda: _status(out).get("mini_batches_done", 0) >= len(FILES) - len(HELD), first, "the plain files")
    stop_at_once(first)  # SIGTERM twice: the held try is given up
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 143, stderr
    assert f"batchinfer: report: {out / 'report.html'}" in stderr  # --report: interrupted runs get theirs too
    gate.touch()
    second = _command("run", "job.yaml", "--output", str(out), marker=marker, cwd=root)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr  # resumed beside the first run's report.html
    events = [json.loads(line) for line in (out / "logs" / "events.jsonl").read_text().splitlines()]
    assert [e["resumed"] for e in events if e["event"] == "run_started"] == [0, len(FILES) - len(HELD)]
    _wait_gone(marker)
    return read_target(out), data, out


def test_each_fault_is_a_failure_group_with_its_item(faults):
    report, data, _ = faults
    by_kind = {group.kind: group for group in report.failures}
    assert set(by_kind) == {"worker_died", "timeout", "exception"}
    assert by_kind["worker_died"].example_items == [str(data / "zz_held_kill.txt")]
    assert by_kind["timeout"].example_items == [str(data / "zz_held_slow.txt")]
    bad = by_kind["exception"]
    assert bad.example_items == [str(data / HOSTILE)]  # the hostile name as text: the page escapes it
    assert (bad.tries, bad.items, bad.items_capped) == (2, 1, False)  # run_max_try 2: two tries of one item
    assert bad.first_line == f"run() raised ValueError: cannot read {HOSTILE}: not an image"
    assert "Traceback" in bad.traceback and "report_faults.py" in bad.traceback
    assert report.failures[0] is bad  # most tries first
    assert report.final_failed_items == 1


def test_two_runs_the_first_interrupted_and_the_resume_marked(faults):
    report, _, _ = faults
    assert [(r.number, r.status) for r in report.runs] == [(1, "interrupted"), (2, "succeeded")]
    first, second = report.runs
    assert first.start == 0 and first.end is not None and first.end <= second.start <= second.end
    assert first.workers == 3 and first.backend == "local"
    assert report.headline.state == "succeeded" and report.headline.backend == "local"


def test_worker_starts_are_those_of_events_jsonl_run_by_run_with_init_time_and_memory(faults):
    report, _, out = faults
    ready = [e for e in _events(out) if e["event"] == "worker_ready"]
    assert [(w.run, w.worker, w.pid, w.node, w.init_s) for w in report.workers] == [
        (e["run"], e["worker"], e["pid"], e["node"], e["init_s"]) for e in ready]
    per_run = Counter(w.run for w in report.workers)
    assert per_run[1] == 3  # nine mini-batches submitted at once: all three workers start
    # run 2: four mini-batches start three workers; the killed and the timed-out one are replaced only when
    # no worker is idle for their retry (workers start on demand)
    assert 3 <= per_run[2] <= 5 and set(per_run) == {1, 2}
    for start in report.workers:
        assert start.init_s >= 0 and start.rss_mb and start.rss_mb > 1 and start.pid
        assert start.node  # where it ran (the local executor's node id)


def test_a_resumed_job_s_elapsed_and_items_per_s_cover_both_runs(faults):
    report, _, out = faults
    h, ended = report.headline, [e for e in _events(out) if e["event"] == "run_ended"]
    assert len(ended) == 2 and h.elapsed_runs == 2
    assert h.elapsed_s == pytest.approx(sum(e["elapsed_s"] for e in ended), abs=0.002)
    assert (h.items_succeeded, h.items_failed) == (len(FILES) - 1, 1)
    assert h.items_per_s == round(len(FILES) / h.elapsed_s, 1)
    assert h.started_at == iso_ms(report.t0)  # the first run's start, not the resume's
    # summary.json is the last run's: its items/s counts the four items it scored, not the journal's nine
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items_per_s"] == pytest.approx(len(HELD) / summary["elapsed_s"], abs=0.1)


def test_tries_are_every_row_of_the_csv_in_columns(faults):
    report, _, out = faults
    rows = (out / "logs" / "processed_mini_batches.csv").read_text().splitlines()[1:]
    tries = report.tries
    assert len(tries) == len(rows) == report.headline.tries
    assert tries.start == sorted(tries.start)
    assert {"ok", "worker_died", "timeout", "exception"} == set(tries.status)
    assert all(len(column) == len(tries) for column in (tries.seconds, tries.worker, tries.mini_batch,
                                                         tries.try_number, tries.items, tries.status))


def test_slowest_tries_carry_their_items(faults):
    report, data, _ = faults
    assert 1 <= len(report.slowest) <= 10
    assert [s.seconds for s in report.slowest] == sorted((s.seconds for s in report.slowest), reverse=True)
    timed_out = [s for s in report.slowest if s.status == "timeout"]
    assert timed_out and timed_out[0].items == [str(data / "zz_held_slow.txt")]
    assert all(s.items is not None for s in report.slowest)


# ---------------------------------------------------------------- damaged and missing files


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished job's output folder (to copy, then damage)."""
    root = tmp_path_factory.mktemp("finished")
    data = root / "data"
    data.mkdir()
    for i in range(6):
        (data / f"f{i}.txt").write_text(f"{i}\n")
    spec = {"entry_script": "echo_names.py", "source_directory": str(SCRIPTS), "inputs": {"path": str(data)},
            "mini_batch_size": 2, "process_count_per_node": 2}
    (root / "job.yaml").write_text(yaml.safe_dump(spec))
    run = _command("run", "job.yaml", "--output", str(root / "out"), marker=uuid.uuid4().hex, cwd=root)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    return root / "out"


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "events.jsonl").read_text().splitlines()]


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not json, not csv {\n\xff\xfe\n")


DAMAGE = [
    # (file, what is done to it, a fragment of the note, what still holds)
    ("logs/events.jsonl", "remove", "events.jsonl is absent", lambda r: r.runs == [] and len(r.tries) == 3),
    ("logs/events.jsonl", "garbage", "events.jsonl: 2 damaged lines", lambda r: r.runs == [] and len(r.tries) == 3),
    ("logs/processed_mini_batches.csv", "remove", "processed_mini_batches.csv is absent", lambda r: len(r.tries) == 0),
    ("logs/processed_mini_batches.csv", "garbage", "has no id, worker, start, seconds column",
     lambda r: len(r.tries) == 0 and len(r.runs) == 1),
    ("logs/processed_mini_batches.csv", "a bad row", "1 damaged rows skipped", lambda r: len(r.tries) == 3),
    ("logs/slowest_tries.json", "remove", "shown without their items",
     lambda r: len(r.slowest) == 3 and all(s.items is None for s in r.slowest)),
    ("logs/slowest_tries.json", "garbage", "could not be read", lambda r: all(s.items is None for s in r.slowest)),
    ("logs/errors.jsonl", "garbage", "errors.jsonl: 2 damaged lines", lambda r: r.failures == []),
    ("summary.json", "garbage", "summary.json could not be read", lambda r: r.headline.state == "stopped" and len(r.tries) == 3),
    ("summary.json", "remove", None, lambda r: r.headline.state == "stopped"),
]


@pytest.mark.parametrize(("name", "damage", "note", "holds"), DAMAGE, ids=[f"{d[0]}-{d[1]}" for d in DAMAGE])
def test_a_damaged_or_missing_file_is_a_note_not_a_traceback(finished, tmp_path, name, damage, note, holds):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    target = out / name
    if damage == "remove":
        target.unlink()
    elif damage == "a bad row":
        header, *rows = target.read_text().splitlines()
        target.write_text("\n".join([header, rows[0], "7,,x,0,yesterday,slow,1,1,0,ok", *rows[1:]]) + "\n")
    else:
        _garbage(target)
    report = read_target(out)
    assert isinstance(report, JobReport)
    if note is not None:
        assert any(note in line for line in report.notes), report.notes
    assert holds(report), report


def test_a_half_written_last_row_of_a_running_job_is_skipped_silently(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    with open(out / "logs" / "processed_mini_batches.csv", "a") as f:
        f.write("3,,1,0,2026-11-30T10:0")  # the job was killed mid-line
    report = read_target(out)
    assert len(report.tries) == 3 and report.notes == []


def test_an_empty_tries_file_is_zero_tries(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    (out / "logs" / "processed_mini_batches.csv").write_text("")
    assert len(read_target(out).tries) == 0


# status.json's fields of a running or stopped job -> (the total shown, whether it is an estimate, items total)
TOTALS = [
    ({"listing_done": False, "mini_batches_total": 4, "mini_batches_expected": 40, "total_estimated": False},
     (40, False, None)),
    ({"listing_done": False, "mini_batches_total": 4, "mini_batches_expected": 40, "total_estimated": True},
     (40, True, None)),
    ({"listing_done": False, "mini_batches_total": 50, "mini_batches_expected": 40, "total_estimated": True},
     (50, True, None)),
    ({"listing_done": False, "mini_batches_total": 4, "mini_batches_expected": None}, (None, False, None)),
    ({"listing_done": True, "mini_batches_total": 4, "mini_batches_expected": 40}, (4, False, 8)),
]


@pytest.mark.parametrize("state", ["running", "stopped"])
@pytest.mark.parametrize(("fields", "shown"), TOTALS, ids=["expected", "estimated", "listed past it", "unknown",
                                                           "listed"])
def test_a_running_or_stopped_job_s_total_is_the_one_status_shows(finished, state, fields, shown):
    from batchinfer.scheduler import shown_total

    status = {"job": "j", "state": state, "items_total": 8, "mini_batches_done": 0, "items_succeeded": 0,
              "items_failed": 0, **fields}
    h = read_job(finished, status=status).headline
    assert (h.mini_batches_total, h.total_estimated, h.items_total) == shown
    assert shown[:2] == shown_total(fields["mini_batches_total"], fields["listing_done"],
                                    fields["mini_batches_expected"], fields.get("total_estimated", False))


def test_an_older_batchinfer_s_job_resumed_has_a_run_not_recorded_first(finished, tmp_path):
    """Its tries before events.jsonl existed: one run "not recorded" at t0, the recorded run after it."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    later = []
    for event in _events(out):  # as if the recorded run came an hour after the unrecorded one
        event["time"] = (datetime.fromisoformat(event["time"]) + timedelta(hours=1)).isoformat(timespec="milliseconds")
        later.append(json.dumps(event))
    (out / "logs" / "events.jsonl").write_text("\n".join(later) + "\n")
    report = read_target(out)
    assert [(r.number, r.recorded, r.status) for r in report.runs] == [(1, False, None), (2, True, "succeeded")]
    unrecorded, recorded = report.runs
    assert unrecorded.start == 0 == min(report.tries.start) and unrecorded.end < recorded.start
    assert {w.run for w in report.workers} == {2} and report.headline.elapsed_runs == 2
    assert report.headline.elapsed_s == pytest.approx(
        unrecorded.end + next(e["elapsed_s"] for e in _events(out) if e["event"] == "run_ended"), abs=0.002)


@pytest.mark.parametrize("recorded", ["gone", "outside"])
def test_a_moved_pipeline_folder_reads_its_steps_inside_it(finished, tmp_path, recorded):
    """pipeline.json names the steps' folders absolutely: a copied or moved folder finds them in itself."""
    root = tmp_path / "moved"
    shutil.copytree(finished, root / "score")
    where = {"gone": str(tmp_path / "was" / "score"), "outside": str(finished)}[recorded]
    (root / "pipeline.json").write_text(json.dumps({"pipeline": "p", "status": "succeeded", "exit_code": 0, "steps": {
        "score": {"type": "parallel", "status": "succeeded", "folder": where}}}))
    report = read_target(root)
    assert isinstance(report, PipelineReport) and report.steps[0].folder == str(root / "score")
    assert report.steps[0].report.headline.output_dir == str(root / "score")


def test_failure_groups_count_distinct_items_up_to_a_cap(finished, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    records = [{"kind": "exception", "message": "retried", "items": ["same.txt"], "mini_batch": 0}] * 5
    records += [{"kind": "exception", "message": "many", "items": [f"f{n}.txt", f"g{n}.txt"], "mini_batch": n}
                for n in range(4)]
    (out / "logs" / "errors.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(reader, "ITEMS_COUNTED", 5)
    groups = {g.first_line: (g.tries, g.items, g.items_capped) for g in read_target(out).failures}
    assert groups == {"retried": (5, 1, False), "many": (4, 5, True)}


@pytest.mark.parametrize("make", [
    lambda p: p.mkdir(),  # an empty folder
    lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")),  # someone's folder
    lambda p: None,  # nothing there
])
def test_a_folder_batchinfer_did_not_write_is_refused_in_one_line(tmp_path, make):
    target = tmp_path / "folder"
    make(target)
    with pytest.raises(OutputError) as raised:
        read_target(target)
    assert "\n" not in str(raised.value) and raised.value.hint


def test_100000_tries_are_read_by_column(tmp_path):
    """A large job's tries: every row, sorted, and the slowest ten found from the CSV when slowest_tries.json
    is absent (a job run by an older batchinfer)."""
    logs = tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    lines = ["id,part,try,worker,start,seconds,items,succeeded,failed,status"]
    lines += [f"{i},,1,{i % 2},2026-11-30T10:{(i // 2000) % 60:02d}:{(i // 40) % 60:02d}.{i % 1000:03d}+00:00,"
              f"0.0{i % 10},1,1,0,ok" for i in range(100_000)]
    (logs / "processed_mini_batches.csv").write_text("\n".join(lines) + "\n")
    report = read_target(tmp_path / "out")
    assert len(report.tries) == 100_000 and report.tries.start == sorted(report.tries.start)
    assert [s.seconds for s in report.slowest] == [0.09] * 10 and report.headline.state == "stopped"
