"""``batchinfer report`` seen in a real Chromium, offline: what a person sees matches the job's own files.

A failed job with a killed worker, a timeout and a bad file runs once for the module; its page must
load with the network off without a console error or a request, draw every chart, and every chart and
the headline must hold the numbers of the job's files, read back from the page: the throughput chart
ends at summary.json's items succeeded, the timeline has one bar per try of processed_mini_batches.csv
(per kind, on its worker), the workers chart holds events.jsonl's init() seconds and memory of every
worker start, the headline the mini-batches, tries, elapsed time and items/s of summary.json. The same
checks hold for the MNIST sample's page (its run shared with tests/test_sample_mnist.py) and a
pipeline's parallel step; a running job's snapshot shows the job's whole total. Screenshots go to the
repository's docs/ with BATCHINFER_WRITE_SCREENSHOTS=1 (for the README), else to a temporary folder.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import MARKER, REPO, SCRIPTS

# one xdist worker for the module (.ci/run: --dist loadgroup): one Chromium and one failed job, not two
pytestmark = pytest.mark.xdist_group("report-browser")
CHARTS = ("chart-throughput", "chart-timeline", "chart-durations", "chart-workers")
# the headline's numbers and the summary.json key each one shows
HEADLINE = [("items-succeeded", "items_succeeded"), ("items-failed", "items_failed"), ("items-total", "items_total"),
            ("mini-batches-total", "mini_batches_total"), ("tries", "tries")]
# file name -> what tests/scripts/misbehaves.py does with it; the bad file's name is HTML, shown as text
BAD = "<b>bad_one.txt"
MISBEHAVING = {"kill_me.txt": "worker_died", "hang_here.txt": "timeout", BAD: "exception"}


@dataclass
class Finished:
    """A job's output folder and its report."""

    out: Path
    html: Path
    summary: dict[str, Any]
    tries: list[dict[str, str]]  # processed_mini_batches.csv
    errors: list[dict[str, Any]]  # errors.jsonl
    events: list[dict[str, Any]]  # events.jsonl


def batchinfer(*args: str, marker: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real command line, tagged for the leak guard of tests/conftest.py."""
    env = {**os.environ, MARKER: marker}
    return subprocess.run([sys.executable, "-m", "batchinfer", *args], cwd=cwd, env=env, capture_output=True, check=False,
                          text=True, timeout=timeout)


def report(out: Path, html: Path, marker: str) -> Path:
    """``batchinfer report OUT -o HTML``, checked."""
    made = batchinfer("report", str(out), "-o", str(html), marker=marker, cwd=out.parent)
    assert made.returncode == 0, made.stderr
    assert html.stat().st_size > 0
    return html


def finished(out: Path, html: Path) -> Finished:
    """Read what the job left for the assertions."""
    logs = out / "logs"
    with open(logs / "processed_mini_batches.csv", newline="") as f:
        tries = list(csv.DictReader(f))
    errors = [json.loads(line) for line in (logs / "errors.jsonl").read_text().splitlines() if line] \
        if (logs / "errors.jsonl").exists() else []
    events = [json.loads(line) for line in (logs / "events.jsonl").read_text().splitlines() if line]
    return Finished(out, html, json.loads((out / "summary.json").read_text()), tries, errors, events)


def screenshot_to(name: str, tmp: Path) -> Path:
    """Where a screenshot goes: docs/ of the repository when asked (BATCHINFER_WRITE_SCREENSHOTS=1), else tmp."""
    return (REPO / "docs" if os.environ.get("BATCHINFER_WRITE_SCREENSHOTS") == "1" else tmp) / name


def assert_clean(page, charts=CHARTS) -> None:
    """Offline, nothing requested, nothing logged as an error, every chart drawn."""
    assert page.problems == []
    assert set(charts) <= set(page.chart_ids())


@pytest.fixture(scope="module")
def failed_job(tmp_path_factory) -> Finished:
    """A job that fails: a worker SIGKILLed (its retry succeeds), a try that hangs past the timeout twice,
    a file whose run() raises; 1 failed item is tolerated, 2 are not."""
    root = tmp_path_factory.mktemp("failed")
    data, state = root / "data", root / "state"
    data.mkdir()
    state.mkdir()
    for name in [f"f{i:02d}.txt" for i in range(8)] + list(MISBEHAVING):
        (data / name).write_text(name + "\n")
    spec = {"entry_script": "misbehaves.py", "source_directory": str(SCRIPTS),
            "inputs": {"type": "file", "path": str(data)}, "arguments": ["--state", str(state)],
            "mini_batch_size": 1, "process_count_per_node": 2, "run_invocation_timeout": 2, "run_max_try": 2,
            "error_threshold": 1}
    (root / "job.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    marker = f"report-browser-{os.getpid()}"
    out = root / "out"
    run = batchinfer("run", str(root / "job.yaml"), "--output", str(out), "--quiet", marker=marker, cwd=root)
    assert run.returncode == 1, run.stderr
    return finished(out, report(out, root / "report.html", marker))


@pytest.fixture(scope="module")
def failed_page(browser, failed_job):
    """The failed job's report, opened once for the module's assertions."""
    with browser.open_report(failed_job.html) as page:
        yield page


def test_the_failed_jobs_page_loads_offline_without_errors_and_draws_every_chart(failed_page, tmp_path):
    assert_clean(failed_page)
    assert failed_page.value("state") == "failed"
    assert failed_page.text("state") == "failed"
    failed_page.screenshot(screenshot_to("report-failed.png", tmp_path))


def test_the_failed_job_misbehaved_as_planned(failed_job):
    """The page's tests below mean something only if the job had each kind of failure, and a worker was replaced."""
    kinds = {e["kind"] for e in failed_job.errors}
    assert set(MISBEHAVING.values()) <= kinds
    assert failed_job.summary["status"] == "failed"
    assert len(worker_starts(failed_job)) > failed_job.summary["workers"]


def test_the_headline_shows_the_numbers_of_summary_json(failed_page, failed_job):
    assert_headline(failed_page, failed_job)


@pytest.mark.parametrize("kind", ["ok", *sorted(set(MISBEHAVING.values()))])
def test_the_timeline_shows_each_try_of_a_kind_on_the_worker_that_ran_it(failed_page, failed_job, kind):
    expected = sorted(row["worker"] for row in failed_job.tries if row["status"] == kind)
    assert expected, f"no {kind} try in processed_mini_batches.csv"
    traces = failed_page.traces("chart-timeline")
    bars = [trace for trace in traces if trace.get("name") == kind]
    assert bars, f"no {kind} trace in the timeline: {[t.get('name') for t in traces]}"
    assert sorted(worker_of(y) for trace in bars for y in trace["y"]) == expected


def test_the_timeline_draws_every_try_and_every_worker_start_once(failed_page, failed_job):
    assert_timeline(failed_page, failed_job)


def test_the_throughput_chart_ends_at_the_items_succeeded(failed_page, failed_job):
    assert_throughput(failed_page, failed_job)


def test_the_workers_chart_shows_init_time_and_memory_of_every_worker_start(failed_page, failed_job):
    assert_workers(failed_page, failed_job)


def test_the_failures_section_names_the_bad_file_as_text_and_shows_its_traceback(failed_page):
    page = failed_page.page
    assert BAD in failed_page.text("failures")  # escaped: the browser shows the name, it does not read a <b> tag
    assert page.locator("b", has_text="bad_one.txt").count() == 0
    group = page.locator("details", has=page.locator("summary", has_text="cannot score"))
    assert group.count() == 1
    group.locator("summary").click()  # as a person would, to read the traceback
    shown = group.inner_text()
    assert "ValueError: cannot score <b>bad_one.txt" in shown
    assert "Traceback (most recent call last)" in shown and "misbehaves.py" in shown


def test_the_durations_chart_holds_every_try(failed_page, failed_job):
    assert tries_in_durations(failed_page.traces("chart-durations")) == len(failed_job.tries)


# ---------------------------------------------------------------- what each chart must hold, read from the page


def assert_charts_hold_the_job(page, job: Finished, p: str = "") -> None:
    """Every chart and the headline hold the job's numbers (``p``: a pipeline step's id prefix)."""
    assert_headline(page, job, p)
    assert_throughput(page, job, p)
    assert_timeline(page, job, p)
    assert_workers(page, job, p)
    assert tries_in_durations(page.traces(f"{p}chart-durations")) == len(job.tries)


def assert_headline(page, job: Finished, p: str = "") -> None:
    """The headline's numbers are summary.json's (a job of one run: elapsed is its run's, in events.jsonl too),
    kept in data-value and shown as text."""
    s = job.summary
    for element, key in HEADLINE:
        assert int(page.value(f"{p}{element}")) == s[key], element
        if page.page.locator(f"#{p}{element}").is_visible():  # shown as text too, not only kept in data-value
            assert f"{s[key]:,}" in page.text(f"{p}{element}"), element
    done = s["mini_batches_succeeded"] + s["mini_batches_failed"]
    assert int(page.value(f"{p}mini-batches-done")) == done
    assert f"{done:,}" in page.text(f"{p}mini-batches-done")
    assert int(page.value(f"{p}tries")) == len(job.tries)  # summary.json's tries (HEADLINE) are the CSV's rows
    runs = [e["elapsed_s"] for e in job.events if e["event"] == "run_ended"]
    assert len(runs) == 1, "a job of one run: elapsed is its run's"
    elapsed = float(page.value(f"{p}elapsed"))
    assert elapsed == pytest.approx(s["elapsed_s"], abs=1e-3)
    assert elapsed == pytest.approx(runs[0], abs=1e-3)
    shown = page.text(f"{p}elapsed")
    if shown.endswith(" s"):  # under a minute: seconds, to a tenth (above: minutes and seconds)
        assert float(shown[:-2]) == pytest.approx(elapsed, abs=0.051), shown
    rate = float(page.value(f"{p}items-per-s"))
    # both rounded to 0.1, from elapsed times that differ by the ms rounding of events.jsonl's: 157.455 vs 157.445
    assert rate == pytest.approx(s["items_per_s"], abs=0.11)
    assert rate == pytest.approx((s["items_succeeded"] + s["items_failed"]) / elapsed, abs=0.051)
    assert page.number(f"{p}items-per-s") == pytest.approx(rate, abs=0.051)


def assert_throughput(page, job: Finished, p: str = "") -> None:
    """The cumulative line ends at the items succeeded (summary.json's, and the CSV's sum over the tries the
    chart draws: every try of every run); each items/s bar times its width is what the line adds in its bin."""
    traces = page.traces(f"{p}chart-throughput")
    (rate,) = [t for t in traces if t["type"] == "bar"]
    (line,) = [t for t in traces if t["type"] == "scatter"]
    succeeded = sum(int(row["succeeded"] or 0) for row in job.tries)
    assert line["y"][-1] == succeeded == job.summary["items_succeeded"]
    assert line["y"] == sorted(line["y"]), "a cumulative count never goes down"
    added = [b - a for a, b in zip([0, *line["y"]], line["y"])]
    assert [round(r * rate["width"]) for r in rate["y"]] == added


def assert_timeline(page, job: Finished, p: str = "") -> None:
    """One bar per try of processed_mini_batches.csv, in the trace of its kind ('ok' or the failure's), and
    one init() bar per worker start of events.jsonl; nothing else."""
    drawn: Counter[str] = Counter()
    for trace in page.traces(f"{p}chart-timeline"):
        assert trace["type"] == "bar", f"a {trace['type']} trace {trace.get('name')!r}: a small job draws bars"
        drawn[trace["name"]] += len(trace["y"])
    assert drawn.pop("init()", 0) == len(worker_starts(job))
    assert drawn == Counter(row["status"] for row in job.tries)


def assert_workers(page, job: Finished, p: str = "") -> None:
    """The workers chart: for each worker start of events.jsonl, its init() seconds and its memory after init()."""
    traces = page.traces(f"{p}chart-workers")
    (init,) = [t for t in traces if t.get("yaxis", "y") == "y"]
    (memory,) = [t for t in traces if t.get("yaxis") == "y2"]
    assert init["x"] == memory["x"]  # one label per worker start, both bars of a start under it
    runs = {e["run"] for e in job.events if e["event"] == "run_started"}
    drawn = sorted((started(label, runs), s, mb) for label, s, mb in zip(init["x"], init["y"], memory["y"]))
    expected = sorted(((e["run"], e["worker"]), e["init_s"], e["rss_mb"]) for e in worker_starts(job))
    assert drawn == expected


def worker_starts(job: Finished) -> list[dict[str, Any]]:
    """events.jsonl's worker_ready events."""
    return [e for e in job.events if e["event"] == "worker_ready"]


def started(label: Any, runs: set[int]) -> tuple[int, int]:
    """(run, worker) of a workers chart label: 'worker 1', 'worker 1 #2' (replaced), 'worker 1 run 2' (resumed)."""
    words = str(label).split()
    worker = int(words[words.index("worker") + 1])
    if "run" in words:
        return int(words[words.index("run") + 1]), worker
    (run,) = runs  # the page names the run only when there are several
    return run, worker


def worker_of(label: Any) -> str:
    """The worker a timeline row names (the page may label row 0 'worker 0')."""
    return str(label).split()[-1]


def tries_in_durations(traces: list[dict[str, Any]]) -> int:
    """The tries the durations chart counts, whether plotly bins them (histogram) or the page did (bars)."""
    counted = 0
    for trace in traces:
        if trace["type"] == "histogram":
            counted += len(trace["x"])
        else:
            assert trace["type"] == "bar", f"a durations trace of type {trace['type']}: read it here"
            counted += sum(trace["y"])
    return counted


# ---------------------------------------------------------------- the MNIST sample, a running job, a pipeline


@pytest.mark.tensorflow
def test_the_mnist_samples_page_shows_1000_of_1000_and_the_runs_numbers(browser, mnist_digits, tmp_path, run_marker):
    assert mnist_digits.code == 0, mnist_digits.stderr
    out = mnist_digits.output_dir  # shared with tests/test_sample_mnist.py: the report goes elsewhere
    job = finished(out, report(out, tmp_path / "report.html", run_marker))
    with browser.open_report(job.html) as page:
        assert_clean(page)
        assert (page.value("items-succeeded"), page.value("items-total")) == ("1000", "1000")
        assert "1,000" in page.text("items-succeeded")
        assert page.value("state") == "succeeded"
        assert_charts_hold_the_job(page, job)
        page.screenshot(screenshot_to("report-mnist.png", tmp_path))


# files of the running job: the workers queue up to 1 + MAX_PREFETCH (33) fast mini-batches each, so with two
# the job has listed at most FREE + 66 of them when it is held
FILES = 200
FREE = 5  # files listed (and committed) first; the others wait for the gate


def test_a_running_jobs_snapshot_says_running_and_shows_the_whole_total(browser, tmp_path, run_marker):
    """Held early, the job has listed part of its 200 files: its page shows the total its status shows (200,
    counted ahead of dispatch), not the mini-batches listed so far, and what it has done."""
    data = tmp_path / "data"
    data.mkdir()
    names = [f"a{i:03d}.txt" for i in range(FREE)] + [f"held{i:03d}.txt" for i in range(FREE, FILES)]
    for name in names:
        (data / name).write_text(name + "\n")
    gate = tmp_path / "gate"
    spec = {"entry_script": "gated_echo.py", "source_directory": str(SCRIPTS),
            "inputs": {"type": "file", "path": str(data)}, "arguments": ["--gate", str(gate), "--held", "held"],
            "mini_batch_size": 1, "process_count_per_node": 2}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-m", "batchinfer", "run", str(tmp_path / "job.yaml"), "--output",
                            str(out), "--quiet"], cwd=tmp_path, env={**os.environ, MARKER: run_marker},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # a safety net: the free files commit, the counter counts the folder
        while not (committed(out) == FREE and tried(out) == FREE and (status := live_status(out))
                   and status["items_done"] == FREE and status.get("mini_batches_expected") == FILES):
            assert job.poll() is None, job.stderr.read()
            assert time.monotonic() < deadline, f"the free files were not committed or counted: {live_status(out)}"
            time.sleep(0.05)
        assert not status["listing_done"] and status["mini_batches_total"] < FILES, \
            f"the job listed every file before it was held: the test cannot tell the total from the listed ({status})"
        html = report(out, tmp_path / "report.html", run_marker)
        with browser.open_report(html) as page:
            assert_clean(page)
            assert page.value("state") == "running"
            assert "snapshot of a running job" in page.text("snapshot")
            assert int(page.value("items-succeeded")) == FREE
            assert int(page.value("mini-batches-done")) == FREE
            assert int(page.value("mini-batches-total")) == FILES
            assert page.text("mini-batches-total") == str(FILES)  # a folder's count is exact: no ~
            # the items are known once listed: unknown (not shown) until then, never the listed so far
            assert page.value("items-total") in ("", str(FILES))
            (ok,) = [t for t in page.traces("chart-timeline") if t["name"] == "ok"]
            assert len(ok["x"]) == FREE
    finally:
        gate.touch()
        assert job.wait(timeout=120) == 0, job.stderr.read()


def committed(out: Path) -> int:
    """Rows in the job's output file so far."""
    rows = out / "parallel_run_step.txt"
    return len(rows.read_text().splitlines()) if rows.exists() else 0


def tried(out: Path) -> int:
    """Tries in processed_mini_batches.csv so far (whole lines only)."""
    path = out / "logs" / "processed_mini_batches.csv"
    return max(0, path.read_text().count("\n") - 1) if path.exists() else 0


def live_status(out: Path) -> dict[str, Any] | None:
    """The running job's live status (.batchinfer/status.json, rewritten about once a second), once it has counts."""
    try:
        status = json.loads((out / ".batchinfer" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return status if "items_done" in status else None


def test_a_pipelines_page_draws_the_charts_of_its_parallel_step(browser, tmp_path, run_marker):
    from test_azure_pipeline import mnist  # Azure's MNIST pipeline shape: command, parallel (12 files), command

    out = tmp_path / "out"
    run = batchinfer("run", str(mnist(tmp_path)), "--output", str(out), "--quiet", marker=run_marker, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    html = report(out, tmp_path / "report.html", run_marker)
    with browser.open_report(html) as page:
        assert_clean(page, charts=[f"step-2-{chart}" for chart in CHARTS])
        assert page.value("state") == "succeeded"
        assert page.page.locator("section[id^='step-']").count() == 3
        assert page.value("step-2-items-succeeded") == "12"
        assert_charts_hold_the_job(page, finished(out / "predict_digits_mnist", html), "step-2-")
