"""``batchinfer report`` seen in a real Chromium, offline: what a person sees matches the job's own files.

A failed job with a killed worker, a timeout and a bad file runs once for the module; its page must
load with the network off without a console error or a request, draw every chart, and show the numbers
of summary.json and processed_mini_batches.csv. The MNIST sample's page, and a running job's snapshot,
are opened too. Screenshots go to the repository's docs/ with BATCHINFER_WRITE_SCREENSHOTS=1 (for the
README), else to a temporary folder.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
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
    errors = [json.loads(line) for line in (logs / "errors.jsonl").read_text().splitlines() if line]
    return Finished(out, html, json.loads((out / "summary.json").read_text()), tries, errors)


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
    """The page's tests below mean something only if the job had each kind of failure."""
    kinds = {e["kind"] for e in failed_job.errors}
    assert set(MISBEHAVING.values()) <= kinds
    assert failed_job.summary["status"] == "failed"


@pytest.mark.parametrize(("element", "key"), HEADLINE)
def test_the_headline_shows_the_numbers_of_summary_json(failed_page, failed_job, element, key):
    assert int(failed_page.value(element)) == failed_job.summary[key]
    if failed_page.page.locator(f"#{element}").is_visible():  # shown as text too, not only kept in data-value
        assert f"{failed_job.summary[key]:,}" in failed_page.text(element)


@pytest.mark.parametrize("kind", sorted(set(MISBEHAVING.values())))
def test_the_timeline_shows_each_failed_try_on_the_worker_that_ran_it(failed_page, failed_job, kind):
    expected = sorted(row["worker"] for row in failed_job.tries if row["status"] == kind)
    assert expected, f"no {kind} try in processed_mini_batches.csv"
    bars = [trace for trace in failed_page.traces("chart-timeline") if kind in str(trace.get("name", ""))]
    assert bars, f"no {kind} trace in the timeline: {[t.get('name') for t in failed_page.traces('chart-timeline')]}"
    shown = sorted(worker_of(y) for trace in bars for y in trace["y"])
    assert shown == expected


def worker_of(label: Any) -> str:
    """The worker a timeline row names (the page may label row 0 'worker 0')."""
    return str(label).split()[-1]


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


@pytest.mark.tensorflow
def test_the_mnist_samples_page_shows_1000_of_1000(browser, tmp_path, run_marker):
    pytest.importorskip("keras", reason="the sample needs the 'tensorflow' extra")
    out = tmp_path / "mnist-digits"
    run = batchinfer("run", str(REPO / "sample_data" / "mnist_job.yaml"), "--output", str(out), "--quiet",
                     marker=run_marker, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    html = report(out, tmp_path / "report.html", run_marker)
    with browser.open_report(html) as page:
        assert_clean(page)
        assert (page.value("items-succeeded"), page.value("items-total")) == ("1000", "1000")
        assert "1,000" in page.text("items-succeeded")
        assert page.value("state") == "succeeded"
        assert tries_in_durations(page.traces("chart-durations")) == json.loads((out / "summary.json").read_text())["tries"]
        page.screenshot(screenshot_to("report-mnist.png", tmp_path))


def test_a_running_jobs_snapshot_renders_and_says_running(browser, tmp_path, run_marker):
    data = tmp_path / "data"
    data.mkdir()
    names = [f"f{i:02d}.txt" for i in range(6)] + ["held.txt"]
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
        done = len(names) - 1
        deadline = time.monotonic() + 120  # a safety net: every file but the held one commits first
        while not (committed(out) == done and tried(out) == done and live_succeeded(out) == done):
            assert job.poll() is None, job.stderr.read()
            assert time.monotonic() < deadline, "the job's unheld files were not committed"
            time.sleep(0.05)
        html = report(out, tmp_path / "report.html", run_marker)
        with browser.open_report(html) as page:
            assert_clean(page)
            assert page.value("state") == "running"
            assert "snapshot of a running job" in page.text("snapshot")
            assert int(page.value("items-succeeded")) == done
            (ok,) = [t for t in page.traces("chart-timeline") if t["name"] == "ok"]
            assert len(ok["x"]) == done
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


def live_succeeded(out: Path) -> int | None:
    """Items succeeded in the running job's live status (.batchinfer/status.json, rewritten about once a second)."""
    try:
        return json.loads((out / ".batchinfer" / "status.json").read_text()).get("items_succeeded")
    except (OSError, ValueError):
        return None


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
        step = json.loads((out / "predict_digits_mnist" / "summary.json").read_text())
        assert tries_in_durations(page.traces("step-2-chart-durations")) == step["tries"]
