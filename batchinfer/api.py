"""The public Python API: the one entry point that the command line, notebooks and Airflow tasks share.

    import batchinfer

    summary = batchinfer.run("job.yaml", output="out/", overrides={"mini_batch_size": 20})
    print(summary.status, summary.items_succeeded, summary.output_file)

``run()`` returns a :class:`RunSummary` when the job completed (exit code 0) and raises what the
command line turns into its exit codes otherwise: a :class:`~batchinfer.errors.SpecError` (or another
:class:`~batchinfer.errors.BatchInferError` of exit code 2) for a mistake, a
:class:`~batchinfer.errors.JobFailedError` (exit 1) or a :class:`~batchinfer.errors.JobInterruptedError`
(130, 143) carrying the summary. ``batchinfer run`` calls the same function.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from batchinfer.errors import ExitCode, JobFailedError, JobInterruptedError, UsageError

SpecLike = Union[str, "os.PathLike[str]", dict, Any]  # a path, the YAML's content as a dict, or a JobSpec


@dataclass(frozen=True)
class RunSummary:
    """What a run reports (``summary.json``), typed; ``raw`` is the whole document."""

    status: str  # succeeded, failed or interrupted
    exit_code: int
    output_dir: Path | str  # the run folder: summary.json, logs/, the rows (a temp folder with "-"; a store: its URL)
    output_file: str | None  # the rows (append_row), "-" for stdout, None for summary_only
    items_total: int
    items_succeeded: int
    items_failed: int
    items_not_returned: int  # of items_failed: run() returned fewer rows than items (see note)
    mini_batches_total: int
    mini_batches_succeeded: int
    mini_batches_failed: int
    tries: int
    elapsed_s: float
    reason: str | None  # why it failed or stopped
    first_error: str | None
    note: str | None  # plain words on short returns, e.g. "run() returned no rows: ..."
    reused: bool = False  # an identical finished job was found in the output folder (allow_reuse)
    kept_logs: Path | None = None  # output "-": the temporary logs folder, kept because something failed
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def from_summary(cls, summary: dict[str, Any], output_dir: Path | str, reused: bool = False,
                     kept_logs: Path | None = None) -> RunSummary:
        """Build it from a ``summary.json`` document (one written by an older batchinfer lacks the newer keys)."""
        return cls(
            status=summary["status"],
            exit_code=int(summary.get("exit_code", 0)),
            output_dir=output_dir if isinstance(output_dir, str) and "://" in output_dir else Path(output_dir),
            output_file=summary.get("output_file"),
            items_total=summary["items_total"],
            items_succeeded=summary["items_succeeded"],
            items_failed=summary["items_failed"],
            items_not_returned=summary.get("items_not_returned", 0),
            mini_batches_total=summary["mini_batches_total"],
            mini_batches_succeeded=summary["mini_batches_succeeded"],
            mini_batches_failed=summary["mini_batches_failed"],
            tries=summary["tries"],
            elapsed_s=summary["elapsed_s"],
            reason=summary.get("reason"),
            first_error=summary.get("first_error"),
            note=summary.get("note"),
            reused=reused,
            kept_logs=kept_logs,
            raw=dict(summary),
        )


@dataclass(frozen=True)
class Plan:
    """What ``batchinfer plan`` shows: how the inputs are cut into mini-batches (nothing is run)."""

    job: str
    input_type: str  # file or tabular
    mini_batch_size: str
    files: int
    files_without_rows: int
    mini_batches: int
    items: int | None  # None while some table slices are counted only when read
    items_known: int
    items_per_mini_batch: dict[str, int] | None  # min, median, max
    workers: int
    first_mini_batches: list[dict[str, Any]]  # id, items, first, last
    notes: list[str]  # files without rows, folders not followed


@dataclass(frozen=True)
class PipelineSummary:
    """What an Azure ML pipeline run reports (``<output>/pipeline.json``), typed."""

    name: str
    status: str  # succeeded, failed or interrupted
    exit_code: int
    output_dir: Path  # <output>: pipeline.json, and a run folder per step
    steps: dict[str, str]  # step -> succeeded, reused, failed, interrupted, waiting or skipped
    summaries: dict[str, RunSummary]  # the parallel steps that ran (or were reused): their summaries
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


def load_spec(spec_or_path: SpecLike, overrides: dict[str, Any] | None = None):  # -> JobSpec
    """A validated :class:`~batchinfer.spec.JobSpec` from a YAML path, a dict (the YAML's content, relative
    paths from the current folder) or a JobSpec; ``overrides`` are ``{dotted.key: value}``, as ``--set``.

    An Azure ML ``type: pipeline`` file gives ``{step: JobSpec}`` for its parallel steps, or, for a step
    whose input another step makes when the pipeline runs, ``{step: "why it cannot be read yet"}``.
    """
    from batchinfer.spec import JobSpec, default_name, load_spec as load_file, spec_from_data

    if isinstance(spec_or_path, JobSpec):
        if overrides:
            raise UsageError("overrides apply to a job spec given as a path or a dict, not to a JobSpec",
                             hint="pass the path or the dict, or change the JobSpec with model_copy(update=...)")
        return spec_or_path
    if isinstance(spec_or_path, dict):
        name = default_name(Path(str(spec_or_path.get("entry_script") or "job")))
        return spec_from_data(spec_or_path, Path.cwd(), name, "the job spec (dict)", values=overrides)
    if isinstance(spec_or_path, (str, os.PathLike)):
        if _is_azure_file(Path(spec_or_path)):  # each parallel step of a pipeline is a job
            steps = _pipeline_steps(Path(spec_or_path), overrides)
            return steps if _is_pipeline_file(Path(spec_or_path)) else next(iter(steps.values()))
        return load_file(Path(spec_or_path), values=overrides)
    raise UsageError(f"a job spec is a path, a dict or a JobSpec, not a {type(spec_or_path).__name__}")


def run(
    spec_or_path: SpecLike,
    output: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
    restart: bool = False,
    retry_failed: bool = False,
    *,
    logs: str | os.PathLike[str] | None = None,
    reporter: Any = None,
    inputs: dict[str, str] | None = None,
    step: str | None = None,
) -> RunSummary | PipelineSummary:
    """Run a job to its end (or resume it, or retry its failed items) and return its summary.

    ``output`` overrides the spec's output folder ("-": rows to stdout); ``progress`` prints progress
    lines on stderr (the command line passes its own ``reporter`` instead). Raises
    :class:`~batchinfer.errors.JobFailedError` (exit 1) or :class:`~batchinfer.errors.JobInterruptedError`
    (130, 143) with ``.summary`` set, and any other :class:`~batchinfer.errors.BatchInferError` for a mistake.
    Ctrl-C and SIGTERM are handled from the start (main thread only), and the caller's own handlers
    (not a backend's, such as ray.init's) are put back before it returns; a Ctrl-C before the job ran
    raises KeyboardInterrupt. Whatever the backend started in this process (a Ray instance of
    batchinfer's own) is stopped before it returns or raises.

    An Azure ML file runs as ``batchinfer run`` runs it: a ``type: pipeline`` YAML returns a
    :class:`PipelineSummary` (``inputs`` binds ``{"[STEP.]NAME": path}`` as ``--input`` does, ``step`` runs
    one step alone, ``overrides`` keys may start with ``STEP.``); a standalone ``type: parallel`` job, a
    one-step pipeline, returns its :class:`RunSummary`.
    """
    from batchinfer.job import RunOptions, run_job
    from batchinfer.progress import Reporter

    if restart and retry_failed:
        raise UsageError("--restart and --retry-failed cannot be used together", hint="choose one")
    if isinstance(spec_or_path, (str, os.PathLike)) and output != "-" and _is_azure_file(Path(spec_or_path)):
        return _run_pipeline(Path(spec_or_path), output, overrides, progress, restart, retry_failed, inputs, step)
    if inputs or step:
        raise UsageError("inputs and step go with an Azure ML pipeline or parallel job file",
                         hint="change a job's inputs with overrides={'inputs.path': ...}")
    spec = load_spec(spec_or_path, overrides)
    if reporter is None:
        reporter = Reporter("auto" if progress else "quiet")
    options = RunOptions(output=None if output is None else os.fspath(output),
                         logs=None if logs is None else os.fspath(logs), restart=restart, retry_failed=retry_failed)
    logger = logging.getLogger("batchinfer")
    saved = logger.level, logger.propagate  # job.py points the 'batchinfer' logger at job.log for the run
    try:
        result = run_job(spec, reporter, options)
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    summary = RunSummary.from_summary(result.summary, result.output_dir, result.reused, result.kept_logs)
    if progress and reporter.mode != "quiet" and result.exit_code != ExitCode.PIPE_CLOSED:
        reporter.final(result.summary, reused=result.reused)
    code = ExitCode(result.exit_code)
    if code == ExitCode.OK:
        return summary
    if code == ExitCode.JOB_FAILED:
        raise JobFailedError(f"job {spec.name} failed: {summary.reason}", hint=result.summary.get("look_at"),
                             summary=summary)
    raise JobInterruptedError(f"job {spec.name} interrupted: {summary.reason}", code, summary=summary)


def report(output_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
           storage_options: dict[str, Any] | None = None) -> str:
    """Write the HTML report of a job's or a pipeline's output folder (default ``<output_dir>/report.html``,
    ``"-"``: stdout) and return where it went; needs the ``report`` extra (plotly). ``storage_options``:
    a remote folder's credentials (else the SDK's usual environment variables).

    Raises :class:`~batchinfer.errors.OutputError` for a folder batchinfer did not write and
    :class:`~batchinfer.errors.MissingExtraError` when plotly is missing.
    """
    from batchinfer.htmlreport import write_report

    return write_report(output_dir if isinstance(output_dir, str) else Path(output_dir),
                        None if out is None else os.fspath(out), storage_options)


def plan(spec_or_path: SpecLike, overrides: dict[str, Any] | None = None, first: int = 10) -> Plan | dict[str, Any]:
    """How the job's inputs are cut into mini-batches (the first ``first`` listed); lists inputs, runs nothing.

    An Azure ML ``type: pipeline`` file gives ``{step: Plan}`` for its parallel steps (or, for a step that
    waits on another, ``{step: "why"}``), as ``batchinfer plan`` shows them.
    """
    from batchinfer.job import RunOptions

    if isinstance(spec_or_path, (str, os.PathLike)) and _is_azure_file(Path(spec_or_path)):
        steps = _pipeline_steps(Path(spec_or_path), overrides, first)
        return steps if _is_pipeline_file(Path(spec_or_path)) else next(iter(steps.values()))
    return _plan_of(load_spec(spec_or_path, overrides), RunOptions(), first)


def _plan_of(spec: Any, options: Any, first: int) -> Plan:
    from batchinfer.inputs import InputPlan, describe
    from batchinfer.job import excluded_folders

    input_plan = InputPlan(spec, exclude=excluded_folders(spec, options))
    input_plan.check()
    info = describe(input_plan, first)
    return Plan(
        job=spec.name,
        input_type=info["input_type"],
        mini_batch_size=info["mini_batch_size"],
        files=info["files"],
        files_without_rows=info["files_without_rows"],
        mini_batches=info["mini_batches"],
        items=info["items"],
        items_known=info["items_known"],
        items_per_mini_batch=info["items_per_mini_batch"],
        workers=info["workers"],
        first_mini_batches=info["first_mini_batches"],
        notes=list(input_plan.notes()),
    )


def _pipeline_steps(path: Path, overrides: dict[str, Any] | None, first: int | None = None) -> dict[str, Any]:
    """Each parallel step of an Azure ML file: its JobSpec (``first`` None) or its Plan, or why it waits."""
    import json

    from batchinfer.job import RunOptions
    from batchinfer.pipeline import load_pipeline
    from batchinfer.steps import check_pipeline

    pipeline = load_pipeline(path)
    texts = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    found: dict[str, Any] = {}
    for step, spec, why in check_pipeline(pipeline, texts):
        if step.type != "parallel":
            continue
        if spec is None:
            found[step.key] = why
        else:
            found[step.key] = spec if first is None else _plan_of(spec, RunOptions(output=str(step.folder)), first)
    return found


def _is_pipeline_file(path: Path) -> bool:
    from batchinfer.spec import read_yaml

    return read_yaml(path).get("type") == "pipeline"


def _is_azure_file(path: Path) -> bool:
    """An Azure ML ``type: pipeline`` file, or a standalone ``type: parallel`` job (a one-step pipeline)."""
    from batchinfer.pipeline import is_pipeline
    from batchinfer.spec import read_yaml

    return is_pipeline(read_yaml(path))


def _run_pipeline(path: Path, output: Any, overrides: dict[str, Any] | None, progress: bool, restart: bool,
                  retry_failed: bool, inputs: dict[str, str] | None, step: str | None) -> RunSummary | PipelineSummary:
    """An Azure ML file through the pipeline runner (as ``batchinfer run`` runs it)."""
    import json

    from batchinfer.pipeline import load_pipeline
    from batchinfer.steps import PipelineOptions, run_pipeline

    bindings = [f"{name}={value}" for name, value in (inputs or {}).items()]
    pipeline = load_pipeline(path, None if output is None else os.fspath(output), bindings, step)
    texts = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]  # JSON is YAML, as --set reads it
    logger = logging.getLogger("batchinfer")
    saved = logger.level, logger.propagate
    try:
        result = run_pipeline(pipeline, PipelineOptions(texts, restart, retry_failed, quiet=not progress))
    except (JobFailedError, JobInterruptedError) as exc:  # a command step failed: the steps as pipeline.json has them
        if exc.summary is None and not pipeline.standalone:
            doc = json.loads((pipeline.root / "pipeline.json").read_text())
            exc.summary = _pipeline_summary(pipeline, doc, int(exc.exit_code))
        raise
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    outcome = _pipeline_summary(pipeline, result.doc, int(result.exit_code))
    if pipeline.standalone:
        outcome = next(iter(outcome.summaries.values()))
    code = ExitCode(result.exit_code)
    if code == ExitCode.OK:
        return outcome
    failed = next((k for k, state in result.doc["steps"].items() if state["status"] in ("failed", "interrupted")), None)
    what = f"pipeline {pipeline.name}" + (f", step {failed}," if failed and not pipeline.standalone else "")
    if code == ExitCode.JOB_FAILED:
        raise JobFailedError(f"{what} failed", summary=outcome)
    raise JobInterruptedError(f"{what} interrupted", code, summary=outcome)


def _pipeline_summary(pipeline: Any, doc: dict[str, Any], exit_code: int) -> PipelineSummary:
    """The typed form of a ``pipeline.json`` document, with the summary of each parallel step that ran."""
    import json

    summaries = {}
    for key, state in doc["steps"].items():
        summary_file = Path(state["folder"]) / "summary.json"
        if state["type"] == "parallel" and state["status"] != "skipped" and summary_file.is_file():
            summaries[key] = RunSummary.from_summary(json.loads(summary_file.read_text()), Path(state["folder"]),
                                                     reused=state["status"] == "reused")
    return PipelineSummary(
        name=pipeline.name, status=doc["status"], exit_code=exit_code, output_dir=pipeline.root,
        steps={key: state["status"] for key, state in doc["steps"].items()}, summaries=summaries, raw=doc,
    )
