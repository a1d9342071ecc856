"""The one exception hierarchy: every error a user can meet, its message, hint and exit code.

Only ``cli.py`` turns a :class:`BatchInferError` into output (one line on stderr)
and an exit code; the library raises, it never prints.
"""

from __future__ import annotations

import enum
import re

# C0 and C1 control characters: a newline in a message (from a file name, a value the user
# wrote) would split the one line the CLI promises; other controls could drive the terminal
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a newline as ``\\n``), so it prints as one line."""
    return _CONTROL.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m[0], f"\\x{ord(m[0]):02x}"), text)


class ExitCode(enum.IntEnum):
    """Process exit codes, as documented in the README."""

    OK = 0  # done; failures (if any) stayed within the thresholds
    JOB_FAILED = 1  # a threshold was exceeded, or no item succeeded
    USAGE = 2  # bad usage, spec, script or inputs: nothing (more) was run
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); the job can be resumed
    PIPE_CLOSED = 141  # (128 + SIGPIPE) the reader of --output - went away, e.g. '| head'; as 'yes | head' does
    TERMINATED = 143  # SIGTERM (128 + SIGTERM); the job can be resumed


class BatchInferError(Exception):
    """Base class: a message for the user, an optional hint on how to fix it, an exit code."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        message = one_line(message)
        super().__init__(message)
        self.message = message
        self.hint = one_line(hint) if hint else hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(BatchInferError):
    """The command line itself is wrong (options that do not go together)."""


class SpecError(BatchInferError):
    """The job spec cannot be read or is invalid (YAML syntax, unknown key, bad value)."""


class EntryScriptError(BatchInferError):
    """The entry script is missing, does not compile, or does not define ``run``."""


class InputError(BatchInferError):
    """The inputs cannot be found or read (no match, unknown format, unreadable folder)."""


class OutputError(BatchInferError):
    """The output folder cannot be used (it is a file, or holds a different job)."""


class StorageError(BatchInferError):
    """An object store cannot be used: its package is missing, the bucket does not exist, the
    credentials are refused (the URL in the message is redacted)."""


class BackendUnavailableError(BatchInferError):
    """The requested backend is not available in this installation."""


class MissingExtraError(BatchInferError):
    """A feature needs a package of one of batchinfer's extras that is not installed (the hint names
    the ``pip install 'batchinfer[extra]'`` that brings it)."""


class JobFailedError(BatchInferError):
    """The job ran but failed: a threshold was exceeded, no item succeeded, or init() kept failing.

    Raised by ``batchinfer.run()`` with ``summary`` (a :class:`batchinfer.api.RunSummary`) set.
    """

    exit_code = ExitCode.JOB_FAILED

    def __init__(self, message: str, hint: str | None = None, summary: object | None = None) -> None:
        super().__init__(message, hint)
        self.summary = summary


class JobInterruptedError(BatchInferError):
    """The job was stopped before its end (Ctrl-C: 130, SIGTERM: 143, its stdout closed: 141); it can be resumed.

    Raised by ``batchinfer.run()`` with ``summary`` (a :class:`batchinfer.api.RunSummary`) set.
    """

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str, exit_code: ExitCode, summary: object | None = None) -> None:
        super().__init__(message, hint="run it again to resume" if exit_code != ExitCode.PIPE_CLOSED else None)
        self.exit_code = exit_code
        self.summary = summary
