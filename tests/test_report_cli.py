"""``batchinfer report`` and ``batchinfer run --report``: where the page goes, what is said on stderr, and
that a report never disturbs the job whose folder it reads (running, resumed or restarted)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MARKER, REPO, assert_one_line_error
from test_azure_pipeline import mnist

import batchinfer
from batchinfer.htmlreport.model import JobReport, PipelineReport
from batchinfer.htmlreport.page import render
from batchinfer.htmlreport.read import read_job, read_target
from batchinfer.layout import REPORT_MARKER

UMASK_077 = "import os, sys; os.umask(0o077); sys.argv[0] = 'batchinfer'; from batchinfer.cli import main; main()"
NO_PLOTLY = ("import sys; sys.modules['plotly'] = None; sys.argv[0] = 'batchinfer'; "
             "from batchinfer.cli import main; main()")


def is_page(html: str) -> bool:
    return html.lstrip().lower().startswith("<!doctype html") and html.rstrip().endswith("</html>")


def test_report_writes_the_page_and_the_job_still_resumes_and_restarts(job, batchinfer, text_files, tmp_path):
    data = text_files(6)
    run = job("echo_names.py", inputs={"path": str(data)}, mini_batch_size=2)
    assert run.code == 0, run.stderr
    out = tmp_path / "out"
    made = batchinfer("report", str(out))
    assert made.code == 0, made.stderr
    assert made.stdout == "" and made.stderr == f"batchinfer: report: {out / 'report.html'}\n"
    assert is_page((out / "report.html").read_text())
    # -o -: the page on stdout and nothing else; nothing on stderr
    streamed = batchinfer("report", str(out), "-o", "-")
    assert streamed.code == 0 and streamed.stderr == "" and is_page(streamed.stdout)
    # the Python API, as batchinfer.run
    assert batchinfer_api_report(out, tmp_path / "api.html") == str(tmp_path / "api.html")
    # report.html is not claimed: a rerun (reuse) goes on beside it; --restart removes it (the old run's page,
    # marked as batchinfer's) but never a report.html of the user's, which `report` then refuses to overwrite
    again = batchinfer("run", str(tmp_path / "job.yaml"), "--output", str(out))
    assert again.code == 0 and (out / "report.html").exists() and REPORT_MARKER in (out / "report.html").read_text()
    again = batchinfer("run", str(tmp_path / "job.yaml"), "--output", str(out), "--restart")
    assert again.code == 0 and not (out / "report.html").exists()
    (out / "report.html").write_text("<html>my own notes</html>")
    again = batchinfer("run", str(tmp_path / "job.yaml"), "--output", str(out), "--restart")
    assert again.code == 0 and json.loads((out / "summary.json").read_text())["items_succeeded"] == 6
    assert_one_line_error(batchinfer("report", str(out)), "report.html", "-o")
    assert (out / "report.html").read_text() == "<html>my own notes</html>"


def test_where_the_page_cannot_go_is_one_line_and_nothing_is_left(job, batchinfer, text_files, tmp_path, run_marker):
    run = job("echo_names.py", inputs={"path": str(text_files(2))})
    assert run.code == 0, run.stderr
    out = tmp_path / "out"
    for where, fragment in [(tmp_path, "is a folder"), (tmp_path / "no" / "such" / "page.html", "cannot write"),
                            (Path("/dev/full"), "No space left")]:
        assert_one_line_error(batchinfer("report", str(out), "-o", str(where)), str(where), fragment)
    assert not list(tmp_path.glob("*.tmp")) and not Path("/dev/full.tmp").exists()
    with open("/dev/full", "w") as full:  # -o - to a full disk
        proc = subprocess.run([sys.executable, "-m", "batchinfer", "report", str(out), "-o", "-"], stdout=full,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, MARKER: run_marker}, timeout=120,
                              check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "stdout" in proc.stderr and "Traceback" not in proc.stderr
    # the page takes the umask's mode, as every file the user reads
    made = subprocess.run([sys.executable, "-c", UMASK_077, "report", str(out)], capture_output=True, text=True, env={**os.environ, MARKER: run_marker}, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE((out / "report.html").stat().st_mode) == 0o600


def batchinfer_api_report(out, to):
    return batchinfer.report(out, out=to)


@pytest.mark.parametrize("make", [
    lambda p: p.mkdir(),
    lambda p: (p.mkdir(), (p / "mine.txt").write_text("not a job")),
    lambda p: p.write_text("a file"),
    lambda p: None,
], ids=["empty folder", "someone's folder", "a file", "nothing"])
def test_what_is_not_an_output_folder_is_one_line(batchinfer, tmp_path, make):
    target = tmp_path / "target"
    make(target)
    assert_one_line_error(batchinfer("report", str(target)), str(target))
    assert not (tmp_path / "target" / "report.html").exists()


def test_a_remote_folder_is_read_through_the_store_and_gets_its_page(job, batchinfer, text_files, tmp_path):
    """file://, as a store: the lease, segments and all (the store code is the same for s3:// and az://)."""
    data = text_files(3)
    (data / "bad.txt").write_text("bad\n")
    url = f"file://{tmp_path / 'remote'}"
    run = job("fail_on_bad.py", "--output", url, inputs={"path": str(data)}, mini_batch_size=1, run_max_try=1)
    assert run.code == 0, run.stderr
    made = batchinfer("report", url)
    assert made.code == 0, made.stderr
    assert made.stderr == f"batchinfer: report: {url}/report.html\n"
    assert is_page((tmp_path / "remote" / "report.html").read_text())
    report = read_target(url)
    assert report.headline.state == "succeeded" and report.headline.output_dir == url
    assert len(report.tries) == 4 and report.failures[0].example_items == [str(data / "bad.txt")]
    assert [r.status for r in report.runs] == ["succeeded"] and report.slowest[0].items
    again = batchinfer("run", str(tmp_path / "job.yaml"), "--output", url, "--restart")  # beside report.html
    assert again.code == 0, again.stderr
    missing = batchinfer("report", f"file://{tmp_path / 'nothing'}")
    assert_one_line_error(missing, "nothing")


@pytest.mark.parametrize("args", [["report", "{out}"], ["run", "{spec}", "--output", "{out}", "--report"]],
                         ids=["report", "run --report"])
def test_missing_plotly_is_one_line_with_the_extra_to_install(tmp_path, run_marker, text_files, args):
    data = text_files(2)
    spec = tmp_path / "job.yaml"
    spec.write_text(f"entry_script: echo_names.py\nsource_directory: {REPO / 'tests' / 'scripts'}\n"
                    f"inputs: {{path: {data}}}\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    command = [a.format(out=out, spec=spec) for a in args]
    proc = subprocess.run([sys.executable, "-c", NO_PLOTLY, *command], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, MARKER: run_marker}, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "pip install 'batchinfer[report]'" in proc.stderr, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert not (out / "report.html").exists() and not (out / "logs").exists()  # run --report: nothing ran


def test_a_running_job_is_reported_as_a_snapshot_and_finishes_untroubled(tmp_path, run_marker, text_files, batchinfer):
    data = text_files(5)
    (data / "zz_held.txt").write_text("held\n")  # listed last: nothing waits behind it
    gate = tmp_path / "gate"
    spec = tmp_path / "job.yaml"
    spec.write_text(f"entry_script: gated_echo.py\nsource_directory: {REPO / 'tests' / 'scripts'}\n"
                    f"inputs: {{path: {data}}}\nmini_batch_size: 1\nprocess_count_per_node: 2\n"
                    f"arguments: [--gate, {gate}, --held, held]\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out), "--quiet"],
                            env={**os.environ, MARKER: run_marker}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # a safety net: the job waits at the gate until this test opens it
        while _done(out) < 5 or _rows(out) < 5:  # the CSV is flushed apart from status.json: wait for both
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.05)
        made = batchinfer("report", str(out))
        assert made.code == 0, made.stderr
        snapshot = read_target(out)
        assert snapshot.headline.state == "running" and snapshot.headline.snapshot_at
        assert len(snapshot.tries) == 5 and snapshot.runs[0].end is None
    finally:
        gate.touch()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    final = read_target(out)
    assert final.headline.state == "succeeded" and final.headline.items_succeeded == 6
    assert (out / "report.html").exists() and "held.txt held" in (out / "parallel_run_step.txt").read_text()
    # a running job whose listing is not done yet: the page's total is status's (the counter's estimate), the
    # items total not known
    live = {**json.loads((out / ".batchinfer" / "status.json").read_text()), "state": "running",
            "listing_done": False, "mini_batches_total": 4, "mini_batches_expected": 40, "total_estimated": True}
    page = render(read_job(out, status=live))
    assert "id='mini-batches-total' data-value='40'" in page and "id='items-total' data-value=''" in page


def _rows(out) -> int:
    """Complete rows of processed_mini_batches.csv (a last line without its newline is not one)."""
    try:
        text = (out / "logs" / "processed_mini_batches.csv").read_text()
    except OSError:
        return 0
    return max(0, text.count("\n") - 1)


def _done(out) -> int:
    try:
        return json.loads((out / ".batchinfer" / "status.json").read_text()).get("mini_batches_done", 0)
    except (OSError, ValueError):
        return 0


def test_run_report_writes_the_page_when_the_run_ends_and_names_it(job, text_files, tmp_path):
    data = text_files(4)
    (data / "bad.txt").write_text("bad\n")
    run = job("fail_on_bad.py", "--report", inputs={"path": str(data)}, mini_batch_size=1, run_max_try=1,
              error_threshold=0)
    assert run.code == 1, run.stderr  # failed: the report is written all the same
    out = tmp_path / "out"
    assert f"batchinfer: report: {out / 'report.html'}\n" in run.stderr
    assert is_page((out / "report.html").read_text())
    assert read_target(out).failures[0].example_items == [str(data / "bad.txt")]


def test_run_report_with_output_dash_goes_into_logs_and_needs_them(job, text_files, tmp_path):
    data = text_files(3)
    refused = job("echo_names.py", "--output", "-", "--report", inputs={"path": str(data)})
    assert_one_line_error(refused, "--report", "--logs")
    logs = tmp_path / "logs"
    run = job("echo_names.py", "--output", "-", "--logs", str(logs), "--report", inputs={"path": str(data)})
    assert run.code == 0, run.stderr
    assert sorted(run.stdout.splitlines()) == [f"f{i:03d}.txt {i}" for i in range(3)]  # rows only on stdout
    assert f"batchinfer: report: {logs / 'report.html'}\n" in run.stderr and (logs / "report.html").exists()


def test_run_report_of_a_pipeline_has_one_step_report_per_step(tmp_path, batchinfer):
    out = tmp_path / "out"
    run = batchinfer("run", str(mnist(tmp_path)), "--output", str(out), "--report")
    assert run.code == 0, run.stderr
    assert f"batchinfer: report: {out / 'report.html'}\n" in run.stderr and is_page((out / "report.html").read_text())
    report = read_target(out)
    assert isinstance(report, PipelineReport) and report.status == "succeeded"
    assert [(s.name, s.kind) for s in report.steps] == [
        ("prepare_data", "command"), ("predict_digits_mnist", "parallel"), ("view_prediction_result", "command")]
    prepare, predict, view = report.steps
    assert isinstance(predict.report, JobReport) and predict.report.headline.items_succeeded == 12
    assert prepare.report is None and prepare.log == str(out / "prepare_data" / "logs" / "std_log.txt")
    assert view.status == "succeeded" and view.exit_code == 0


def test_run_report_on_s3_uses_the_spec_s_storage_options_and_report_spec_does_too(s3_server, batchinfer, text_files,
                                                                                   tmp_path):
    """The credentials are in the spec only (no environment variables): the page is written with them."""
    bucket = s3_server.new_bucket()
    url = f"s3://{bucket}/out"
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"entry_script": "echo_names.py", "source_directory": str(REPO / "tests" / "scripts"),
                                "inputs": {"path": str(text_files(3))}, "mini_batch_size": 1,
                                "output": {"path": url, "storage_options": s3_server.storage_options}}))
    run = batchinfer("run", str(spec), "--report")
    assert run.code == 0, run.stderr
    assert f"batchinfer: report: {url}/report.html\n" in run.stderr and "not written" not in run.stderr
    fs = s3_server.fs()
    page = fs.cat_file(f"{bucket}/out/report.html").decode()
    assert is_page(page) and REPORT_MARKER in page and s3_server.secret not in page
    fs.rm(f"{bucket}/out/report.html")
    again = batchinfer("report", "--spec", str(spec))
    assert again.code == 0 and again.stderr == f"batchinfer: report: {url}/report.html\n", again.stderr
    fs.invalidate_cache()
    assert fs.exists(f"{bucket}/out/report.html")
