"""Every user mistake ends in one line on stderr and exit code 2, before any worker starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
        (GOOD + "backend: ray\n", ["backend 'ray' is not available yet"]),
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
