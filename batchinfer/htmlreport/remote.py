"""The report of an output folder on an object store (``s3://``, ``az://``, ``gs://``, ``file://``...).

What the reader needs (summary.json and the few logs it reads) is downloaded through
:mod:`batchinfer.storage` into a temporary folder and read there as a local folder; the live status
comes from the folder's lease, as ``batchinfer status URL`` reads it. Credentials: the SDK's usual
environment variables. Nothing on the store is written but the page itself (by ``write_report``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from batchinfer.eventlog import EVENTS_FILE
from batchinfer.htmlreport.model import JobReport
from batchinfer.layout import LOGS_DIR, REPORT_MARKER, REPORT_MARKER_WITHIN, SUMMARY_FILE
from batchinfer.trylog import ERRORS_FILE, SLOWEST_FILE, TRIES_FILE

READ = (SUMMARY_FILE, *(f"{LOGS_DIR}/{name}" for name in (
    EVENTS_FILE, TRIES_FILE, ERRORS_FILE, SLOWEST_FILE, "failed_items.txt")))


def read_remote(url: str, storage_options: dict[str, Any] | None = None) -> JobReport:
    """The report of the job whose output folder is at ``url`` (one line, exit 2, when it is not one)."""
    from batchinfer.htmlreport.read import read_job
    from batchinfer.progress import read_remote_status
    from batchinfer.redact import redact_url
    from batchinfer.storage import call, filesystem

    status = read_remote_status(url, storage_options)  # OutputError when batchinfer did not write it
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")

    def fetch(local: Path) -> None:
        for name in READ:
            try:
                data = fs.cat_file(f"{root}/{name}")
            except FileNotFoundError:
                continue
            (local / name).write_bytes(data)

    with tempfile.TemporaryDirectory(prefix="batchinfer-report-") as tmp:
        local = Path(tmp)
        (local / LOGS_DIR).mkdir()
        call(lambda: fetch(local), url, "output", "reading")  # what still fails is one line (storage.call)
        report = read_job(local, status=status)
    report.headline.output_dir = redact_url(url)
    return report


def write_remote(url: str, name: str, text: str, storage_options: dict[str, Any] | None = None) -> str:
    """Put ``text`` at ``<url>/<name>`` (one PUT: whole or absent); returns its URL, redacted. A page there
    that batchinfer did not write (no marker, ``layout.REPORT_MARKER``) is refused in one line, never replaced."""
    from batchinfer.errors import OutputError
    from batchinfer.redact import redact_url
    from batchinfer.storage import call, filesystem

    fs, root = filesystem(url, storage_options)
    target, path = f"{url.rstrip('/')}/{name}", f"{root.rstrip('/')}/{name}"

    def existing() -> bytes | None:
        try:
            return fs.cat_file(path, start=0, end=REPORT_MARKER_WITHIN)  # its <head>: not the whole page
        except FileNotFoundError:
            return None

    before = call(existing, target, "output", "reading")
    if before is not None and REPORT_MARKER.encode() not in before:
        raise OutputError(f"{redact_url(target)} was not written by batchinfer report and will not be overwritten",
                          hint="write the report elsewhere with -o FILE, or move that file")
    call(lambda: fs.pipe_file(path, text.encode("utf-8", "replace")), target, "output", "writing")
    return redact_url(target)
