"""The command line: parse arguments, call the library, turn errors into one line and an exit code.

Heavy modules (pandas, pyarrow, the scheduler) are imported inside the
commands, so ``batchinfer --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from batchinfer import __version__
from batchinfer.errors import BatchInferError, ExitCode, UsageError

app = typer.Typer(
    name="batchinfer",
    help="Run an init()/run(mini_batch) scoring script over many files or table rows, in parallel.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def fail(error: BatchInferError) -> None:
    """Print ``error`` as one line on stderr and exit with its code."""
    hint = f" ({error.hint})" if error.hint else ""
    sys.stderr.write(f"batchinfer: error: {error.message}{hint}\n")
    raise typer.Exit(int(error.exit_code))


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


@app.command(
    epilog=(
        "Examples:\n\n"
        "  batchinfer run sample_data/mnist_job.yaml\n\n"
        "  batchinfer run job.yaml --output /tmp/scores --set mini_batch_size=20 --set process_count_per_node=4\n\n"
        "  batchinfer run job.yaml --restart   # start over in an output folder that holds another job\n\n"
        "  batchinfer run job.yaml --retry-failed   # after fixing bad inputs: run just the failed items again"
    )
)
def run(
    job: Annotated[Path, typer.Argument(help="The job spec (YAML).", show_default=False)],
    output: Annotated[
        Optional[str], typer.Option("--output", "-o", help="Output folder (overrides the spec's 'output').")
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a spec key: KEY=VALUE (VALUE read as YAML; repeatable; dotted keys such as inputs.path)."),
    ] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard what an earlier run left in the output folder and start over.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run only the failed items of the finished job in the output folder again.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on stderr unless the job fails.")] = False,
    progress_interval: Annotated[
        float, typer.Option("--progress-interval", help="Seconds between progress lines when stderr is not a terminal.")
    ] = 30.0,
) -> None:
    """Run a job: score every input with the entry script and write the rows to the output folder."""
    from batchinfer.job import run_job
    from batchinfer.progress import Reporter
    from batchinfer.spec import load_spec

    try:
        spec = load_spec(job, set_ or [])
        reporter = Reporter("quiet" if quiet else "auto", interval=progress_interval)
        if restart and retry_failed:
            raise UsageError("--restart and --retry-failed cannot be used together", hint="choose one")
        result = run_job(spec, reporter, output=output, restart=restart, retry_failed=retry_failed)
    except BatchInferError as error:
        fail(error)
        return
    reporter.final(result.summary, reused=result.reused)
    raise typer.Exit(int(result.exit_code))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a job (e.g. while listing inputs)
        sys.stderr.write("batchinfer: interrupted\n")
        sys.exit(int(ExitCode.INTERRUPTED))


if __name__ == "__main__":
    main()
