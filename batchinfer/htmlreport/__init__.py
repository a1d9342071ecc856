"""``batchinfer report``: one self-contained HTML page of a job's (or a pipeline's) run.

``read.read_target`` turns the output folder into the model (``model.py``), ``page.render`` draws it
with plotly (the ``report`` extra, imported only here and only when a report is written).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from batchinfer.errors import MissingExtraError, OutputError

REPORT_FILE = "report.html"


def write_report(target: str | Path, out: str | Path | None = None) -> str:
    """Write the report of the output folder ``target``; returns where it went.

    ``out``: a file (default ``<target>/report.html``), or ``-`` for stdout. The job's lock is not taken
    and the file is written atomically, so a running job is not disturbed.
    """
    render = _renderer()
    from batchinfer.htmlreport.read import local_path as read_local
    from batchinfer.htmlreport.read import read_target

    report = read_target(target)
    html = render(report)
    if str(out) == "-":
        sys.stdout.write(html)
        sys.stdout.flush()
        return "-"
    if out is None and isinstance(target, str) and "://" in target and read_local(target) is None:
        from batchinfer.htmlreport.remote import write_remote

        return write_remote(target, REPORT_FILE, html)
    if out is None:
        out = (read_local(str(target)) or Path(target)).absolute() / REPORT_FILE
    path = Path(out)
    _write_atomic(path, html)
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


def _write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it, moved into place."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror})", hint="give -o a writable file") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

