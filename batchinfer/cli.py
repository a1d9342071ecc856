"""The command line: parse arguments, call the library, turn errors into one line and an exit code.

stdout carries data only (rows with ``--output -``, JSON with ``--json``, the
tables of ``plan`` and ``status``); everything else goes to stderr. Heavy
modules (pandas, pyarrow, the scheduler) are imported inside the commands,
so ``batchinfer --help`` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from batchinfer import __version__
from batchinfer.errors import BatchInferError, ExitCode, UsageError
from batchinfer.redact import for_log, mask_secrets, one_line

app = typer.Typer(
    name="batchinfer",
    help=(
        "Run an init()/run(mini_batch) scoring script over many files or table rows, in parallel.\n\n"
        "Start with 'batchinfer init myjob' or 'batchinfer run sample_data/mnist_job.yaml'."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

JobArg = Annotated[
    Path, typer.Argument(
        metavar="JOB", help="The job spec (YAML): native, an Azure ML parallel job, or an Azure ML pipeline.",
        show_default=False,
        readable=False,  # load_spec says what is wrong with the file, in batchinfer's words
    )
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a spec key: KEY=VALUE (VALUE read as YAML; repeatable; dotted keys such as inputs.path). "
                 "On an Azure ML pipeline: every parallel step's native key, or STEP.KEY=VALUE for one step."),
]
InputOpt = Annotated[
    Optional[list[str]],
    typer.Option("--input", metavar="[STEP.]NAME=PATH_OR_URL",
                 help="Azure ML pipeline: bind an input of the pipeline (NAME) or of a step (STEP.NAME) to a local "
                 "path or URL; a step whose outputs are all replaced so is skipped (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
# status and report: where a job's output folder is, and its storage_options
SpecOpt = Annotated[
    Optional[Path],
    typer.Option("--spec", metavar="JOB.yaml", readable=False,
                 help="Read the output folder (when OUTPUT is not given) and its storage_options from this job spec."),
]
CLOSED_STREAMS: set[int] = set()  # standard descriptors that were closed when batchinfer started


def fail(error: BatchInferError) -> None:
    """Print ``error`` as one line on stderr and exit with its code."""
    hint = f" ({error.hint})" if error.hint else ""
    sys.stderr.write(f"batchinfer: error: {for_log(error.message + hint)}\n")  # secrets masked, one line
    raise typer.Exit(int(error.exit_code))


def _print_json(data: Any) -> None:
    sys.stdout.write(mask_secrets(json.dumps(data, indent=2, default=str)) + "\n")  # a URL may hold a key
    sys.stdout.flush()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"batchinfer {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """batchinfer: batch scoring from the command line (see README.md)."""


def _load(job: Path, overrides: list[str]):
    from batchinfer.spec import load_spec

    return load_spec(job, overrides)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  batchinfer run sample_data/mnist_job.yaml\n\n"
        "  batchinfer run job.yaml --output /tmp/scores --set mini_batch_size=20 --processes 4\n\n"
        "  batchinfer run job.yaml --output - | sort | head   # rows to stdout as they commit\n\n"
        "  batchinfer run job.yaml --restart   # start over in an output folder that holds another job\n\n"
        "  batchinfer run job.yaml --retry-failed   # after fixing bad inputs: run just the failed items again\n\n"
        "  batchinfer run pipeline.yml --input predict.job_data_path=./data   # an Azure ML pipeline, an input bound locally\n\n"
        "  batchinfer run pipeline.yml --step predict   # one step of a pipeline alone"
    )
)
def run(
    job: JobArg,
    output: Annotated[
        Optional[str],
        typer.Option("--output", "-o", help="Output folder (overrides the spec's 'output'); '-' streams the rows to stdout."),
    ] = None,
    set_: SetOpt = None,
    processes: Annotated[
        Optional[int], typer.Option("--processes", "-p", min=1, help="Worker processes per node (process_count_per_node).")
    ] = None,
    log_level: Annotated[
        Optional[str], typer.Option("--log-level", help="DEBUG, INFO or WARNING for job.log and the worker logs.")
    ] = None,
    logs: Annotated[
        Optional[Path], typer.Option("--logs", help="With --output -: the folder for logs and summary (default: a temp folder).")
    ] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard what an earlier run left in the output folder and start over.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run only the failed items of the finished job in the output folder again.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on stderr unless the job fails.")] = False,
    as_json: JsonOpt = False,
    progress_interval: Annotated[
        float, typer.Option("--progress-interval", min=0.1, help="Seconds between progress lines when stderr is not a terminal.")
    ] = 30.0,
    step: Annotated[
        Optional[str], typer.Option("--step", metavar="STEP", help="Azure ML pipeline: run this step alone.")
    ] = None,
    input_: InputOpt = None,
    with_report: Annotated[
        bool, typer.Option("--report", help="Write OUTPUT/report.html (see batchinfer report) when the run ends, whatever its status.")
    ] = False,
) -> None:
    """Run a job or an Azure ML pipeline: score every input with the entry script and write the rows to the output folder."""
    from batchinfer import api
    from batchinfer.errors import JobFailedError, JobInterruptedError
    from batchinfer.progress import Reporter

    overrides = list(set_ or [])
    if processes is not None:
        overrides.append(f"process_count_per_node={processes}")
    if log_level is not None:
        overrides.append(f"logging_level={log_level}")
    try:
        if restart and retry_failed:
            raise UsageError("--restart and --retry-failed cannot be used together", hint="choose one")
        if 1 in CLOSED_STREAMS and (output == "-" or as_json):
            raise UsageError("stdout is closed: there is nowhere to write the rows or the JSON",
                             hint="give --output a folder, or run without '>&-'")
        if as_json and output == "-":
            raise UsageError("--json and --output - both write to stdout", hint="use --logs DIR and read DIR/summary.json")
        if with_report:
            _check_report(output, logs)
        pipeline = _pipeline(job, output, list(input_ or []), step)
        if pipeline is not None:
            if logs:
                raise UsageError("--logs goes with --output -, which an Azure ML pipeline cannot use",
                                 hint="give an output folder; each step's logs are in <output>/<step>/logs")
            _run_pipeline(pipeline, overrides, restart, retry_failed, quiet, progress_interval, as_json, with_report)
            return
        if step:
            raise UsageError(f"--step goes with an Azure ML pipeline; {job} is one job", hint="run it without --step")
        spec = _load(job, overrides)
        reporter = Reporter("quiet" if quiet else "auto", interval=progress_interval)
        try:  # the library's one path (batchinfer.run), with this command's reporter
            result = api.run(spec, output=output, restart=restart, retry_failed=retry_failed,
                             logs=str(logs) if logs else None, reporter=reporter)
        except (JobFailedError, JobInterruptedError) as stopped:
            if stopped.summary is None:
                raise
            result = stopped.summary
    except BatchInferError as error:
        fail(error)
        return
    if result.exit_code != ExitCode.PIPE_CLOSED:
        reporter.final(result.raw, reused=result.reused)
        if as_json:
            _print_json(result.raw)
    if with_report:  # a reused finished job too: its page is as valid as when it ran
        _report_at_end(*_report_target(spec, output, logs, result))
    if result.kept_logs:  # even with --quiet: it is left on disk for the user to look at, then remove
        sys.stderr.write(f"batchinfer: kept the temporary folder {result.kept_logs} (logs, summary) because "
                         "something failed; remove it when done\n")
    raise typer.Exit(int(result.exit_code))


def _pipeline(job: Path, output: str | None, inputs: list[str], step: str | None, standalone: bool = True):
    """The bound pipeline when ``job`` is an Azure ML pipeline (or, with ``standalone``, a parallel job
    not streamed to stdout: a one-step pipeline); None for a job spec."""
    from batchinfer.pipeline import is_pipeline, load_pipeline
    from batchinfer.spec import read_yaml

    data = read_yaml(job)
    if not is_pipeline(data) or (data.get("type") == "parallel" and (output == "-" or not standalone)):
        if inputs:
            raise UsageError(f"--input goes with an Azure ML pipeline or parallel job; {job} is a job spec",
                             hint="use --set inputs.path=PATH to change a job's inputs")
        return None
    if output == "-":
        raise UsageError("--output - streams one job's rows: an Azure ML pipeline needs an output folder",
                         hint="give --output a folder; the rows are in <output>/<step>/outputs/<port>/")
    return load_pipeline(job, output, inputs, step)


def _check_report(output: str | None, logs: Path | None) -> None:
    """``run --report``: refused before anything runs when it cannot be written (no plotly, nowhere to put it)."""
    from batchinfer.htmlreport import check_extra

    if output == "-" and not logs:
        raise UsageError("--report with --output - needs --logs DIR (the report is written there)",
                         hint="add --logs DIR")
    check_extra()


def _run_pipeline(pipeline, overrides: list[str], restart: bool, retry_failed: bool, quiet: bool,
                  interval: float, as_json: bool, with_report: bool = False) -> None:
    from batchinfer.steps import PipelineOptions, run_pipeline

    options = PipelineOptions(overrides, restart, retry_failed, quiet, interval, failures_when_quiet=True)
    try:
        result = run_pipeline(pipeline, options)  # a BatchInferError goes to the caller's handler
    finally:
        if with_report and (pipeline.root / "pipeline.json").is_file():
            _report_at_end(pipeline.root)
    if as_json:
        _print_json(result.doc if not pipeline.standalone else _standalone_summary(pipeline))
    elif not pipeline.standalone and not quiet and result.exit_code == ExitCode.OK:
        sys.stderr.write(f"batchinfer: pipeline {pipeline.name} done in {pipeline.root}\n")
    raise typer.Exit(int(result.exit_code))


def _standalone_summary(pipeline) -> dict[str, Any]:
    return json.loads((pipeline.root / "summary.json").read_text())


@app.command(epilog="Example:\n\n  batchinfer validate job.yaml && batchinfer run job.yaml")
def validate(job: JobArg, set_: SetOpt = None, input_: InputOpt = None) -> None:
    """Check the spec, that the script compiles and defines run(), and that inputs exist; run nothing."""
    from batchinfer.entry import check_entry_script
    from batchinfer.inputs import InputPlan
    from batchinfer.job import RunOptions, excluded_folders

    try:
        pipeline = _pipeline(job, None, list(input_ or []), None, standalone=bool(input_))
        if pipeline is not None:
            from batchinfer.steps import check_pipeline

            for step, _spec, found in check_pipeline(pipeline, list(set_ or [])):
                sys.stderr.write(mask_secrets(f"batchinfer: step {step.key}: {found}\n"))
            sys.stderr.write(f"batchinfer: {job} is valid: pipeline {pipeline.name!r}, {len(pipeline.steps)} steps\n")
            return
        spec = _load(job, list(set_ or []))
        entry = check_entry_script(spec)
        plan = InputPlan(spec, exclude=excluded_folders(spec, RunOptions()))
        plan.check()
    except BatchInferError as error:
        fail(error)
        return
    functions = ", ".join(f for f, ok in (("init", entry.has_init), ("run", True), ("shutdown", entry.has_shutdown)) if ok)
    sys.stderr.write(mask_secrets(
        f"batchinfer: {job} is valid: job {spec.name!r}, {spec.input_type} inputs, "
        f"{spec.worker_count} workers, entry script {entry.path} defines {functions}\n"
    ))


@app.command(epilog="Examples:\n\n  batchinfer plan job.yaml\n\n  batchinfer plan job.yaml --json | jq .mini_batches")
def plan(
    job: JobArg,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    first: Annotated[int, typer.Option("--first", min=0, help="How many mini-batches to show.")] = 10,
    input_: InputOpt = None,
) -> None:
    """Show the mini-batches the job (or each parallel step of a pipeline) would run; never imports the script."""
    from batchinfer.inputs import InputPlan, describe
    from batchinfer.job import RunOptions, excluded_folders

    try:
        pipeline = _pipeline(job, None, list(input_ or []), None, standalone=bool(input_))
        if pipeline is not None:
            _plan_pipeline(pipeline, list(set_ or []), as_json, first)
            return
        spec = _load(job, list(set_ or []))
        input_plan = InputPlan(spec, exclude=excluded_folders(spec, RunOptions()))
        input_plan.check()
        info = describe(input_plan, first)
    except BatchInferError as error:
        fail(error)
        return
    for line in input_plan.notes():
        sys.stderr.write(f"batchinfer: {line}\n")
    if as_json:
        _print_json(info)
        return
    sys.stdout.write(mask_secrets("\n".join(_plan_lines(spec, info))) + "\n")


def _plan_pipeline(pipeline, overrides: list[str], as_json: bool, first: int) -> None:
    """``plan`` of a pipeline: each parallel step whose inputs are there; the others say what they wait on."""
    from batchinfer.inputs import InputPlan, describe
    from batchinfer.job import RunOptions, excluded_folders
    from batchinfer.steps import check_pipeline

    doc: dict[str, Any] = {}
    lines: list[str] = []
    for step, spec, found in check_pipeline(pipeline, overrides):
        if spec is None:
            doc[step.key] = {"type": step.type, "planned": False, "why": found}
            lines.append(f"step {step.key}: {found}")
            continue
        options = RunOptions(output=str(step.folder))
        input_plan = InputPlan(spec, exclude=excluded_folders(spec, options))
        info = describe(input_plan, first)
        doc[step.key] = {"type": "parallel", "planned": True, **info}
        lines += [f"step {step.key}:", *("  " + line for line in _plan_lines(spec, info))]
    if as_json:
        _print_json({"pipeline": pipeline.name, "steps": doc})
    else:
        sys.stdout.write(mask_secrets("\n".join(lines)) + "\n")


def _plan_lines(spec, info: dict[str, Any]) -> list[str]:
    items = info["items"] if info["items"] is not None else f"{info['items_known']}+ (table rows counted when read)"
    per = info["items_per_mini_batch"]
    lines = [
        f"job {spec.name}: {info['input_type']} inputs, mini_batch_size {info['mini_batch_size']}, {info['workers']} workers",
        f"{info['files']} files, {info['mini_batches']} mini-batches, {items} items",
    ]
    if per:
        lines.append(f"items per mini-batch: min {per['min']}, median {per['median']}, max {per['max']}")
    lines.append("")
    lines.append(f"{'id':>6}  {'items':>6}  first item (.. last)")
    for row in info["first_mini_batches"]:
        shown = row["first"] + (f"  ..  {row['last']}" if row["last"] else "")
        lines.append(f"{row['id']:>6}  {row['items'] if row['items'] is not None else '?':>6}  {shown}")
    if info["mini_batches"] > len(info["first_mini_batches"]):
        lines.append(f"{'...':>6}")
    return lines


@app.command(epilog=(
    "Examples:\n\n  batchinfer status outputs/mnist-digits\n\n  batchinfer status outputs/mnist-digits --watch\n\n"
    "  batchinfer status s3://bucket/scores   # from any machine: credentials from the SDK's environment variables\n\n"
    "  batchinfer status --spec job.yaml   # the spec's output, with its storage_options"
))
def status(
    output_dir: Annotated[
        Optional[str],
        typer.Argument(metavar="OUTPUT", show_default=False,
                       help="The job's output folder: a path, or a URL (s3://, az://, gs://, file://)."),
    ] = None,
    spec: SpecOpt = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep printing a line until the job is no longer running.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between lines with --watch.")] = 2.0,
    as_json: JsonOpt = False,
) -> None:
    """Progress of a running or finished job or pipeline, from its output folder (works while it runs, and
    from another machine for a remote folder)."""
    from batchinfer.progress import ran_locally, read_remote_status, read_status, status_line
    from batchinfer.steps import is_pipeline_output, pipeline_status, pipeline_status_lines

    try:
        target, storage_options = _status_target(output_dir, spec)
        if target.startswith("file://") and ran_locally(Path(target[len("file://"):])):
            target = target[len("file://"):]  # a local run's folder named as a URL: its flock and status.json
        while True:
            if "://" in target:
                doc = read_remote_status(target, storage_options)
            elif is_pipeline_output(Path(target)):
                doc = pipeline_status(Path(target).absolute())
                if as_json:
                    _print_json(doc)
                else:
                    sys.stdout.write("\n".join(pipeline_status_lines(doc)) + "\n")
                    sys.stdout.flush()
                if not watch or doc["state"] != "running":
                    break
                time.sleep(interval)
                continue
            else:
                doc = read_status(Path(target).absolute())
            if as_json:
                _print_json(doc)
            else:
                sys.stdout.write(status_line(doc) + "\n")
                sys.stdout.flush()
            if not watch or doc["state"] != "running":
                break
            time.sleep(interval)
    except BatchInferError as error:
        fail(error)


@app.command(epilog=(
    "Examples:\n\n"
    "  batchinfer report out/   # writes out/report.html\n\n"
    "  batchinfer report out/ -o - > run.html\n\n"
    "  batchinfer report --spec job.yaml   # its output folder, with its storage_options"
))
def report(
    output_dir: Annotated[
        Optional[str], typer.Argument(metavar="OUTPUT", show_default=False,
                                      help="The output folder of a job or an Azure ML pipeline (finished, failed, "
                                      "or still running): a path, or a URL (s3://, az://, gs://, file://)."),
    ] = None,
    out: Annotated[
        Optional[str],
        typer.Option("--out", "-o", metavar="FILE", help="Where to write the page (default OUTPUT/report.html); '-' for stdout."),
    ] = None,
    spec: SpecOpt = None,
) -> None:
    """Write one self-contained HTML page of a run: throughput, workers' timelines, slowest tries, failures."""
    from batchinfer.htmlreport import write_report

    try:
        target, storage_options = _status_target(output_dir, spec, "report")
        written = write_report(target, out, storage_options or None)
    except BatchInferError as error:
        fail(error)
        return
    if written != "-":
        sys.stderr.write(f"batchinfer: report: {one_line(written)}\n")


def _report_at_end(folder: Path | str | None, storage_options: dict[str, Any] | None = None) -> None:
    """``run --report``: the page of the run that just ended, whatever its status; named on stderr."""
    from batchinfer.htmlreport import write_report

    if folder is None:
        return
    try:
        written = write_report(folder, storage_options=storage_options)
    except BatchInferError as error:  # the run's exit code stands: the report is an extra
        sys.stderr.write(f"batchinfer: report not written: {for_log(str(error))}\n")
        return
    sys.stderr.write(f"batchinfer: report: {one_line(written)}\n")


def _report_target(spec, output: str | None, logs: Path | None, result) -> tuple[Path | str | None, dict[str, Any] | None]:
    """Where ``run --report`` reads and writes: a remote output by its real URL with the spec's
    storage_options (the result names it redacted, without credentials), else the folder the run used."""
    if result.kept_logs or output == "-":
        return result.kept_logs or logs, None
    url = output or (spec.output.path if spec.output is not None else None)
    if url and "://" in url:
        return url, dict(spec.output.storage_options) if spec.output is not None else None
    return result.output_dir, None


def _status_target(output: str | None, spec_path: Path | None, command: str = "status") -> tuple[str, dict[str, Any]]:
    """The folder ``status`` (or ``report``) reads, and the storage_options to read it with (the spec's, with --spec)."""
    if spec_path is None:
        if output is None:
            raise UsageError("Missing argument 'OUTPUT'", hint="give the output folder (a path or URL), "
                             f"or --spec JOB.yaml; see batchinfer {command} --help")
        return output, {}
    job = _load(spec_path, [])
    if job.output is None or job.output.path == "-":
        if output is None:
            raise UsageError(f"{spec_path} names no output folder", hint="give OUTPUT as well")
        return output, {}
    return (output or job.output.path), dict(job.output.storage_options)


cache_app = typer.Typer(
    name="cache", no_args_is_help=True, rich_markup_mode=None,
    help="The machine's cache of models and side inputs fetched from URLs ($BATCHINFER_CACHE_DIR, "
         "default ~/.cache/batchinfer; at most $BATCHINFER_CACHE_MAX_GB, default 10).",
)
app.add_typer(cache_app)


@cache_app.command(name="list", epilog="Example:\n\n  batchinfer cache list")
def cache_list(as_json: JsonOpt = False) -> None:
    """List the cache's entries, least recently used first: last use, size, URL (secrets masked)."""
    from datetime import datetime

    from batchinfer.modelcache import ModelCache

    try:
        cache = ModelCache()
    except BatchInferError as error:
        fail(error)
        return
    entries = cache.entries()
    if as_json:
        _print_json({"cache_dir": str(cache.root), "limit_bytes": cache.limit, "entries": [
            {"url": e.url, "size": e.size, "folder": e.folder, "path": str(e.path),
             "last_used": datetime.fromtimestamp(e.last_used).isoformat(timespec="seconds")} for e in entries]})
        return
    lines = [f"{'last used':<19}  {'size':>10}  url"]
    for e in entries:
        used = datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{used:<19}  {_size(e.size):>10}  {for_log(e.url)}{'/' if e.folder else ''}")
    total = sum(e.size for e in entries)
    lines.append(f"{_entries(len(entries))}, {_size(total)} of at most {_size(cache.limit)} in {cache.root}")
    sys.stdout.write("\n".join(lines) + "\n")


@cache_app.command(name="clear",
                   epilog="Examples:\n\n  batchinfer cache clear\n\n  batchinfer cache clear --older-than 30")
def cache_clear(
    older_than: Annotated[
        Optional[float],
        typer.Option("--older-than", metavar="DAYS", min=0, help="Remove only entries unused for DAYS days."),
    ] = None,
) -> None:
    """Remove the cache's entries (all, or those unused for --older-than DAYS); entries a running job uses stay."""
    from batchinfer.modelcache import ModelCache

    try:
        removed, busy = ModelCache().clear(older_than)
    except BatchInferError as error:
        fail(error)
        return
    line = f"removed {_entries(len(removed))} ({_size(sum(e.size for e in removed))})"
    if busy:
        line += f"; kept {len(busy)} in use by a running job"
    sys.stdout.write(line + "\n")


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def _size(size: int) -> str:
    from batchinfer.modelcache import size_text

    return size_text(size)


@app.command(name="init", epilog="Example:\n\n  batchinfer init myjob && batchinfer run myjob/job.yaml")
def init_command(folder: Annotated[Path, typer.Argument(help="Folder to create the starter job in.", show_default=False)]) -> None:
    """Write a commented starter job.yaml, score.py and sample inputs that run as they are."""
    from batchinfer.scaffold import write_scaffold

    try:
        written = write_scaffold(folder)
    except BatchInferError as error:
        fail(error)
        return
    for path in written:
        sys.stderr.write(f"batchinfer: wrote {path}\n")
    sys.stderr.write(f"batchinfer: now run: batchinfer run {folder / 'job.yaml'}\n")


@app.command(epilog="Example:\n\n  batchinfer convert azure-parallel-job.yml > job.yaml")
def convert(azure_yaml: Annotated[Path, typer.Argument(help="An Azure ML v2 parallel job or pipeline YAML.", show_default=False)]) -> None:
    """Print the native batchinfer spec equivalent to an Azure ML parallel job, or to each parallel step of a pipeline."""
    from batchinfer.azure import convert_file

    try:
        sys.stdout.write(convert_file(azure_yaml))
    except BatchInferError as error:
        fail(error)


def _usage_line(error: Exception) -> str:
    """A usage mistake that typer found (a missing argument, an unknown option, a bad value) as one line."""
    message = error.format_message() if hasattr(error, "format_message") else str(error)
    ctx = getattr(error, "ctx", None)
    hint = f" (see '{ctx.command_path if ctx is not None else 'batchinfer'} --help')"
    return f"batchinfer: error: {one_line(message)}{hint}\n"


def _reopen_closed_std_streams() -> set[int]:
    """Put /dev/null on a closed stdin, stdout or stderr (``batchinfer run job.yaml 2>&-``); return which.

    Left closed, the next file batchinfer opens (the lock, the journal) would get that number,
    and whatever writes to fd 2 (a C library, faulthandler) would write into it.
    """
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if 1 in closed or sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    if 2 in closed or sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    return closed


def main() -> None:
    """Console-script entry point: every mistake, typer's usage errors too, is one line on stderr."""
    from batchinfer.executors import own_process

    own_process()  # this process is batchinfer's own: its workers' orphans may be adopted and killed
    CLOSED_STREAMS.update(_reopen_closed_std_streams())
    try:
        code = app(standalone_mode=False)  # typer raises its usage errors instead of printing a usage block
    except typer.TyperException as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # plain 'batchinfer': the help, as before
            error.show()
        else:
            sys.stderr.write(_usage_line(error))
        code = int(getattr(error, "exit_code", ExitCode.USAGE))
    except (KeyboardInterrupt, typer.Abort):  # Ctrl-C outside a job (e.g. while listing inputs)
        code = ExitCode.INTERRUPTED
    if code == ExitCode.INTERRUPTED:
        sys.stderr.write("batchinfer: interrupted\n")
    sys.exit(int(code) if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
