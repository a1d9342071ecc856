"""Listing and cutting inputs: lazy, ordered, bounded; only descriptors leave the coordinator."""

from __future__ import annotations

import functools
import http.server
import json
import os
import pickle
import threading

import pytest
from conftest import SCRIPTS, assert_one_line_error

from batchinfer import inputs as inputs_module
from batchinfer.entry import check_entry_script
from batchinfer.executors.base import MAX_PREFETCH
from batchinfer.executors.local import LocalExecutor
from batchinfer.inputs import InputPlan, _glob_regex
from batchinfer.job import _worker_config
from batchinfer.output import Journal, RowSink
from batchinfer.resume import prepare_output
from batchinfer.scheduler import Scheduler, TryLog
from batchinfer.spec import load_spec


def spec_for(tmp_path, path: str, **extra):
    lines = ["entry_script: echo_names.py", f"source_directory: {SCRIPTS}", "inputs:", f"  path: {path}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    (tmp_path / "job.yaml").write_text("\n".join(lines) + "\n")
    return load_spec(tmp_path / "job.yaml")


def make_tree(root, folders: int, per_folder: int) -> None:
    for f in range(folders):
        (root / f"d{f:03d}").mkdir(parents=True)
        for i in range(per_folder):
            (root / f"d{f:03d}" / f"x{i:03d}.bin").write_bytes(b"x")


def test_first_mini_batch_exists_before_the_folder_is_fully_listed(tmp_path, monkeypatch):
    make_tree(tmp_path / "data", folders=40, per_folder=5)
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(inputs_module.os, "scandir", lambda p: (listed.append(p), real_scandir(p))[1])
    batches = InputPlan(spec_for(tmp_path, "data", mini_batch_size=3)).mini_batches()
    first = next(batches)
    assert len(first.files) == 3
    assert len(listed) <= 3  # the top folder and the first sub-folder or two, not all 41
    rest = list(batches)
    assert sum(len(b.files) for b in [first, *rest]) == 200
    assert len(listed) == 41


def test_order_is_sorted_depth_first_and_ids_are_stable(tmp_path):
    make_tree(tmp_path / "data", folders=3, per_folder=4)
    spec = spec_for(tmp_path, "data", mini_batch_size=5)
    once = [(b.id, b.files) for b in InputPlan(spec).mini_batches()]
    again = [(b.id, b.files) for b in InputPlan(spec).mini_batches()]
    assert once == again
    files = [f for _, batch in once for f in batch]
    assert files == sorted(files)
    assert [i for i, _ in once] == [0, 1, 2]


def test_descriptors_are_small_and_picklable(tmp_path):
    make_tree(tmp_path / "data", folders=1, per_folder=100)
    batch = next(InputPlan(spec_for(tmp_path, "data", mini_batch_size=100)).mini_batches())
    assert len(pickle.dumps(batch)) < 100 * 120  # paths only, no file contents


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/d/*.png", "/d/a.png", True),
        ("/d/*.png", "/d/sub/a.png", False),
        ("/d/**/*.png", "/d/a.png", True),
        ("/d/**/*.png", "/d/x/y/a.png", True),
        ("/d/img_?.png", "/d/img_1.png", True),
        ("/d/img_[0-4].png", "/d/img_7.png", False),
        ("/d/img_[!0-4].png", "/d/img_7.png", True),
    ],
)
def test_glob_patterns(pattern, path, matches):
    assert bool(_glob_regex(pattern).match(path)) is matches


def test_the_pool_holds_a_bounded_number_of_mini_batches(tmp_path):
    make_tree(tmp_path / "data", folders=1, per_folder=300)
    spec = spec_for(tmp_path, "data", mini_batch_size=1, process_count_per_node=2)
    entry = check_entry_script(spec)
    out = tmp_path / "out"
    prepare_output(out, spec, "test", restart=False)
    journal = Journal(out / ".batchinfer")
    sink = RowSink(out, spec.append_row_file_name, "txt", journal)
    executor = LocalExecutor(_worker_config(spec, entry, out), spec.worker_count, 30)
    pulled = 0
    high_water = 0

    def counted():
        nonlocal pulled
        for batch in InputPlan(spec).mini_batches():
            pulled += 1
            yield batch

    def watch(progress):
        nonlocal high_water
        high_water = max(high_water, pulled - progress.mini_batches_done)

    scheduler = Scheduler(spec, counted(), executor, sink, TryLog(out / "logs"), journal, watch)
    executor.start()
    try:
        progress = scheduler.run()
    finally:
        executor.stop()
    sink.finish()
    assert progress.mini_batches_done == 300
    assert high_water <= spec.worker_count * (1 + MAX_PREFETCH)
    assert len((out / "parallel_run_step.txt").read_text().splitlines()) == 300


# --------------------------------------------------------------- literal paths, globs, URLs


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("f?.txt", ["f?.txt"]),  # exists as written: taken literally, not as a glob matching fa.txt
        ("*.txt", ["*.txt"]),
        ("[ab].txt", ["[ab].txt"]),
        ("d[1]", ["d[1]/in.txt"]),  # a folder whose name holds '[' '1' ']'
        ("d[1]/*.txt", ["d[1]/in.txt"]),  # ... and a glob inside it
        ("d[0-9]/*.txt", ["d1/other.txt"]),
        ("f[a-c].txt", ["fa.txt", "fb.txt"]),  # does not exist as written: a glob
        ("f*.txt", ["f?.txt", "fa.txt", "fb.txt"]),
        ("f[?].txt", ["f?.txt"]),  # a glob can match a literal '?' with [?]
    ],
)
def test_a_path_that_exists_as_written_is_taken_literally(tmp_path, entry, expected):
    data = tmp_path / "data"
    (data / "d[1]").mkdir(parents=True)
    (data / "d1").mkdir()
    for name in ("f?.txt", "*.txt", "[ab].txt", "fa.txt", "fb.txt", "d[1]/in.txt", "d1/other.txt"):
        (data / name).write_text("x\n")
    spec = spec_for(tmp_path, f"'data/{entry}'", mini_batch_size=100)
    plan = InputPlan(spec)
    plan.check()
    files = [os.path.relpath(f, data) for batch in plan.mini_batches() for f in batch.files]
    assert files == expected


@pytest.mark.parametrize("command", ["run", "validate", "plan"])
@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        (["data/f000.txt", "data/missing.txt"], "input {tmp}/data/missing.txt does not exist"),
        (["data", "data/nothing*.png"], "no input files match {tmp}/data/nothing*.png"),
        (["data", "empty"], "no input files match {tmp}/empty"),
    ],
)
def test_an_entry_that_matches_nothing_is_an_error_never_skipped(tmp_path, batchinfer, text_files, command, entries, fragment):
    text_files(3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "job.yaml").write_text(
        f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs:\n  path: {entries}\n"
    )
    run = batchinfer(command, str(tmp_path / "job.yaml"), *(["--output", str(tmp_path / "out")] if command == "run" else []))
    assert_one_line_error(run, fragment.format(tmp=tmp_path))


# ----------------------------------------------------------------- http(s) URLs, literally


class _Server(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; a file under signed/ only with '?X-Amz-Signature=abc' (as a presigned URL)."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        if self.path.startswith("/signed/") and not self.path.endswith("?X-Amz-Signature=abc"):
            self.send_error(403, "signature required")
            return
        super().do_GET()

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    """(folder, base URL): a real HTTP server on 127.0.0.1 serving the folder, in a thread."""
    pytest.importorskip("aiohttp", reason="fsspec's http file system needs aiohttp (the dev extra should install it)")
    folder = tmp_path / "served"
    (folder / "signed").mkdir(parents=True)
    handler = functools.partial(_Server, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_query_strings_of_http_urls_are_kept(tmp_path, job, http_folder):
    folder, base = http_folder
    for i in range(4):
        (folder / "signed" / f"f{i:02d}.txt").write_text(f"{i}\n")
    (folder / "plain.txt").write_text("plain\n")
    urls = [f"{base}/signed/f{i:02d}.txt?X-Amz-Signature=abc" for i in range(4)] + [f"{base}/plain.txt"]
    run = job("contents.py", inputs={"path": urls}, mini_batch_size=2)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == ["0", "1", "2", "3", "plain"]
    assert run.summary["items_total"] == run.summary["items_succeeded"] == 5


def test_an_http_url_that_answers_an_error_is_one_line(tmp_path, job, http_folder):
    folder, base = http_folder
    (folder / "signed" / "f.txt").write_text("x\n")
    run = job("contents.py", inputs={"path": [f"{base}/signed/f.txt", f"{base}/missing.txt"]})
    assert_one_line_error(run, f"{base}/signed/f.txt", "HTTP 403")


# ------------------------------------------------------------- the output folder is never an input


def test_an_output_folder_inside_the_input_folder_is_never_an_input(tmp_path, batchinfer, text_files):
    text_files(5)
    other = tmp_path / "data" / "zz-earlier-run"  # another job's output folder left among the inputs
    (other / ".batchinfer").mkdir(parents=True)
    (other / "parallel_run_step.txt").write_text("old rows\n")
    (tmp_path / "job.yaml").write_text(
        f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs: data\noutput: data/results\n"
    )
    out = tmp_path / "data" / "results"
    first = batchinfer("run", str(tmp_path / "job.yaml"), output=out)
    assert first.code == 0, first.stderr
    assert sorted(first.rows()) == [f"f{i:03d}.txt {i}" for i in range(5)]
    again = batchinfer("run", str(tmp_path / "job.yaml"), output=out)
    assert again.code == 0, again.stderr  # reused: its own output did not change its inputs
    assert "reused" in again.stderr
    restarted = batchinfer("run", str(tmp_path / "job.yaml"), "--restart", output=out)
    assert restarted.code == 0, restarted.stderr
    assert restarted.summary["items_total"] == 5  # not its own logs and rows
    plan = batchinfer("plan", str(tmp_path / "job.yaml"), "--json")
    assert json.loads(plan.stdout)["files"] == 5
    assert "zz-earlier-run was not followed: it is a batchinfer output folder" in plan.stderr


def test_an_input_inside_the_output_folder_is_an_error(tmp_path, batchinfer, text_files):
    text_files(2, folder="out/data")
    (tmp_path / "job.yaml").write_text(
        f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs: out/data\noutput: out\n"
    )
    for command in ("run", "validate"):
        assert_one_line_error(batchinfer(command, str(tmp_path / "job.yaml")), "is inside the output folder")
