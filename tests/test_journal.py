"""The journal is data, never code: nothing read back is unpickled; a damaged or forged journal is
one clear error (exit 2, the file and the line); a crash's torn tail is cut off; a 0.1.0 folder works.
"""

from __future__ import annotations

import json
import pickle
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import MARKER, SCRIPTS, assert_one_line_error

FIXTURE_010 = Path(__file__).resolve().parent / "fixtures" / "journal-0.1.0"


def write_job(root: Path, files: int, contents: dict[int, str]) -> Path:
    """Files f000.txt... holding their number (or ``contents[i]``), and a judge_content job over them."""
    data = root / "data"
    data.mkdir(parents=True)
    for i in range(files):
        (data / f"f{i:03d}.txt").write_text(contents.get(i, str(i)) + "\n")
    spec = root / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "entry_script": "judge_content.py", "source_directory": str(SCRIPTS), "inputs": {"path": "data"},
        "mini_batch_size": 4, "process_count_per_node": 1, "run_max_try": 1,
    }))
    return spec


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished job of 12 files in 3 mini-batches; f005 fails, so mini-batch 1 is in parts."""
    root = tmp_path_factory.mktemp("finished")
    spec = write_job(root, 12, {5: "bad"})
    out = root / "out"
    run = subprocess.run([sys.executable, "-m", "batchinfer", "run", str(spec), "--output", str(out)],
                         capture_output=True, text=True, env={**os.environ, MARKER: "journal-base"}, cwd=root, timeout=180)
    assert run.returncode == 0, run.stderr
    return spec, out


EXPECTED_ROWS = [f"f{i:03d}.txt {i}" for i in range(12) if i != 5]


@pytest.fixture
def folder(finished, tmp_path):
    """A copy of the finished job's output folder, for one test to damage."""
    spec, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return spec, copy


def journal_of(out: Path) -> Path:
    return out / ".batchinfer" / "journal.jsonl"


class Plant:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def planted_pickle(marker: Path) -> str:
    import base64

    return base64.b64encode(pickle.dumps(Plant(marker))).decode()


def test_the_planted_pickle_does_create_its_file_when_loaded(tmp_path):
    """The probe used below works: if batchinfer ever unpickled it, the marker would appear."""
    import base64

    pickle.loads(base64.b64decode(planted_pickle(tmp_path / "marker"))).close()  # noqa: S301 - the probe
    assert (tmp_path / "marker").exists()


def resume(batchinfer, spec: Path, out: Path, *args: str):
    (out / "summary.json").unlink(missing_ok=True)  # an interrupted job: the next run reads the journal
    return batchinfer("run", str(spec), "--output", str(out), *args, output=out)


def assert_rows_exactly_once(out: Path, expected: list[str]) -> None:
    data = (out / "parallel_run_step.txt").read_bytes()
    assert data.endswith(b"\n") and b"\0" not in data
    rows = data.decode().splitlines()
    assert sorted(rows) == sorted(expected), rows


# ------------------------------------------------------------------ forged journals: refused, named, untouched


def line(**fields) -> bytes:
    """A journal line that batchinfer could have written: a plain success of mini-batch 7, unless changed."""
    data = {"v": 2, "id": 7, "digest": "00", "end": "END", "items": 1, "succeeded": 1, **fields}
    return json.dumps({k: v for k, v in data.items() if v is not ...}, separators=(",", ":")).encode()


FORGED = {  # the line appended to a good journal -> what the error says about it
    "not JSON": (b"hello", "not a JSON line"),
    "empty line": (b"", "not a JSON line"),
    "not UTF-8": (b'{"v":2,"id":7,"digest":"\xff\xfe"}', "not UTF-8"),
    "an array": (b"[1, 2]", "not a JSON object"),
    "nested deeply": (b"[" * 100_000, "not a JSON line"),
    "id a string": (line(id="7"), "id must be a whole number"),
    "id negative": (line(id=-1), "id must be a whole number"),
    "id huge": (line(id=2**64), "id must be a whole number"),
    "id true": (line(id=True), "id must be a whole number"),
    "id past 2**63-1": (line(id=2**63), "id must be a whole number"),
    "id with a leading zero": (line().replace(b'"id":7', b'"id":07'), "not a JSON line"),
    "id missing": (line(id=...), "id is missing"),
    "end a fraction": (line(end=1.5), "end must be a whole number"),
    "end too big for a float": (b'{"v":2,"id":7,"digest":"00","end":1e400,"items":1,"succeeded":1}',
                                "end must be a whole number"),
    "a NaN": (b'{"v":2,"id":7,"digest":"00","end":0,"items":NaN,"succeeded":1}', "NaN is not a number"),
    "ok a string": (line(ok="yes"), "ok must be true or false"),
    "unknown key": (line(command="rm -rf ~"), "unknown key 'command'"),
    "a pickle in a current line": (line(retry="PICKLE"), "unknown key 'retry'"),
    "a newer format": (line(v=3, hologram=True), "written by a newer batchinfer (journal format 3"),
    "format a string": (line(v="2"), "unknown journal format"),
    "part reversed": (line(id=1, part=[3, 1], root_items=4), "part must be [lo, hi]"),
    "part of three": (line(id=1, part=[0, 1, 2], root_items=4), "part must be [lo, hi]"),
    "part without root_items": (line(id=1, part=[0, 1]), "a part needs root_items"),
    "part past root_items": (line(id=1, part=[3, 9], root_items=4), "a part needs root_items"),
    "root_items of a whole one": (line(root_items=4), "root_items without part"),
    "a key twice": (b'{"v":2,"id":7,"id":8,"digest":"00","end":0,"items":1,"succeeded":1}', "a key appears twice"),
    "counts that do not add up": (line(succeeded=2), "succeeded + failed is not items"),
    "failed without items": (line(ok=False, succeeded=0, failed=1), "ok does not agree"),
    "digest not hex": (line(digest='a"b'), "digest must be a hexadecimal string"),
    "kind a path": (line(ok=False, succeeded=0, failed=1, kind="../x", failed_items=["x"]), "kind must be"),
    "end going back": (line(end=0), "end 0 is before the previous line's end"),
    "a committed mini-batch again": (line(id=0), "mini-batch 0 was already committed"),
    "a committed part again": (line(id=1, part=[2, 4], root_items=4, items=2, succeeded=2),
                               "mini-batch 1 part [2, 4] was already committed"),
    "overlapping parts": (line(id=1, part=[0, 2], root_items=4, items=2, succeeded=2),
                          "mini-batch 1: part [0, 2] overlaps part"),
    "whole after parts": (line(id=1, items=4, succeeded=4), "mini-batch 1 is whole here but in parts"),
    "a 0.1.0 line after current ones": (line(v=...), "journal formats are mixed"),
}


@pytest.mark.parametrize("forged", FORGED.values(), ids=list(FORGED))
def test_a_forged_line_is_one_error_naming_the_file_and_line(folder, batchinfer, tmp_path, forged):
    spec, out = folder
    raw, reason = forged
    marker = tmp_path / "marker"
    size = (out / "parallel_run_step.txt").stat().st_size
    raw = raw.replace(b'"END"', str(size).encode()).replace(b"PICKLE", planted_pickle(marker).encode())
    journal = journal_of(out)
    lines = journal.read_bytes().count(b"\n")
    journal.write_bytes(journal.read_bytes() + raw + b"\n")
    before = journal.read_bytes(), (out / "parallel_run_step.txt").read_bytes()
    run = resume(batchinfer, spec, out)
    assert_one_line_error(run, f"{journal}, line {lines + 1}: {reason}", "--restart")
    assert (journal.read_bytes(), (out / "parallel_run_step.txt").read_bytes()) == before, "a refused journal is left as it was"
    assert not marker.exists()


def test_the_template_of_the_forged_lines_is_itself_accepted(folder, batchinfer):
    """The table's lines differ from an acceptable one in one way each: this one passes."""
    spec, out = folder
    size = (out / "parallel_run_step.txt").stat().st_size
    journal = journal_of(out)
    journal.write_bytes(journal.read_bytes() + line().replace(b'"END"', str(size).encode()) + b"\n")
    run = resume(batchinfer, spec, out)
    assert run.code == 0, run.stderr
    assert_rows_exactly_once(out, EXPECTED_ROWS)


@pytest.mark.parametrize("forged", ["not JSON", "a committed mini-batch again", "a newer format"])
def test_retry_failed_refuses_a_forged_journal_too(folder, batchinfer, forged):
    spec, out = folder
    raw, reason = FORGED[forged]
    size = (out / "parallel_run_step.txt").stat().st_size
    journal = journal_of(out)
    lines = journal.read_bytes().count(b"\n")
    journal.write_bytes(journal.read_bytes() + raw.replace(b'"END"', str(size).encode()) + b"\n")
    run = batchinfer("run", str(spec), "--output", str(out), "--retry-failed", output=out)
    assert_one_line_error(run, f"{journal}, line {lines + 1}: {reason}")


# ------------------------------------------------------------------ what a crash leaves: repaired silently


def torn_last_line(out: Path) -> None:
    journal = journal_of(out)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])


def torn_garbage(out: Path) -> None:
    journal = journal_of(out)
    journal.write_bytes(journal.read_bytes() + b"\xff\xfe{\"v\":2,\"id")


def power_cut(out: Path) -> None:
    """The journal reached the disk, the last rows did not: its lines past the output's end are dropped."""
    first_end = json.loads(journal_of(out).read_bytes().splitlines()[0])["end"]
    with open(out / "parallel_run_step.txt", "r+b") as f:
        f.truncate(first_end)


def output_lost(out: Path) -> None:
    (out / "parallel_run_step.txt").unlink()


@pytest.mark.parametrize("damage", [torn_last_line, torn_garbage, power_cut, output_lost])
def test_what_a_crash_leaves_is_cut_off_and_redone(folder, batchinfer, damage):
    spec, out = folder
    damage(out)
    run = resume(batchinfer, spec, out)
    assert run.code == 0, run.stderr
    assert_rows_exactly_once(out, EXPECTED_ROWS)
    assert run.summary["items_succeeded"] == 11 and run.summary["items_failed"] == 1


# ------------------------------------------------------------------ a pickle in the journal is never loaded


def as_010_with_planted_pickle(out: Path, marker: Path) -> None:
    """Rewrite the journal as batchinfer 0.1.0 wrote it (no format version), with the planted pickle as
    the failed entry's ``retry``, where 0.1.0 kept the failed mini-batch for --retry-failed."""
    lines = []
    for raw in journal_of(out).read_bytes().splitlines():
        data = json.loads(raw)
        data.pop("v", None)
        if not data.get("ok", True):
            data["retry"] = planted_pickle(marker)
        lines.append(json.dumps(data, separators=(",", ":")) + "\n")
    journal_of(out).write_text("".join(lines))


@pytest.mark.parametrize("command", ["resume", "rerun", "retry-failed", "status", "validate"])
def test_a_pickle_planted_in_the_journal_is_never_loaded(folder, batchinfer, tmp_path, command):
    spec, out = folder
    marker = tmp_path / "marker"
    as_010_with_planted_pickle(out, marker)
    if command == "resume":
        run = resume(batchinfer, spec, out)
    elif command == "rerun":
        run = batchinfer("run", str(spec), "--output", str(out))
    elif command == "retry-failed":
        run = batchinfer("run", str(spec), "--output", str(out), "--retry-failed", output=out)
    else:
        run = batchinfer(command, str(out if command == "status" else spec))
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert not marker.exists(), "the pickle was loaded"
    if command in ("resume", "retry-failed"):  # the journal was read: rewritten in the current format
        assert b"\"retry\"" not in journal_of(out).read_bytes()
        assert all(json.loads(raw)["v"] == 2 for raw in journal_of(out).read_bytes().splitlines())


# ------------------------------------------------------------------ a folder written by batchinfer 0.1.0


def install_010_folder(root: Path) -> tuple[Path, Path]:
    """The output folder that batchinfer 0.1.0 (commit ed6fa62) wrote for this job (tests/fixtures/journal-0.1.0),
    moved here: its paths, and the digests and fingerprint that hash them, are those of this folder.
    """
    from batchinfer.entry import check_entry_script
    from batchinfer.inputs import InputPlan
    from batchinfer.resume import fingerprint
    from batchinfer.spec import load_spec

    spec_path = write_job(root, 20, {5: "bad", 10: "wrong"})
    out = root / "out"
    shutil.copytree(FIXTURE_010 / "out", out)
    for path in out.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes().replace(b"@ROOT@", str(root).encode()))
    spec = load_spec(spec_path)
    digests = {batch.id: batch.digest for batch in InputPlan(spec).mini_batches()}
    journal = journal_of(out)
    journal.write_text(re.sub(r'"id":(\d+),"digest":"[0-9a-f]+"',
                              lambda m: f'"id":{m[1]},"digest":"{digests[int(m[1])]}"', journal.read_text()))
    job = json.loads((out / ".batchinfer" / "job.json").read_text())
    job["fingerprint"] = fingerprint(spec, check_entry_script(spec), out)
    (out / ".batchinfer" / "job.json").write_text(json.dumps(job))
    return spec_path, out


def test_the_010_fixture_is_what_010_wrote():
    journal = (FIXTURE_010 / "out" / ".batchinfer" / "journal.jsonl").read_text().splitlines()
    assert not any('"v"' in raw for raw in journal)
    assert sum('"retry":' in raw for raw in journal) == 2  # a whole failed mini-batch and a failed part
    assert json.loads((FIXTURE_010 / "out" / ".batchinfer" / "job.json").read_text())["version"] == "0.1.0"


def test_retry_failed_on_a_folder_written_by_010(tmp_path, batchinfer):
    spec, out = install_010_folder(tmp_path)
    (tmp_path / "data" / "f005.txt").write_text("5\n")  # the user fixes the two bad inputs
    (tmp_path / "data" / "f010.txt").write_text("10\n")
    run = batchinfer("run", str(spec), "--output", str(out), "--retry-failed", output=out)
    assert run.code == 0, run.stderr
    assert_rows_exactly_once(out, [f"f{i:03d}.txt {i}" for i in range(20)])
    summary = run.summary
    assert (summary["items_succeeded"], summary["items_failed"], summary["mini_batches_failed"]) == (20, 0, 0)
    assert run.log("failed_items.txt") == ""
    assert b"\"retry\"" not in journal_of(out).read_bytes()


def test_resume_of_a_folder_written_by_010(tmp_path, batchinfer):
    spec, out = install_010_folder(tmp_path)
    journal = journal_of(out)
    journal.write_bytes(b"".join(journal.read_bytes().splitlines(keepends=True)[:4]))  # killed after 4 commits
    run = resume(batchinfer, spec, out)
    assert run.code == 0, run.stderr
    assert_rows_exactly_once(out, [f"f{i:03d}.txt {i}" for i in range(20) if i not in (5, 8, 9, 10, 11)])
    summary = run.summary
    assert (summary["items_succeeded"], summary["items_failed"], summary["mini_batches_resumed"]) == (15, 5, 4)
    assert run.log("failed_items.txt").splitlines() == [str(tmp_path / "data" / f"f{i:03d}.txt") for i in (5, 8, 9, 10, 11)]
    assert all(json.loads(raw)["v"] == 2 for raw in journal.read_bytes().splitlines())


def test_retry_failed_finds_a_failed_table_piece_by_its_label(tmp_path, batchinfer):
    """A CSV mini-batch is bisected to the piece holding the bad row; the fix keeps the file's layout,
    so --retry-failed finds that piece again (by id, part and label) and scores just it."""
    table = tmp_path / "rows.csv"
    table.write_text("id,value\n" + "".join(f"r{i:03d},{i}\n" for i in range(100)))
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "entry_script": "fail_on_id.py", "source_directory": str(SCRIPTS), "arguments": ["--bad", "r042"],
        "inputs": {"type": "tabular", "path": str(table)}, "process_count_per_node": 1, "run_max_try": 1}))
    out = tmp_path / "out"
    first = batchinfer("run", str(spec), "--output", str(out), output=out)
    assert first.code == 0, first.stderr
    failed = first.log("failed_items.txt").splitlines()
    assert len(failed) == 1 and failed[0].startswith(f"{table} rows ") and first.summary["items_failed"] < 10
    table.write_text(table.read_text().replace("r042,", "x042,"))  # fixed in place, same size
    retried = batchinfer("run", str(spec), "--output", str(out), "--retry-failed", output=out)
    assert retried.code == 0, retried.stderr
    assert_rows_exactly_once(out, [f"r{i:03d}" if i != 42 else "x042" for i in range(100)])
    assert retried.summary["items_failed"] == 0 and retried.log("failed_items.txt") == ""


CHANGES = {  # how the listing changed since the job ran
    "a file added before it": lambda data: (data / "f000a.txt").write_text("0a\n"),
    "a file removed": lambda data: (data / "f001.txt").unlink(),
    "the bad file renamed": lambda data: (data / "f005.txt").rename(data / "f005-fixed.txt"),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=list(CHANGES))
def test_retry_failed_refuses_a_listing_that_no_longer_matches(tmp_path, batchinfer, change):
    spec = write_job(tmp_path, 12, {5: "bad"})
    out = tmp_path / "out"
    assert batchinfer("run", str(spec), "--output", str(out)).code == 0
    change(tmp_path / "data")
    run = batchinfer("run", str(spec), "--output", str(out), "--retry-failed", output=out)
    assert_one_line_error(run, "--retry-failed: the inputs are not listed as when the job ran (mini-batch 1", "--restart")


def test_credentials_that_010_wrote_in_the_journal_are_masked_when_it_is_read(folder, batchinfer, tmp_path):
    spec, out = folder
    as_010_with_planted_pickle(out, tmp_path / "marker")
    journal = journal_of(out)
    label = str(spec.parent / "data" / "f005.txt")
    journal.write_text(journal.read_text().replace(json.dumps(label), json.dumps("https://u:SECRET@h/f005.txt?sig=SECRET")))
    run = resume(batchinfer, spec, out)
    assert run.code == 0, run.stderr
    assert b"SECRET" not in journal.read_bytes()
    assert run.log("failed_items.txt") == "https://u:***@h/f005.txt?sig=***\n"


def replaced_by_a_link(path: Path, target: Path) -> None:
    target.write_bytes(path.read_bytes() if path.exists() else b"")
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def replaced_by_a_fifo(path: Path, target: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def replaced_by_a_folder(path: Path, target: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


@pytest.mark.parametrize("name", [".batchinfer/journal.jsonl", "parallel_run_step.txt", "logs/errors.jsonl",
                                  "logs/processed_mini_batches.csv", "logs/job.log", "logs/worker-0.log"])
@pytest.mark.parametrize("replace", [replaced_by_a_link, replaced_by_a_fifo, replaced_by_a_folder])
def test_a_state_file_replaced_by_a_link_fifo_or_folder_is_refused_not_followed(folder, batchinfer, tmp_path, name, replace):
    """Someone who can write to the output folder must not make batchinfer write (or truncate) another file,
    nor hang it on a FIFO: a file batchinfer appends to is refused when something else stands at its name."""
    spec, out = folder
    target = tmp_path / "users-own-file"
    replace(out / name, target)
    before = target.read_bytes() if target.exists() else None
    journal = journal_of(out).read_bytes() if name != ".batchinfer/journal.jsonl" else None
    run = resume(batchinfer, spec, out)
    assert_one_line_error(run, str(out / name))
    assert (target.read_bytes() if target.exists() else None) == before
    if journal is not None:
        assert journal_of(out).read_bytes() == journal, "the journal was cut before the output was refused"


@pytest.mark.parametrize("name", ["summary.json.tmp", ".batchinfer/job.json.tmp", "logs/failed_items.txt",
                                  "logs/failed_items.txt.tmp", "logs/readme.txt", "logs/readme.txt.tmp"])
def test_a_link_planted_at_a_temporary_name_is_replaced_not_written_through(folder, batchinfer, tmp_path, name):
    """A file batchinfer rewrites whole is written anew and moved into place: a link there is replaced."""
    spec, out = folder
    target = tmp_path / "users-own-file"
    target.write_text("mine\n")
    (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(target)
    run = resume(batchinfer, spec, out)
    assert run.code == 0, run.stderr
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("own", ["logs", ".batchinfer"])
@pytest.mark.parametrize("args", [(), ("--restart",)])
def test_batchinfers_own_folder_replaced_by_a_link_is_refused(folder, batchinfer, tmp_path, own, args):
    """A link at logs/ or .batchinfer/ would make batchinfer write, chmod and remove in its target."""
    spec, out = folder
    target = tmp_path / "users-own-folder"
    shutil.move(out / own, target)
    (out / own).symlink_to(target)
    before = {p.name: (p.read_bytes(), p.stat().st_mode) for p in target.iterdir() if p.is_file()}
    run = resume(batchinfer, spec, out, *args)
    assert_one_line_error(run, f"{own} is a symbolic link")
    assert {p.name: (p.read_bytes(), p.stat().st_mode) for p in target.iterdir() if p.is_file()} == before
