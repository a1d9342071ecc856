"""The files batchinfer keeps in an output folder and reads back: written owner-only, read as data.

Everything under ``<output>/.batchinfer/`` is private to the owner (folder 0700, files 0600,
whatever the umask). Every file batchinfer reads back from an output folder (``job.json``,
``summary.json``, ``status.json``) goes through a pydantic model here: a damaged or forged file
is either refused with one line naming it, or treated as absent where that is safe. Nothing
read back is ever unpickled or evaluated.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batchinfer.errors import ExitCode, OutputError
from batchinfer.layout import TMP_SUFFIX
from batchinfer.redact import for_log

JOB_FILE = "job.json"
JOB_FORMAT = 2  # 1: batchinfer 0.1.0 (no "format" key); 2: with a manifest of what batchinfer wrote
MAX_STATE_BYTES = 1 << 20  # job.json, summary.json, status.json are a few kB; a bigger one is not ours


def shown(path: Any) -> str:
    """A path for a one-line message, as every message shows names (see ``redact.for_log``):
    control characters and bytes that are not UTF-8 escaped, credentials masked."""
    return for_log(str(path))


# ---------------------------------------------------------------- owner-only files


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) and make it 0700, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created inside are owner-only (for code that opens files itself).

    The umask is process-wide: use it only around a few file creations in the coordinator,
    never while a thread of its own could be creating files (workers are separate processes).
    """
    before = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(before)


def create_new(path: Path, private: bool) -> int:
    """A new file at ``path``, open for writing: whatever stood there (a link someone planted) is
    replaced, never written through. ``private``: readable by the owner only, whatever the umask."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600 if private else 0o666)
    if private:
        os.fchmod(fd, 0o600)
    return fd


def write_atomic(path: Path, data: bytes, private: bool = False) -> None:
    """Write ``data`` to ``path`` through a new ``<name>.tmp`` moved into place: readers never see half
    a file, and a link left at either name is replaced, not written through."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with os.fdopen(create_new(tmp, private), "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically, readable by the owner only."""
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode(), private=True)


def seal(paths: list[Path]) -> None:
    """Make ``paths`` owner-only: files 0600, folders 0700 with everything in them; symlinks untouched.

    For files that other parts create with the umask's mode (journal, Parquet parts): run when
    the folder is prepared and when the job ends, so even a killed run's files get sealed next time.
    """
    for top in paths:
        if top.is_symlink() or not top.is_dir():
            _chmod(top, 0o600)
            continue
        _chmod(top, 0o700)
        for root, dirs, files in os.walk(top):
            for name in dirs:
                _chmod(Path(root, name), 0o700)
            for name in files:
                _chmod(Path(root, name), 0o600)


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(OSError):  # gone meanwhile, or not ours to change: nothing to seal
        info = os.lstat(path)
        if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) != mode:
            os.chmod(path, mode)


# ---------------------------------------------------------------- reading back


class ReadBack(BaseModel):
    """A file read back: strict types (no "1" for 1), unknown keys ignored (they carry no meaning)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class JobFile(ReadBack):
    """``.batchinfer/job.json``: which job the folder holds."""

    format: int = Field(1, ge=1)  # absent: written by batchinfer 0.1.0
    fingerprint: str = Field(pattern=r"^[0-9a-f]{1,64}$")
    name: str = Field(max_length=200)
    version: Optional[str] = Field(None, max_length=100)


class SummaryFile(ReadBack):
    """The keys of ``summary.json`` that decide what the next run does."""

    status: Literal["succeeded", "failed", "interrupted"]
    exit_code: int = 0
    complete: bool = True
    inputs_digest: Optional[str] = Field(None, max_length=200)
    finished_at: str = Field("", max_length=100)


class StatusDoc(ReadBack):
    """``.batchinfer/status.json``: what ``batchinfer status`` shows of a running job."""

    job: str = Field(max_length=200)
    pid: int = Field(gt=0)
    workers: int = Field(ge=0)
    started_at: str = Field(max_length=100)
    state: str = Field(max_length=50)
    elapsed_s: float = Field(ge=0, allow_inf_nan=False)
    mini_batches_done: int = Field(ge=0)
    mini_batches_total: int = Field(ge=0)
    listing_done: bool
    mini_batches_expected: Optional[int] = Field(None, ge=0)  # absent in older status files: no estimate
    total_estimated: bool = False
    items_done: int = Field(ge=0)
    items_failed: int = Field(ge=0)
    busy_workers: int = Field(ge=0)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; ``FileNotFoundError`` when absent, ``ValueError`` when not a small JSON file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = f.read(MAX_STATE_BYTES + 1)
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
    return json.loads(data.decode("utf-8"))


def why_invalid(exc: Exception) -> str:
    """What is wrong with a file read back, in a few words (the first validation error)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the document"
        return f"{where}: {first['msg']}"
    return shown(exc)


def read_job_file(path: Path, damaged_ok: bool = False) -> JobFile | None:
    """``job.json``, or None when absent (or damaged, with ``damaged_ok``); a damaged one, or one of
    a newer format, is an :class:`OutputError`."""
    try:
        job = JobFile.model_validate(read_json(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # ValidationError is a ValueError
        if damaged_ok:
            return None
        raise OutputError(
            f"{shown(path)} is damaged ({why_invalid(exc)})",
            hint="batchinfer wrote it; use --restart to start over in that folder, or choose another --output",
        ) from None
    if job.format > JOB_FORMAT:
        raise OutputError(
            f"{shown(path)} was written by a newer batchinfer (format {job.format}, this one reads up to {JOB_FORMAT})",
            hint="use that version of batchinfer, or choose another --output",
        )
    return job


def read_summary(path: Path) -> dict[str, Any] | None:
    """``summary.json`` as a dict, or None when absent or not a valid summary (then the job is resumed:
    its journal says what is done, and a new summary replaces the bad one)."""
    try:
        doc = read_json(path)
        summary = SummaryFile.model_validate(doc)
        ExitCode(summary.exit_code)
    except (OSError, ValueError):
        return None
    return doc


def read_status_doc(path: Path) -> dict[str, Any] | None:
    """``status.json`` as a dict, or None when absent or damaged (``status`` then shows what it can)."""
    try:
        doc = read_json(path)
        StatusDoc.model_validate(doc)
    except (OSError, ValueError):
        return None
    return doc
