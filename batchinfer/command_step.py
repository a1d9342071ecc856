"""A pipeline's ``command`` step, run here: its command with ``bash -c`` in a snapshot of its code folder.

``${{inputs.*}}`` / ``${{outputs.*}}`` are replaced by local paths (see :mod:`batchinfer.bindings`);
``python`` is the interpreter running batchinfer; the output goes to ``<step>/logs/std_log.txt``
and to stderr (never stdout). A step whose command, environment variables, code and input files
are those of its last successful run is reused, as Azure reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field

from batchinfer import ports
from batchinfer._compat import command_step_environment
from batchinfer.bindings import input_path, substitute
from batchinfer.errors import ExitCode, JobFailedError, OutputError, SpecError
from batchinfer.layout import LOGS_DIR, STATE_DIR
from batchinfer.pipeline import Pipeline, Step
from batchinfer.redact import for_log
from batchinfer.spec import is_url
from batchinfer.statefiles import ReadBack, create_new, private_dir, read_json, shown, write_private_json

COMMAND_STATE = "command.json"  # <step>/.batchinfer/command.json: the fingerprint of the last finished run
STD_LOG = "std_log.txt"  # Azure's name for a command's output


class _CommandState(ReadBack):
    """``command.json`` read back (validated: a damaged one means 'run the command again')."""

    fingerprint: str = Field(max_length=64)
    exit_code: int


def command_line(pipeline: Pipeline, step: Step) -> str:
    """The step's ``command`` with its inputs and outputs bound to local paths."""
    raw = step.node.get("command")
    if not isinstance(raw, str) or not raw.strip():
        raise SpecError(f"{pipeline.path}: jobs.{step.key}: a command step needs a 'command'")
    try:
        return substitute(pipeline, step, raw, f"jobs.{step.key}.command")
    except SpecError as exc:
        raise SpecError(f"{pipeline.path}: {exc.message}", hint=exc.hint) from None


def note(quiet: bool, text: str) -> None:
    """A note on stderr, unless ``quiet`` (the Python API's default); a bound URL's token is masked."""
    if not quiet:
        sys.stderr.write(f"batchinfer: {for_log(text)}\n")


def check_code_dir(pipeline: Pipeline, step: Step) -> None:
    """The step's code folder exists (``code`` is relative to the YAML that names it)."""
    if step.code_dir is not None and not step.code_dir.is_dir():
        raise SpecError(f"{pipeline.path}: jobs.{step.key}: the code folder {shown(step.code_dir)} does not exist",
                        hint="'code' is relative to the YAML that names it")


def _environment(pipeline: Pipeline, step: Step) -> dict[str, str]:
    # Azure's helpers (Run.get_context() ...) importable by the step's scripts, recording into its logs
    env = command_step_environment(os.environ, str(step.folder / "logs"))
    extra = step.node.get("environment_variables") or {}  # a mapping of scalars: checked when the YAML was read
    env.update({str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in extra.items()})
    # 'python' in the command is the interpreter running batchinfer (Azure: the environment's python)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _tree_digest(digest: Any, path: str, contents: bool) -> None:
    """Hash a file or folder: names and contents (code), or names, sizes and times (data)."""
    if not os.path.exists(path):
        digest.update(f"{path}:missing\n".encode())
        return
    paths = [path] if not os.path.isdir(path) else sorted(
        os.path.join(root, name) for root, dirs, files in os.walk(path) for name in files
        if not any(part.startswith(".") or part == "__pycache__" for part in Path(root).relative_to(path).parts)
    )
    for file in paths:
        digest.update(os.fsencode(os.path.relpath(file, path)) + b"\0")
        try:
            if contents:
                digest.update(hashlib.sha256(Path(file).read_bytes()).digest())
            else:
                info = os.stat(file)
                digest.update(f"{info.st_size}:{info.st_mtime_ns}".encode())
        except OSError as exc:
            digest.update(f"unreadable {exc.errno}".encode())


def command_fingerprint(pipeline: Pipeline, step: Step, command: str) -> str:
    """What decides a command step's outputs: its command, environment variables, code and input files."""
    digest = hashlib.sha256()
    digest.update(command.encode() + b"\0")
    digest.update(json.dumps(step.node.get("environment_variables") or {}, sort_keys=True, default=str).encode())
    if step.code_dir is not None:
        _tree_digest(digest, str(step.code_dir), contents=True)
    for name, binding in sorted(step.inputs.items()):
        digest.update(name.encode() + b"\0")
        if binding.is_path and not is_url(where := input_path(pipeline, binding)):
            _tree_digest(digest, where, contents=False)
        elif binding.is_path:
            digest.update(where.encode())
        else:
            digest.update(binding.value.encode())
    return digest.hexdigest()[:16]


def _snapshot(pipeline: Pipeline, step: Step) -> Path:
    """A fresh copy of the step's code folder in ``<step>/code/`` (Azure runs a command in a snapshot)."""
    target = step.folder / "code"
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)  # batchinfer's own copy from the last run
    if step.code_dir is None:
        target.mkdir(parents=True)
        return target
    root = pipeline.root.resolve()

    def ignore(folder: str, names: list[str]) -> set[str]:  # never copy the run's own output into itself
        return {n for n in names if Path(folder, n).resolve() == root or n in ("__pycache__", ".git")}

    shutil.copytree(step.code_dir, target, symlinks=True, ignore=ignore)
    return target


def run_command(pipeline: Pipeline, step: Step, restart: bool, quiet: bool) -> tuple[ExitCode, bool]:
    """Run (or reuse) one command step: its exit code as batchinfer's, and whether it was reused."""
    command = command_line(pipeline, step)
    env = _environment(pipeline, step)
    state = step.folder / STATE_DIR / COMMAND_STATE
    print_ = command_fingerprint(pipeline, step, command)
    try:
        before: _CommandState | None = _CommandState.model_validate(read_json(state))
    except (OSError, ValueError):
        before = None
    if (not restart and before is not None and before.fingerprint == print_ and before.exit_code == 0
            and all(p.folder.exists() for p in step.outputs.values())):
        note(quiet, f"step {step.key}: reused (it ran with the same command, code and inputs before)")
        return ExitCode.OK, True
    for own in (LOGS_DIR, STATE_DIR):  # a link there would make batchinfer write in its target
        if (step.folder / own).is_symlink():
            raise OutputError(f"{shown(step.folder / own)} is a symbolic link; batchinfer's own folders must be "
                              "real folders",
                              hint="remove the link, or choose another --output")
    ports.for_step(step).start()  # a command step always starts afresh: empty outputs, as Azure gives it
    for port in step.outputs.values():
        port.folder.mkdir(parents=True, exist_ok=True)
    (step.folder / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    private_dir(step.folder / STATE_DIR)
    workdir = _snapshot(pipeline, step)  # its code folder was checked before the step started
    log_path = step.folder / LOGS_DIR / STD_LOG
    note(quiet, f"step {step.key}: {command.strip()}")
    started = time.monotonic()
    code = _execute(command, workdir, env, log_path, quiet)
    write_private_json(state, {"fingerprint": print_, "exit_code": code, "command": for_log(command),
                               "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "elapsed_s": round(time.monotonic() - started, 3)})
    if code in (-signal.SIGINT, 128 + signal.SIGINT):
        return ExitCode.INTERRUPTED, False
    if code in (-signal.SIGTERM, 128 + signal.SIGTERM):
        return ExitCode.TERMINATED, False
    if code < 0:
        name = signal.Signals(-code).name
        raise JobFailedError(f"step {step.key}: its command was killed by signal {-code} ({name})",
                             hint=f"see {log_path}")
    if code != 0:
        raise JobFailedError(f"step {step.key}: its command exited with code {code}", hint=f"see {log_path}")
    return ExitCode.OK, False


def _echo(chunk: bytes) -> None:
    """A command's output on stderr (stdout carries data only)."""
    buffer = getattr(sys.stderr, "buffer", None)
    if buffer is not None:
        sys.stderr.flush()
        buffer.write(chunk)
        buffer.flush()
    else:
        sys.stderr.write(chunk.decode("utf-8", "backslashreplace"))


def _execute(command: str, workdir: Path, env: dict[str, str], log_path: Path, quiet: bool) -> int:
    """Run ``command`` with bash; its output to ``log_path`` and (unless ``quiet``) to stderr, never stdout."""
    received: list[int] = []
    with os.fdopen(create_new(log_path, private=False), "wb") as log:
        # its own process group, so that a signal reaches the whole command (bash and what it started);
        # the guard kills that group if batchinfer dies, even by SIGKILL (see _command_guard.py)
        guard = [sys.executable, "-m", "batchinfer._command_guard", str(os.getpid()), command]
        proc = subprocess.Popen(guard, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

        def forward(signum: int, _frame: Any) -> None:  # Ctrl-C and SIGTERM stop the command, then the pipeline
            received.append(signum)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)

        # signal handlers can be set in the main thread only (batchinfer.run() may run in another one)
        in_main_thread = threading.current_thread() is threading.main_thread()
        handled = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
        handlers = {}
        try:
            handlers = {s: signal.signal(s, forward) for s in handled}
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(65536):
                log.write(chunk)
                log.flush()
                if not quiet:
                    _echo(chunk)
            code = proc.wait()
        except BaseException:  # whatever stops batchinfer here must not leave the command running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    if received and code != 0:
        return 128 + received[0]
    return code
