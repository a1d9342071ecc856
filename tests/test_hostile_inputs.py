"""Hostile input trees never crash a job and never lose an item silently.

The rule, per case (README, "Inputs"): what makes the listing itself impossible (an
unreachable remote input, a folder that cannot be listed) is a mistake reported in one line,
exit 2. A folder that leads back into one it is inside (a symbolic link loop) holds nothing
that is not listed already: it is not followed, and a note on stderr says so. An entry of a folder that is not a readable regular file (a dangling or
looping symbolic link, a FIFO, a socket) is still an item: it fails alone, with the reason in
errors.jsonl and failed_items.txt, and the rest is scored. Odd names (not UTF-8, a newline,
255 bytes) and links to folders elsewhere are scored like any other.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import socketserver

import pytest
import yaml
from conftest import SCRIPTS, assert_one_line_error

from batchinfer.inputs import InputPlan
from batchinfer.spec import load_spec

GOOD = 3  # good files in every tree: g0.txt .. g2.txt, each holding 'good<i>'


def _loop_to_parent(data):
    (data / "sub").mkdir()
    (data / "sub" / "back").symlink_to(data)


def _self_link(data):
    (data / "self.txt").symlink_to(data / "self.txt")


def _link_cycle(data):
    (data / "a.txt").symlink_to(data / "b.txt")
    (data / "b.txt").symlink_to(data / "a.txt")


def _dangling(data):
    (data / "gone.txt").symlink_to(data / "nowhere.txt")


def _fifo(data):
    os.mkfifo(data / "pipe.txt")


def _socket(data):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(data / "sock.txt"))
    server.close()


def _odd_name(name: bytes):
    def make(data):
        with open(os.path.join(os.fsencode(data), name), "w") as f:
            f.write("odd\n")
    return make


def _folder_elsewhere(data):
    outside = data.parent / "elsewhere"
    outside.mkdir()
    (outside / "e.txt").write_text("linked\n")
    (data / "linked").symlink_to(outside)


# case -> (make the hostile part, expected): "note <fragment>" for success with that note on stderr,
# "fail <count> <fragment>" for items failed alone with that message, "score <extra row>" for success
CASES = {
    "symbolic link loop to a parent": (_loop_to_parent, "note a symbolic link loop"),
    "symbolic link to itself": (_self_link, "fail 1 Too many levels of symbolic links"),
    "two links pointing at each other": (_link_cycle, "fail 2 Too many levels of symbolic links"),
    "dangling symbolic link": (_dangling, "fail 1 No such file or directory"),
    "FIFO": (_fifo, "fail 1 is a FIFO, not a regular file"),
    "socket": (_socket, "fail 1 is a socket, not a regular file"),
    "name that is not UTF-8": (_odd_name(b"bad\xff\xfe.txt"), "score odd"),
    "name with a newline": (_odd_name(b"two\nlines.txt"), "score odd"),
    "name of 255 bytes": (_odd_name(b"n" * 251 + b".txt"), "score odd"),
    "link to a folder elsewhere": (_folder_elsewhere, "score linked"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_tree(tmp_path, job, batchinfer, case):
    make, expected = CASES[case]
    data = tmp_path / "data"
    data.mkdir()
    for i in range(GOOD):
        (data / f"g{i}.txt").write_text(f"good{i}\n")
    make(data)
    run = job("contents.py", inputs="data", mini_batch_size=2, run_max_try=1)
    what, _, rest = expected.partition(" ")
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    rows = sorted(run.rows())
    if what == "note":
        assert rows == [f"good{i}" for i in range(GOOD)] and run.summary["items_failed"] == 0
        assert f"data/sub/back was not followed: it leads back to {tmp_path}/data ({rest})" in run.stderr
        plan = batchinfer("plan", str(tmp_path / "job.yaml"))
        assert plan.code == 0 and rest in plan.stderr
        return
    if what == "score":
        assert rows == sorted([f"good{i}" for i in range(GOOD)] + [rest])
        assert run.summary["items_failed"] == 0
        return
    count, _, message = rest.partition(" ")
    assert rows == [f"good{i}" for i in range(GOOD)]  # the good files all scored
    summary = run.summary
    assert summary["items_failed"] == int(count) and summary["items_total"] == GOOD + int(count)
    assert len(run.log("failed_items.txt").splitlines()) == int(count)
    assert any(message in e["message"] for e in run.errors()), run.errors()


def test_a_file_removed_while_listing_is_an_item_not_a_silent_loss(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        (data / f"f{i}.txt").write_text(f"{i}\n")
    (tmp_path / "job.yaml").write_text("entry_script: x.py\ninputs: data\n")
    files = InputPlan(load_spec(tmp_path / "job.yaml")).files()
    first = next(files)[1]
    (data / "f2.txt").unlink()  # after the folder was read, before the file was looked at
    rest = [found for _, found in files]
    assert [os.path.basename(f.path) for f in [first, *rest]] == ["f0.txt", "f1.txt", "f2.txt", "f3.txt"]
    assert [f.regular for f in rest] == [True, False, True]


def _closed_port() -> int:
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as server:
        return server.server_address[1]


@pytest.mark.parametrize("command", ["run", "validate", "plan"])
def test_an_unreachable_remote_input_is_one_line(tmp_path, job, batchinfer, command):
    url = f"http://127.0.0.1:{_closed_port()}/data/x.txt"
    if command == "run":
        run = job("contents.py", inputs={"path": [url]})
    else:
        job_yaml = tmp_path / "job.yaml"
        job_yaml.write_text(f"entry_script: contents.py\nsource_directory: {SCRIPTS}\ninputs: [{url}]\n")
        run = batchinfer(command, str(job_yaml), timeout=120)
    # the reason, not "does not exist" (without aiohttp, fsspec's http needs it: that line instead)
    reason = "Connect call failed" if importlib.util.find_spec("aiohttp") else "aiohttp"
    assert_one_line_error(run, url, reason)


# tabular inputs: the coordinator never opens what is not a regular file (a FIFO would block it)
TABLE_CASES = {
    "FIFO": (lambda t: os.mkfifo(t / "pipe.csv"), "is a FIFO, not a regular file"),
    "dangling symbolic link": (lambda t: (t / "gone.csv").symlink_to(t / "nowhere.csv"), "No such file or directory"),
    "symbolic link to itself": (lambda t: (t / "self.csv").symlink_to(t / "self.csv"), "Too many levels of symbolic links"),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_hostile_table_entry_fails_alone(tmp_path, job, case):
    make, message = TABLE_CASES[case]
    tables = tmp_path / "t"
    tables.mkdir()
    (tables / "a.csv").write_text("id\n" + "".join(f"r{i}\n" for i in range(20)))
    make(tables)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t"}, mini_batch_size="40", run_max_try=1)
    assert run.code == 0, run.stderr
    assert sorted(row.split()[0] for row in run.rows()) == sorted(f"r{i}" for i in range(20))
    assert run.summary["items_failed"] == 1
    assert any(message in e["message"] for e in run.errors()), run.errors()


def test_with_partition_keys_an_unreadable_table_is_one_line(tmp_path, job):
    tables = tmp_path / "t"
    tables.mkdir()
    (tables / "a.csv").write_text("id,group\nr1,g1\n")
    os.mkfifo(tables / "b.csv")
    run = job("partitions.py", inputs={"type": "tabular", "path": "t"}, partition_keys=["group"])
    # the keys are read once the workers start (the listing is lazy): the error is the last line
    assert run.code == 2 and "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("batchinfer: error: partition_keys: cannot read") and "b.csv' is a FIFO" in last


SOURCE_TREES = {
    # odd entries beside the entry script: the job's fingerprint reads every *.py of source_directory
    "fifo named .py": lambda src: os.mkfifo(src / "pipe.py"),
    "name not UTF-8": lambda src: (src / os.fsdecode(b"odd-\xff.py")).write_text("x = 1\n"),
    "dangling link .py": lambda src: (src / "gone.py").symlink_to(src / "nowhere.py"),
    "folder named .py": lambda src: (src / "pkg.py").mkdir(),
}


@pytest.mark.parametrize("case", list(SOURCE_TREES))
def test_odd_entries_in_source_directory_never_block_or_crash_the_run(tmp_path, batchinfer, text_files, case):
    src = tmp_path / "src"
    src.mkdir()
    (src / "echo_names.py").write_text((SCRIPTS / "echo_names.py").read_text())
    SOURCE_TREES[case](src)
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"entry_script": "echo_names.py", "source_directory": str(src),
                                    "inputs": {"path": str(text_files(4))}, "process_count_per_node": 1}))
    out = tmp_path / "out"
    result = batchinfer("run", str(spec), "--output", str(out), output=out, timeout=120)
    assert result.code == 0, result.stderr
    assert sorted(result.rows()) == [f"f{i:03d}.txt {i}" for i in range(4)]
    rerun = batchinfer("run", str(spec), "--output", str(out), output=out, timeout=120)
    assert rerun.code == 0 and "Traceback" not in rerun.stderr, rerun.stderr  # the same fingerprint: reused
