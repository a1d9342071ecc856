"""Every user mistake ends in one line on stderr and exit code 2, before any worker starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import SCRIPTS, assert_one_line_error


@pytest.fixture
def spec(tmp_path, text_files):
    """Write a spec (text) next to a data folder of 3 files; returns its path."""
    text_files(3)

    def write(text: str):
        path = tmp_path / "job.yaml"
        path.write_text(text)
        return path

    return write


GOOD = f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs:\n  path: data\n"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (GOOD + "mini_batch_sise: 3\n", ["unknown key 'mini_batch_sise'", "did you mean 'mini_batch_size'"]),
        (GOOD + "error_threshold: many\n", ["error_threshold", "integer"]),
        ("entry_script: [unclosed\n", ["line 2", "fix the YAML syntax"]),
        (GOOD.replace("echo_names.py", "missing.py"), ["entry_script 'missing.py' not found"]),
        (GOOD.replace("echo_names.py", "syntax_error.py"), ["does not compile: line 1"]),
        (GOOD.replace("echo_names.py", "no_run.py"), ["does not define run()"]),
        (GOOD.replace("path: data", "path: data/*.png"), ["no input files match"]),
        (GOOD.replace("path: data", "path: nowhere"), ["input", "nowhere does not exist"]),
        (GOOD.replace(str(SCRIPTS), "/no/such/folder"), ["source_directory /no/such/folder does not exist"]),
        (GOOD + "models: {clf: nosuch.bin}\n", ["models.clf:", "nosuch.bin does not exist"]),
    ],
)
def test_bad_job_is_one_line_and_exit_2(batchinfer, spec, tmp_path, text, fragments):
    run = batchinfer("run", str(spec(text)), "--output", str(tmp_path / "out"))
    assert_one_line_error(run, *fragments)
    assert not (tmp_path / "out").exists()  # nothing was started


def test_missing_spec_file(batchinfer, tmp_path):
    assert_one_line_error(batchinfer("run", str(tmp_path / "nope.yaml")), "nope.yaml: no such file")


def test_output_is_a_file(batchinfer, spec, tmp_path):
    (tmp_path / "taken").write_text("x")
    run = batchinfer("run", str(spec(GOOD)), "--output", str(tmp_path / "taken"))
    assert_one_line_error(run, "is a file, not a folder")


def test_bad_set_override(batchinfer, spec, tmp_path):
    run = batchinfer("run", str(spec(GOOD)), "--set", "mini_batch_size=0")
    assert_one_line_error(run, "mini_batch_size")


def test_output_folder_holding_another_job(batchinfer, spec, tmp_path):
    path = spec(GOOD)
    out = tmp_path / "out"
    assert batchinfer("run", str(path), "--output", str(out)).code == 0
    changed = batchinfer("run", str(path), "--output", str(out), "--set", "mini_batch_size=1")
    assert_one_line_error(changed, "holds a different job", "--restart")
    restarted = batchinfer("run", str(path), "--output", str(out), "--set", "mini_batch_size=1", "--restart")
    assert restarted.code == 0, restarted.stderr
    assert len((out / "parallel_run_step.txt").read_text().splitlines()) == 3


def test_unknown_option_is_a_usage_error(batchinfer, spec):
    run = batchinfer("run", str(spec(GOOD)), "--no-such-option")
    assert run.code == 2
    assert "No such option" in run.stderr and "Traceback" not in run.stderr


def test_version_and_help(batchinfer):
    version = batchinfer("--version")
    assert version.code == 0 and version.stdout.startswith("batchinfer ")
    helped = batchinfer("run", "--help")
    assert helped.code == 0 and "--set" in helped.stdout and "Examples" in helped.stdout


def test_help_path_imports_nothing_heavy():
    """--help must answer at once: the CLI module may not import pandas, pyarrow, fsspec or TensorFlow."""
    code = (
        "import sys, batchinfer.cli; "
        "heavy = [m for m in ('pandas', 'pyarrow', 'fsspec', 'tensorflow', 'numpy') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_never_imports_tensorflow():
    code = (
        "import sys, importlib, pkgutil, batchinfer; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(batchinfer.__path__, 'batchinfer.') "
        " if '_compat' not in m.name and m.name != 'batchinfer.__main__']; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    "name",
    ["summary.json", "summary.json.tmp", "Summary.JSON", "report.html", "logs", ".batchinfer", "LOGS",
     "parallel_run_step.txt.tmp", "rows.TMP", "a/b.txt", "../up.txt", "/abs.txt", "a\\b.txt", ".", "..", "",
     "a\nb.txt", "tab\there", "nul\0.txt", "x" * 252, "é" * 126],
)
def test_append_row_file_name_is_a_plain_name_of_the_users(batchinfer, spec, tmp_path, name):
    """It may name no folder and none of batchinfer's own files: summary.json used to swallow the rows."""
    path = spec(GOOD + f"append_row_file_name: {yaml.safe_dump(name, default_style=chr(34)).strip()}\n")
    run = batchinfer("run", str(path), "--output", str(tmp_path / "out"))
    assert_one_line_error(run, "append_row_file_name")
    assert not (tmp_path / "out").exists()


def bomb(levels: int = 9, style: str = "yaml") -> str:
    """The 'billion laughs': each level lists the previous one nine times (9**levels strings)."""
    entries = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    entries += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    if style == "flow list":
        return "[" + ", ".join(entries) + "]"
    if style == "flow mapping":
        return "{" + ", ".join(f"k{i}: {e}" for i, e in enumerate(entries)) + "}"
    return "".join(f"  k{i}: {e}\n" for i, e in enumerate(entries))


def merge_bomb(levels: int = 20) -> str:
    lines = ["  m0: &m0 {a: 1, b: 2}\n"]
    lines += [f"  m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], c{i}: 1}}\n" for i in range(1, levels)]
    return "".join(lines)


ONE_INPUT = f"entry_script: echo_names.py\nsource_directory: {SCRIPTS}\ninputs: {{path: data}}\n"
PWNED = "touch pwned"


@pytest.mark.parametrize(
    ("content", "args", "fragments"),
    [
        (ONE_INPUT + "environment_variables:\n" + bomb(), [], ["line", "more than 100000 values", "aliases"]),
        (ONE_INPUT + "storage:\n" + merge_bomb(), [], ["more than 100000 values"]),
        (ONE_INPUT, ["--set", f"arguments={bomb(style='flow list')}"], ["--set 'arguments'", "100000 values"]),
        (ONE_INPUT, ["--set", f"environment_variables={bomb(style='flow mapping')}"], ["100000 values"]),
        (ONE_INPUT + "arguments: " + "[" * 10_000 + "]" * 10_000 + "\n", [], ["nested deeper than 64 levels"]),
        (ONE_INPUT + "side_inputs: " + "{a: " * 10_000 + "b" + "}" * 10_000 + "\n", [], ["nested deeper than 64"]),
        (ONE_INPUT, ["--set", "arguments=" + "[" * 10_000 + "]" * 10_000], ["--set 'arguments'", "deeper than 64"]),
        (ONE_INPUT, ["--set", "inputs" + ".a" * 10_000 + "=1"], ["more than 64 parts"]),
        (ONE_INPUT + "s0: &s0 [x]\n" + "".join(f"s{i}: &s{i} [*s{i - 1}]\n" for i in range(1, 500)), [],
         ["nests deeper than 64 levels once its aliases"]),
        (ONE_INPUT + "arguments: &self [a, *self]\n", [], ["refers to a collection that contains it"]),
        (ONE_INPUT, ["--set", "arguments=&self [a, *self]"], ["refers to a collection that contains it"]),
        (ONE_INPUT + "arguments:\n" + "  - an argument\n" * 200_000, [], ["larger than 2 MB"]),
        (ONE_INPUT + f"name: !!python/object/apply:os.system [{PWNED}]\n", [], ["line 4", "tags such as"]),
        (ONE_INPUT + f"models: !!python/object/new:os.system [{PWNED}]\n", [], ["tags such as"]),
        (ONE_INPUT, ["--set", f"name=!!python/object/apply:os.system [{PWNED}]"], ["name", "not a valid job name"]),
        (ONE_INPUT + "error_threshold: " + "9" * 5000 + "\n", [], ["line 4", "5000 characters", "at most 100 digits"]),
        (ONE_INPUT + "storage: 0x" + "f" * 5000 + "\n", [], ["line 4", "a number of 5002 characters"]),
        (ONE_INPUT + "name: 2024-13-45\n", [], ["line 4", "cannot read '2024-13-45'"]),
        (ONE_INPUT.encode() + b"name: caf\xe9\n", [], ["is not UTF-8 text (byte 0xe9 at line 4)", "save it as UTF-8"]),
        (ONE_INPUT.encode("utf-16"), [], ["is not UTF-8 text (byte 0xff at line 1)"]),
        (ONE_INPUT + "name: a\0b\n", [], ["line 4: a NUL byte is not allowed"]),
        (ONE_INPUT + "name: a\x07b\n", [], ["line 4: the character U+0007 is not allowed"]),
    ],
    ids=["alias bomb", "merge-key bomb", "alias bomb in --set list", "alias bomb in --set mapping",
         "10000 [", "10000 {", "10000 [ in --set", "10000 dotted parts in --set", "alias chain 500 deep",
         "alias to itself", "alias to itself in --set", "5 MB", "python/object/apply tag", "python/object/new tag",
         "tag in --set", "5000-digit number", "5000-digit hex number", "invalid date", "latin-1", "utf-16", "NUL byte",
         "control character"],
)
def test_hostile_yaml_is_refused_at_once(batchinfer, tmp_path, text_files, content, args, fragments):
    """Refused in one line long before the 20 s timeout (the alias bomb took 250 s); nothing executed."""
    text_files(3)
    path = tmp_path / "job.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    run = batchinfer("validate", str(path), *args, timeout=20)
    assert_one_line_error(run, *fragments)
    assert not (tmp_path / "pwned").exists()


def test_a_byte_order_mark_is_not_part_of_the_spec(batchinfer, tmp_path, text_files):
    text_files(3)
    path = tmp_path / "job.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + ONE_INPUT.encode())
    run = batchinfer("validate", str(path))
    assert run.code == 0 and "is valid" in run.stderr, run.stderr


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _loop(path: Path) -> Path:
    os.symlink(path.name + ".other", path)
    os.symlink(path.name, path.with_name(path.name + ".other"))
    return path


def _big(path: Path) -> Path:
    with open(path, "wb") as handle:  # sparse: 100 MB of size, no disk
        handle.truncate(100 * 1024**2)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _unreadable(path: Path) -> Path:
    """A file its reader may not read (the commands run with obey_permissions: root too)."""
    shutil.copy(SCRIPTS / "echo_names.py", path)
    path.chmod(0)
    return path


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (_folder, ["is a folder, not a job spec"]),
        (lambda p: Path("/dev/zero"), ["/dev/zero is a character device, not a job spec"]),
        (_fifo, ["is a named pipe (FIFO), not a job spec"]),
        (_loop, ["cannot read the file: Too many levels of symbolic links"]),
        (_big, ["is larger than 2 MB"]),
        (lambda p: p, ["no such file"]),
        (_unreadable, ["cannot read the file: Permission denied"]),
    ],
    ids=["folder", "/dev/zero", "FIFO", "symlink loop", "100 MB", "missing", "unreadable"],
)
def test_a_job_spec_path_that_is_not_a_spec_file(batchinfer, tmp_path, make, fragments):
    """Said for what it is, never read forever (/dev/zero) or blocked on (a FIFO)."""
    path = make(tmp_path / "job.yaml")
    for command in ("validate", "plan", "run"):
        assert_one_line_error(batchinfer(command, str(path), timeout=20, obey_permissions=True), *fragments)


def _script(data: bytes):
    def write(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return write


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (_folder, ["entry_script", "is a folder, not a Python file"]),
        (lambda p: Path("/dev/zero"), ["entry_script", "/dev/zero is a character device, not a Python file"]),
        (_fifo, ["entry_script", "is a named pipe (FIFO), not a Python file"]),
        (_loop, ["entry_script", "cannot be read: Too many levels of symbolic links"]),
        (_big, ["entry_script", "larger than 64 MB"]),
        (_unreadable, ["entry_script", "cannot be read: Permission denied"]),
        (_script(b"def run(mini_batch):\n    return mini_batch\nx = '\0'\n"),
         ["does not compile: line 3: a NUL byte in the source"]),
        (_script(b"def run(mini_batch):\n    return ['caf\xe9']\n"), ["is not UTF-8 text (byte 0xe9 at line 2)"]),
        (_script(b"# -*- coding: klingon -*-\ndef run(b):\n    return b\n"), ["declares an unknown encoding: klingon"]),
        (_script(b"x = " + b"-" * 200_000 + b"1\ndef run(b):\n    return b\n"),
         ["does not compile: it is nested too deeply"]),
        (_script(b"x = " + b"(" * 300 + b")" * 300 + b"\n"), ["does not compile: line 1: too many nested parentheses"]),
        (_script(b"\xef\xbb\xbfdef run(b):\n    return b\n"), []),  # a BOM is valid Python: validate passes
    ],
    ids=["folder", "/dev/zero", "FIFO", "symlink loop", "100 MB", "unreadable", "NUL byte", "latin-1",
         "unknown encoding", "200000 unary minus", "300 parentheses", "BOM"],
)
def test_an_entry_script_that_is_not_a_python_file(batchinfer, tmp_path, text_files, make, fragments):
    """Said for what it is ('does not exist' was said of a folder), never 'line None', never read forever."""
    text_files(3)
    script = make(tmp_path / "score.py")
    path = tmp_path / "job.yaml"
    path.write_text(f"entry_script: {script}\nsource_directory: {tmp_path}\ninputs: {{path: data}}\n")
    run = batchinfer("validate", str(path), timeout=20, obey_permissions=True)
    if not fragments:
        assert run.code == 0, run.stderr
        return
    assert_one_line_error(run, *fragments)
    assert "None" not in run.stderr


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_script(b"x = 1\n"), "is a file, not a folder"),
        (_fifo, "is a named pipe (FIFO), not a folder"),
        (lambda p: Path("/dev/null"), "/dev/null is a character device, not a folder"),
        (lambda p: p, "does not exist"),
    ],
    ids=["file", "FIFO", "/dev/null", "missing"],
)
def test_a_source_directory_that_is_not_a_folder(batchinfer, tmp_path, text_files, make, fragment):
    text_files(3)
    folder = make(tmp_path / "src")
    path = tmp_path / "job.yaml"
    path.write_text(f"entry_script: echo_names.py\nsource_directory: {folder}\ninputs: {{path: data}}\n")
    assert_one_line_error(batchinfer("validate", str(path), timeout=20), "source_directory", fragment)


@pytest.mark.parametrize("name", ["job\n.yaml", "job\r\nx.yaml", "job\x1b[31m.yaml", "job\t.yaml"])
def test_an_error_quoting_a_name_with_control_characters_is_still_one_line(batchinfer, tmp_path, name):
    """A newline in a file name would split the one line; an escape sequence would drive the terminal."""
    assert_one_line_error(batchinfer("validate", str(tmp_path / name)), "no such file")
    (tmp_path / name).mkdir()
    assert_one_line_error(batchinfer("validate", str(tmp_path / name)), "is a folder")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run"], "Missing argument 'JOB'"),
        (["run", "job.yaml", "--bogus"], "No such option: --bogus"),
        (["run", "job.yaml", "--processes", "0"], "--processes"),
        (["run", "job.yaml", "--progress-interval", "abc"], "--progress-interval"),
        (["plan", "job.yaml", "--first", "-1"], "--first"),
        (["status"], "Missing argument"),
        (["nosuch"], "No such command 'nosuch'"),
        (["run", "job.yaml", "--set"], "--set"),
    ],
    ids=["no job", "unknown option", "processes 0", "interval not a number", "first -1", "status no folder",
         "unknown command", "--set without value"],
)
def test_a_mistake_on_the_command_line_is_one_line_too(batchinfer, args, fragment):
    """typer's own usage errors (a usage block, a blank line, then the error) are one line like every other."""
    assert_one_line_error(batchinfer(*args, timeout=20), fragment, "--help")
