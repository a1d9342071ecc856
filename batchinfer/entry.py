"""Find and check the entry script before any worker starts, without importing it.

The coordinator must never import the user's script (it would import the
model's framework, e.g. TensorFlow, in the wrong process), so the check is
static: the file exists, compiles, and defines ``run`` at module level.
"""

from __future__ import annotations

import ast
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from batchinfer.errors import EntryScriptError
from batchinfer.safeyaml import FileTooLargeError, NotRegularFileError, file_kind, read_capped
from batchinfer.spec import JobSpec, is_url

MAX_SCRIPT_BYTES = 64 * 1024**2  # a script with a model inlined is still far smaller


@dataclass(frozen=True)
class EntryScript:
    """What the workers need to load the script: its path, its folder, and what it defines."""

    path: str
    source_directory: str
    has_init: bool
    has_shutdown: bool
    run_takes_context: bool  # run(mini_batch, mini_batch_context)


def _defined_names(tree: ast.Module) -> dict[str, ast.AST]:
    """Top-level names bound by def, assignment or import (the last binding wins)."""
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
    return names


def _positional_count(node: ast.AST) -> int | None:
    """How many positional parameters a ``def`` takes (None when it takes *args or is not a def)."""
    if not isinstance(node, ast.FunctionDef):
        return None
    if node.args.vararg is not None:
        return None
    return len(node.args.posonlyargs) + len(node.args.args)


def _check_source_directory(folder: Path) -> None:
    """source_directory must be a folder that exists; say what it is when it is not."""
    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise EntryScriptError(f"source_directory {folder} cannot be used: {exc.strerror or exc}") from None
    if mode is None or not stat.S_ISDIR(mode):
        kind = "a file" if mode is not None and stat.S_ISREG(mode) else file_kind(mode or 0)
        what = "does not exist" if mode is None else f"is {kind}, not a folder"
        raise EntryScriptError(
            f"source_directory {folder} {what}",
            hint="source_directory is the folder of the entry script, relative to the job spec's folder",
        )


def _compile(path: Path, source: bytes) -> ast.Module:
    """Parse and compile the script as the worker will; a problem is one line that never says 'line None'."""
    fix = "fix the script; 'python -m py_compile' shows the same error"
    if b"\0" in source:  # Python refuses NUL bytes without saying where
        line = source[: source.index(b"\0")].count(b"\n") + 1
        raise EntryScriptError(f"entry_script {path} does not compile: line {line}: a NUL byte in the source",
                               hint="a Python script is text; is this the right file?")
    try:
        tree = ast.parse(source, filename=str(path))
        compile(tree, str(path), "exec")
    except SyntaxError as exc:
        if (exc.msg or "").startswith(("(unicode error)", "unknown encoding")):
            raise EntryScriptError(
                f"entry_script {path} {_encoding_problem(source, exc.msg)}",
                hint="save it as UTF-8, or declare its encoding in its first line: # -*- coding: latin-1 -*-",
            ) from None
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise EntryScriptError(f"entry_script {path} does not compile: {where}{exc.msg}", hint=fix) from None
    except (RecursionError, MemoryError):  # CPython's compiler gives up on expressions nested thousands deep
        raise EntryScriptError(f"entry_script {path} does not compile: it is nested too deeply", hint=fix) from None
    except ValueError as exc:
        raise EntryScriptError(f"entry_script {path} does not compile: {exc}", hint=fix) from None
    return tree


def _encoding_problem(source: bytes, message: str) -> str:
    """Say where a script that Python cannot decode stops being UTF-8 (Python's message gives no line)."""
    if message.startswith("unknown encoding"):
        return f"declares an {message}"
    try:
        source.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = source[: exc.start].count(b"\n") + 1
        return f"is not UTF-8 text (byte 0x{source[exc.start]:02x} at line {line})"
    return f"cannot be decoded: {message.removeprefix('(unicode error) ')}"


def check_entry_script(spec: JobSpec) -> EntryScript:
    """Check the spec's entry script; raise :class:`EntryScriptError` with a fix-it hint."""
    if is_url(spec.source_directory):
        raise EntryScriptError(
            f"source_directory {spec.source_directory!r} must be a local folder",
            hint="copy the script's folder to this machine",
        )
    source_dir = Path(spec.source_directory)
    _check_source_directory(source_dir)
    path = Path(os.path.realpath(source_dir / spec.entry_script))  # realpath: a symlink loop is not an error here
    try:
        source = read_capped(path, MAX_SCRIPT_BYTES, "a Python file")
    except FileNotFoundError:
        raise EntryScriptError(
            f"entry_script {spec.entry_script!r} not found: {path} does not exist",
            hint="entry_script is relative to source_directory",
        ) from None
    except (NotRegularFileError, FileTooLargeError) as exc:
        raise EntryScriptError(f"entry_script {spec.entry_script!r}: {path} {exc}",
                               hint="entry_script names the Python file that defines run()") from None
    except OSError as exc:
        raise EntryScriptError(f"entry_script {path} cannot be read: {exc.strerror or exc}") from None
    tree = _compile(path, source)

    names = _defined_names(tree)
    if "run" not in names:
        raise EntryScriptError(
            f"entry_script {path} does not define run()",
            hint="add 'def run(mini_batch):' returning one result per item",
        )
    run_args = _positional_count(names["run"])
    if run_args is not None and run_args not in (1, 2):
        raise EntryScriptError(
            f"entry_script {path}: run() takes {run_args} arguments",
            hint="define run(mini_batch) or run(mini_batch, mini_batch_context)",
        )
    init_args = _positional_count(names.get("init")) if "init" in names else None
    if init_args:
        raise EntryScriptError(
            f"entry_script {path}: init() must take no arguments (it takes {init_args})",
            hint="read script arguments from sys.argv with argparse in init()",
        )
    return EntryScript(
        path=str(path),
        source_directory=str(source_dir.resolve()),
        has_init="init" in names,
        has_shutdown="shutdown" in names,
        run_takes_context=run_args == 2,
    )
