"""Find and check the entry script before any worker starts, without importing it.

The coordinator must never import the user's script (it would import the
model's framework, e.g. TensorFlow, in the wrong process), so the check is
static: the file exists, compiles, and defines ``run`` at module level.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from batchinfer.errors import EntryScriptError
from batchinfer.spec import JobSpec, is_url


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


def check_entry_script(spec: JobSpec) -> EntryScript:
    """Check the spec's entry script; raise :class:`EntryScriptError` with a fix-it hint."""
    if is_url(spec.source_directory):
        raise EntryScriptError(
            f"source_directory {spec.source_directory!r} must be a local folder",
            hint="copy the script's folder to this machine",
        )
    source_dir = Path(spec.source_directory)
    if not source_dir.is_dir():
        raise EntryScriptError(
            f"source_directory {source_dir} does not exist or is not a folder",
            hint="source_directory is relative to the job spec's folder",
        )
    path = (source_dir / spec.entry_script).resolve()
    if not path.is_file():
        raise EntryScriptError(
            f"entry_script {spec.entry_script!r} not found: {path} does not exist",
            hint="entry_script is relative to source_directory",
        )
    try:
        source = path.read_bytes()
        tree = ast.parse(source, filename=str(path))
        compile(tree, str(path), "exec")
    except SyntaxError as exc:
        raise EntryScriptError(
            f"entry script {path} does not compile: line {exc.lineno}: {exc.msg}",
            hint="fix the script; 'python -m py_compile' shows the same error",
        ) from None
    except (OSError, ValueError) as exc:
        raise EntryScriptError(f"entry script {path} cannot be read: {exc}") from None

    names = _defined_names(tree)
    if "run" not in names:
        raise EntryScriptError(
            f"entry script {path} does not define run()",
            hint="add 'def run(mini_batch):' returning one result per item",
        )
    run_args = _positional_count(names["run"])
    if run_args is not None and run_args not in (1, 2):
        raise EntryScriptError(
            f"entry script {path}: run() takes {run_args} arguments",
            hint="define run(mini_batch) or run(mini_batch, mini_batch_context)",
        )
    init_args = _positional_count(names.get("init")) if "init" in names else None
    if init_args:
        raise EntryScriptError(
            f"entry script {path}: init() must take no arguments (it takes {init_args})",
            hint="read script arguments from sys.argv with argparse in init()",
        )
    return EntryScript(
        path=str(path),
        source_directory=str(source_dir.resolve()),
        has_init="init" in names,
        has_shutdown="shutdown" in names,
        run_takes_context=run_args == 2,
    )
