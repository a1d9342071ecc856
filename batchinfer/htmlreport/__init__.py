"""``batchinfer report``: one self-contained HTML page of a job's (or a pipeline's) run.

``read.read_target`` turns the output folder into the model (``model.py``), ``page.render`` draws it
with plotly (the ``report`` extra, imported only here and only when a report is written).

The page at its default place, ``<output>/report.html``, is not claimed in the folder's manifest (a
report may be written while a run holds the folder): the marker in its ``<head>``
(``layout.REPORT_MARKER``) tells batchinfer's page from a file of the user's, which is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from batchinfer.errors import MissingExtraError, OutputError
from batchinfer.layout import REPORT_FILE, TMP_SUFFIX
from batchinfer.statefiles import shown


def write_report(target: str | Path, out: str | Path | None = None,
                 storage_options: dict[str, Any] | None = None) -> str:
    """Write the report of the output folder ``target``; returns where it went.

    ``out``: a file (default ``<target>/report.html``), or ``-`` for stdout; ``storage_options``: a remote
    folder's credentials (the job spec's ``output.storage_options``). The job's lock is not taken and the
    file is written atomically, so a running job is not disturbed. Raises :class:`OutputError` (one line)
    when the page cannot be written, or when a report.html that batchinfer did not write stands at the
    default place.
    """
    render = _renderer()
    from batchinfer.htmlreport.read import local_path as read_local
    from batchinfer.htmlreport.read import read_target

    remote = out is None and isinstance(target, str) and "://" in target and read_local(target) is None
    path = None
    if str(out) != "-" and not remote:
        path = Path(out) if out is not None else (read_local(str(target)) or Path(target)).absolute() / REPORT_FILE
        _check_writable(path, default=out is None)
    report = read_target(target, storage_options)
    html = render(report)  # marked in its <head> (layout.REPORT_MARKER): see _check_writable
    if str(out) == "-":
        _to_stdout(html)
        return "-"
    if remote:
        from batchinfer.htmlreport.remote import write_remote

        return write_remote(str(target), REPORT_FILE, html, storage_options)
    assert path is not None
    _write(path, html)
    return str(path)


def check_extra() -> None:
    """Raise :class:`MissingExtraError` (one line, exit 2) when plotly, the ``report`` extra, is missing."""
    try:
        import plotly  # noqa: F401 - the extra's package: one line with the hint when it is missing
    except ImportError:
        raise MissingExtraError("batchinfer report needs plotly, which is not installed",
                                hint="pip install 'batchinfer[report]'") from None


def _renderer():
    check_extra()
    from batchinfer.htmlreport.page import render

    return render


def _check_writable(path: Path, default: bool) -> None:
    """Refuse, before anything is read, a folder given as ``-o`` and (at the default place) a report.html
    that batchinfer did not write."""
    from batchinfer.manifest import is_own_report

    if path.is_dir():
        raise OutputError(f"cannot write the report to {shown(path)}: it is a folder",
                          hint=f"give -o a file, e.g. -o {shown(path / REPORT_FILE)}")
    if default and path.exists() and not is_own_report(path):
        raise OutputError(f"{shown(path)} was not written by batchinfer report and will not be overwritten",
                          hint="write the report elsewhere with -o FILE, or move that file")


def _write(path: Path, html: str) -> None:
    """The page into ``path`` atomically (``<name>.tmp`` moved into place, with the umask's mode); a device
    or pipe (``-o /dev/stdout``) is written into, never replaced by a file."""
    import stat

    from batchinfer.statefiles import write_atomic

    data = html.encode("utf-8", "replace")  # a lone surrogate left in: "?", never a traceback
    special = False
    try:
        special = path.exists() and not stat.S_ISREG(path.stat().st_mode)
        if special:
            with open(path, "wb") as f:
                f.write(data)
        else:
            write_atomic(path, data)
    except OSError as exc:
        if not special:
            with contextlib.suppress(OSError):
                path.with_name(path.name + TMP_SUFFIX).unlink()
        raise OutputError(f"cannot write the report to {shown(path)} ({exc.strerror or exc})",
                          hint="give -o a file in a writable folder with free space") from None


def _to_stdout(html: str) -> None:
    data = html.encode("utf-8", "replace")
    try:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is not None:
            sys.stdout.flush()
            buffer.write(data)
            buffer.flush()
        else:  # a text stream without bytes underneath (a notebook's)
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
    except OSError as exc:  # a full disk, a closed pipe: stdout is pointed at /dev/null, or exit would fail again
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        raise OutputError(f"cannot write the report to stdout ({exc.strerror or exc})",
                          hint="write it to a file with -o FILE") from None
