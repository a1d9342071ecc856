"""Run a bound pipeline (:mod:`batchinfer.pipeline`) on this machine, step after step.

- A parallel step becomes a native job spec just before it runs (an upstream
  command step may write the MLTable it reads) and runs with batchinfer's engine
  in its run folder, its rows and ``output_dir()`` in its output port.
- A command step runs its ``command`` with ``bash -c`` (see :mod:`batchinfer.command_step`).
- A step that finished before is reused (a parallel step by its job fingerprint, a
  command step by a fingerprint of its command, code and input files); the first
  step that fails stops the pipeline, and its exit code is the pipeline's.
- ``<output>/pipeline.json`` holds the state of every step, for ``batchinfer status``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from batchinfer import azure, ports
from batchinfer.bindings import append_port, input_path, substitute
from batchinfer.command_step import check_code_dir, command_line, note, run_command
from batchinfer.errors import BatchInferError, ExitCode, OutputError, SpecError
from batchinfer.layout import STATE_DIR, SUMMARY_FILE
from batchinfer.pipeline import PIPELINE_FILE, Pipeline, Step, cloud_notes
from batchinfer.redact import for_log
from batchinfer.spec import JobSpec, default_name, is_url, spec_from_data
from batchinfer.statefiles import ReadBack, read_json, read_summary, shown, why_invalid, write_atomic



@dataclass
class PipelineOptions:
    """How ``batchinfer run`` was asked to run a pipeline (beyond the YAML)."""

    overrides: list[str] = field(default_factory=list)  # --set [STEP.]KEY=VALUE for parallel steps
    restart: bool = False
    retry_failed: bool = False  # parallel steps that finished: run only their failed items again
    quiet: bool = False  # nothing on stderr (the Python API's default): notes, progress, failures (raised errors stay raised)
    progress_interval: float = 30.0
    failures_when_quiet: bool = False  # the CLI's --quiet: a step that fails is still said on stderr


@dataclass
class PipelineResult:
    """The pipeline's exit code and each step's state (as ``pipeline.json`` holds them)."""

    exit_code: ExitCode
    doc: dict[str, Any]


def overrides_for(pipeline: Pipeline, step: str, overrides: list[str]) -> list[str]:
    """``--set KEY=VALUE`` applies to every parallel step, ``--set STEP.KEY=VALUE`` to that step alone."""
    chosen = []
    for item in overrides:
        first, dot, rest = item.partition(".")
        if dot and first in pipeline.steps:
            if first == step:
                chosen.append(rest)
        else:
            chosen.append(item)
    return chosen


def _check_ready(pipeline: Pipeline, step: Step) -> None:
    """Every input this step reads from another step must be there (after an earlier run, or bound)."""
    for name, binding in step.inputs.items():
        if binding.source and not os.path.exists(input_path(pipeline, binding)):
            upstream = binding.source[0]
            hint = (f"run that step first (without --step), or bind it with --input {step.key}.{name}=PATH"
                    if upstream in pipeline.skipped else
                    f"that step finished without writing it: see {pipeline.steps[upstream].folder / 'logs'}")
            raise SpecError(
                f"jobs.{step.key}.inputs.{name}: step {upstream!r} has not made {input_path(pipeline, binding)}",
                hint=hint,
            )
        if binding.is_path and not binding.source and not is_url(binding.value) and not os.path.exists(binding.value):
            raise SpecError(f"jobs.{step.key}.inputs.{name}: {shown(binding.value)} does not exist",
                            hint=f"bind it with --input {step.key}.{name}=PATH")


def parallel_native(pipeline: Pipeline, step: Step) -> tuple[dict[str, Any], Path | None]:
    """The native spec keys of a parallel step (its inputs bound to local paths) and its output port folder."""
    node = {k: v for k, v in step.node.items() if k in azure.KNOWN_KEYS and k != "name"}
    task = dict(step.node.get("task") or {})
    where = f"jobs.{step.key}.task.program_arguments"
    if task.get("program_arguments") is not None:
        task["program_arguments"] = substitute(pipeline, step, str(task["program_arguments"]), where)
    if step.code_dir is not None:
        task["code"] = str(step.code_dir)
    node["task"] = task
    node["inputs"] = {
        name: ({"type": b.type or "uri_folder", "path": input_path(pipeline, b)} if b.is_path else b.value)
        for name, b in step.inputs.items()
    }
    node["outputs"] = {name: {"type": port.type} for name, port in step.outputs.items()}
    native = azure.to_native(node, step.base_dir, step.key if not pipeline.standalone else pipeline.name)
    if pipeline.standalone:
        native["name"] = pipeline.name
    append = append_port(step)
    if append and step.outputs[append].file_name:
        native["append_row_file_name"] = step.outputs[append].file_name
    data_port = append or next(iter(step.outputs), None)
    return native, step.outputs[data_port].folder if data_port else None


def parallel_spec(pipeline: Pipeline, step: Step, overrides: list[str]) -> tuple[JobSpec, Path | None]:
    """The validated job spec of a parallel step (see :func:`parallel_native`) and its output port folder."""
    try:
        native, data_dir = parallel_native(pipeline, step)
    except SpecError as exc:
        raise SpecError(f"{pipeline.path}: {exc.message}", hint=exc.hint) from None
    label = Path(f"{pipeline.path}: jobs.{step.key}") if not pipeline.standalone else pipeline.path
    spec = spec_from_data(native, step.base_dir, default_name(label), str(label),
                          overrides_for(pipeline, step.key, overrides))
    return spec, data_dir


def waiting_on(pipeline: Pipeline, step: Step) -> str | None:
    """Why a step cannot be planned yet: an input an upstream step has not made (None: all are there)."""
    for name, binding in step.inputs.items():
        if binding.source and not os.path.exists(input_path(pipeline, binding)):
            return f"waits on step {binding.source[0]} (its input {name} is made when the pipeline runs)"
    return None


def check_pipeline(pipeline: Pipeline, overrides: list[str]) -> list[tuple[Step, JobSpec | None, str]]:
    """``validate`` and ``plan``: each step to run, its job spec when it can be checked now, and what was found."""
    from batchinfer.entry import check_entry_script
    from batchinfer.inputs import InputPlan
    from batchinfer.job import RunOptions, excluded_folders

    pipeline.overrides = list(overrides)
    found = []
    for key, step in pipeline.steps.items():
        if key in pipeline.skipped:
            found.append((step, None, f"skipped: {pipeline.skipped[key]}"))
            continue
        preflight(pipeline, step)
        if step.type == "command":
            check_code_dir(pipeline, step)
            found.append((step, None, "command step, runs with bash -c"))
            continue
        if why := waiting_on(pipeline, step):
            found.append((step, None, why))
            continue
        _check_ready(pipeline, step)
        spec, data_dir = parallel_spec(pipeline, step, overrides)
        entry = check_entry_script(spec)
        options = RunOptions(output=str(step.folder), data_dir=data_dir)
        InputPlan(spec, exclude=excluded_folders(spec, options)).check()
        found.append((step, spec, f"parallel job {spec.name}, {spec.input_type} inputs, {spec.worker_count} workers, "
                                  f"entry script {entry.path}"))
    return found


def convert_pipeline(pipeline: Pipeline) -> str:
    """``batchinfer convert`` of a pipeline: the native spec of each parallel step, as multi-document YAML."""
    import yaml

    documents = []
    for key, step in pipeline.steps.items():
        if step.type != "parallel":
            continue
        head = f"# step {key} of {pipeline.path}: rows and output_dir() in its output port"
        try:
            native, data_dir = parallel_native(pipeline, step)
        except SpecError as exc:
            if not waiting_on(pipeline, step):
                raise SpecError(f"{pipeline.path}: {exc.message}", hint=exc.hint) from None
            documents.append(f"{head}\n# {waiting_on(pipeline, step)}; it cannot be converted before then\n")
            continue
        where = f" {data_dir}" if data_dir else ""
        documents.append(f"{head}{where}\n" + yaml.safe_dump(native, sort_keys=False))
    if not documents:
        raise SpecError(f"{pipeline.path}: the pipeline has no parallel step to convert",
                        hint="command steps run as they are: batchinfer run runs the whole pipeline")
    return "---\n".join(documents)


def _state(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "pipeline": pipeline.name,
        "file": str(pipeline.path.absolute()),
        "status": "running",
        "exit_code": None,
        "steps": {
            key: {"type": step.type, "status": "skipped" if key in pipeline.skipped else "waiting",
                  "folder": str(step.folder), "reason": pipeline.skipped.get(key),
                  "outputs": {p.name: str(p.folder) for p in step.outputs.values()}}
            for key, step in pipeline.steps.items()
        },
    }


def _save(pipeline: Pipeline, doc: dict[str, Any]) -> None:
    if not pipeline.standalone:
        write_atomic(pipeline.root / PIPELINE_FILE, (json.dumps(doc, indent=2) + "\n").encode())


def _check_root(root: Path) -> None:
    """The pipeline's output folder: new, empty, or one a pipeline wrote (it holds pipeline.json)."""
    if os.path.lexists(root) and not root.is_dir():
        raise OutputError(f"output {shown(root)} is a file, not a folder", hint="give --output a folder path")
    if root.is_dir() and not (root / PIPELINE_FILE).is_file():
        with os.scandir(root) as entries:
            other = next((e.name for e in entries if e.name != STATE_DIR), None)
        if other is not None:
            raise OutputError(
                f"output {shown(root)} is not empty (it holds {shown(other)}) and is not a pipeline's output folder",
                hint="choose a new or empty folder with --output",
            )


def run_pipeline(pipeline: Pipeline, options: PipelineOptions) -> PipelineResult:
    """Run every step that is not skipped, in order; stop at the first that fails (see the module doc)."""
    from batchinfer.lock import OutputLock

    pipeline.overrides = list(options.overrides)
    for text in cloud_notes(pipeline):
        note(options.quiet, text)
    for key, why in pipeline.skipped.items():
        if why.startswith("every output"):
            note(options.quiet, f"step {key} skipped: {why}")
    for key, step in pipeline.steps.items():  # every binding is checked before the first step runs
        if key not in pipeline.skipped:
            preflight(pipeline, step)
    lock = None
    if not pipeline.standalone:
        _check_root(pipeline.root)
        lock = OutputLock.acquire(pipeline.root)
    try:
        doc = _state(pipeline)
        _save(pipeline, doc)
        code = ExitCode.OK
        ran: set[str] = set()  # steps that ran in this run (not reused): what reads their outputs starts over
        for key, step in pipeline.steps.items():
            if key in pipeline.skipped:
                continue
            doc["steps"][key]["status"] = "running"
            _save(pipeline, doc)
            started = time.monotonic()
            try:
                code, reused = _run_step(pipeline, step, options, fresh=bool(ran & set(step.upstream)))
            except BatchInferError as exc:
                if not pipeline.standalone and not exc.message.startswith(f"step {key}"):
                    exc.message = f"step {key}: {exc.message}"  # which step it is, whatever part raised it
                doc["steps"][key].update(status="failed", exit_code=int(exc.exit_code), error=exc.message)
                doc.update(status="failed", exit_code=int(exc.exit_code))
                _save(pipeline, doc)
                raise
            except BaseException as exc:  # a bug, KeyboardInterrupt, ...: pipeline.json must not say "running"
                why = for_log(f"{type(exc).__name__}: {exc}")[:500]
                stopped = isinstance(exc, KeyboardInterrupt)
                code = ExitCode.INTERRUPTED if stopped else ExitCode.JOB_FAILED
                status = "interrupted" if stopped else "failed"
                doc["steps"][key].update(status=status, exit_code=int(code), error=why)
                doc.update(status=status, exit_code=int(code))
                _save(pipeline, doc)
                raise
            if not reused:
                ran.add(key)
            status = "reused" if reused else "succeeded" if code == ExitCode.OK else \
                "interrupted" if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED) else "failed"
            doc["steps"][key].update(status=status, exit_code=int(code), elapsed_s=round(time.monotonic() - started, 3))
            _save(pipeline, doc)
            if code != ExitCode.OK:
                if status == "interrupted" and step.type == "command":
                    note(_silent(options), f"step {key} was interrupted: run the pipeline again to continue")
                break
        doc.update(status="succeeded" if code == ExitCode.OK else doc["steps"][key]["status"], exit_code=int(code),
                   finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        _save(pipeline, doc)
        return PipelineResult(code, doc)
    finally:
        if lock is not None:
            lock.release()


def preflight(pipeline: Pipeline, step: Step) -> None:
    """The step's command or program arguments bind: every ``${{inputs.X}}`` and ``${{outputs.X}}`` names one."""
    if step.type == "command":
        command_line(pipeline, step)
        return
    arguments = (step.node.get("task") or {}).get("program_arguments")
    if arguments is not None:
        try:
            substitute(pipeline, step, str(arguments), f"jobs.{step.key}.task.program_arguments")
        except SpecError as exc:
            raise SpecError(f"{pipeline.path}: {exc.message}", hint=exc.hint) from None


def _silent(options: PipelineOptions) -> bool:
    """Nothing on stderr, not even that a step failed."""
    return options.quiet and not options.failures_when_quiet


def _finished(step: Step) -> bool:
    """The step's run folder holds a finished job: ``--retry-failed`` applies to it (the others run or resume)."""
    from batchinfer.resume import FINISHED

    summary = read_summary(step.folder / SUMMARY_FILE)
    return summary is not None and summary["status"] in FINISHED


def _run_step(pipeline: Pipeline, step: Step, options: PipelineOptions, fresh: bool) -> tuple[ExitCode, bool]:
    """Run one step (``fresh``: an upstream step ran again, so a parallel step starts over instead of resuming)."""
    _check_ready(pipeline, step)
    if step.type == "command":
        check_code_dir(pipeline, step)
        return run_command(pipeline, step, options.restart, options.quiet)
    from batchinfer.job import RunOptions, run_job
    from batchinfer.progress import Reporter

    spec, data_dir = parallel_spec(pipeline, step, options.overrides)
    step.row_file = spec.append_row_file_name  # what the steps that read its rows find
    if not pipeline.standalone:
        note(options.quiet, f"step {step.key}: parallel job {spec.name} in {step.folder}")
    reporter = Reporter("quiet" if options.quiet else "auto", interval=options.progress_interval)
    row_file = spec.append_row_file_name if spec.output_action == "append_row" else None
    restart = options.restart or fresh
    run_options = RunOptions(output=str(step.folder), restart=restart,
                             retry_failed=options.retry_failed and not restart and _finished(step), data_dir=data_dir,
                             port_dirs=tuple(p.folder for p in step.outputs.values()),
                             fresh_ports=ports.for_step(step, row_file, data_dir))
    try:
        result = run_job(spec, reporter, run_options)
    except OutputError as exc:  # "use --restart": in a pipeline, for this step alone
        if not pipeline.standalone and exc.hint and "use --restart" in exc.hint:
            exc.hint = exc.hint.replace("use --restart", f"run again with --step {step.key} --restart (that step alone)")
        raise
    if not _silent(options):
        reporter.final(result.summary, reused=result.reused)  # in quiet mode: only when the step failed
    if result.exit_code != ExitCode.OK and not pipeline.standalone:
        note(_silent(options), f"step {step.key} failed (exit {int(result.exit_code)}): the pipeline stops here")
    return result.exit_code, result.reused


# ---------------------------------------------------------------- batchinfer status


class _StepDoc(ReadBack):
    type: str = Field(max_length=50)
    status: str = Field(max_length=50)
    folder: str = Field(max_length=4096)
    exit_code: Optional[int] = None
    reason: Optional[str] = Field(None, max_length=1000)


class _PipelineDoc(ReadBack):
    pipeline: str = Field(max_length=200)
    status: str = Field(max_length=50)
    exit_code: Optional[int] = None
    steps: dict[str, _StepDoc] = Field(max_length=10_000)


def is_pipeline_output(folder: Path) -> bool:
    """True for the output folder of a pipeline (it holds ``pipeline.json``)."""
    return (folder / PIPELINE_FILE).is_file()


def pipeline_status(folder: Path) -> dict[str, Any]:
    """What ``batchinfer status`` shows of a pipeline: its state, and each step's (a parallel step's as a job's)."""
    from batchinfer.lock import lock_state
    from batchinfer.progress import read_status

    try:
        doc = _PipelineDoc.model_validate(read_json(folder / PIPELINE_FILE))
    except (OSError, ValueError) as exc:
        raise OutputError(f"{shown(folder / PIPELINE_FILE)} cannot be read ({shown(why_invalid(exc))})",
                          hint="run the pipeline again to rewrite it") from None
    running = lock_state(folder / STATE_DIR)[0]
    state = "running" if running else "stopped" if doc.status == "running" else doc.status
    steps: dict[str, Any] = {}
    for key, step in doc.steps.items():
        if step.type == "parallel" and step.status not in ("waiting", "skipped") and Path(step.folder).is_dir():
            try:
                steps[key] = {"type": "parallel", **read_status(Path(step.folder))}
                continue
            except OutputError:
                pass
        steps[key] = {"type": step.type, "state": step.status if running or step.status != "running" else "stopped",
                      "exit_code": step.exit_code, "reason": step.reason}
    return {"pipeline": doc.pipeline, "state": state, "exit_code": doc.exit_code, "steps": steps}


def pipeline_status_lines(doc: dict[str, Any]) -> list[str]:
    """One line for the pipeline, then one line per step."""
    from batchinfer.progress import status_line

    finished = doc.get("exit_code") is not None and doc["state"] != "running"
    lines = [f"pipeline {doc['pipeline']}: {doc['state']}" + (f" (exit {doc['exit_code']})" if finished else "")]
    for key, step in doc["steps"].items():
        if step["type"] == "parallel" and "job" in step:
            lines.append(f"  {key}: {status_line(step)}")
        else:
            extra = f" (exit {step['exit_code']})" if step.get("exit_code") is not None else ""
            why = f": {step['reason']}" if step.get("reason") else ""
            lines.append(f"  {key}: {step['type']} step {step['state']}{extra}{why}")
    return lines
