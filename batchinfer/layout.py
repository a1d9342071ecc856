"""The names batchinfer owns in an output folder (the run folder of DESIGN.md section 5).

One place for them: the spec refuses an ``append_row_file_name`` that would land
on one of them, and the code that writes, clears or locks the folder imports
them from here instead of spelling them again.
"""

from __future__ import annotations

import re

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
# in the <head> of every page `batchinfer report` writes: a report.html without it is the user's, never overwritten
REPORT_MARKER = '<meta name="generator" content="batchinfer report">'
REPORT_MARKER_WITHIN = 1024  # the marker stands in the page's first bytes (its <head>): only those are read
LOGS_DIR = "logs"
STATE_DIR = ".batchinfer"  # journal, fingerprint, lock, live status
TMP_SUFFIX = ".tmp"  # every atomic write goes to <name>.tmp first, then os.replace(<name>.tmp, <name>)
# NAME_MAX of Linux, macOS and Windows file systems is 255 bytes, and <name>.tmp must fit too
MAX_NAME_BYTES = 255 - len(TMP_SUFFIX)

# top-level entries of the output folder that are batchinfer's, whatever the job
RESERVED_NAMES = frozenset({SUMMARY_FILE, REPORT_FILE, LOGS_DIR, STATE_DIR})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file of the user's rows in the output folder, or None when it can.

    It must be one plain file name (no folder part), not one of batchinfer's own
    names or a temporary ``.tmp`` file, printable and short enough for a file system.
    Names are compared case-insensitively: on macOS and Windows ``Summary.json`` is ``summary.json``.
    """
    if not name:
        return "must not be empty"
    if name in (".", "..") or any(sep in name for sep in ("/", "\\")):
        return "must be a plain file name, without folders"
    if _CONTROL.search(name):
        return "must not contain control characters (newline, tab, NUL)"
    folded = name.casefold()
    if folded in RESERVED_NAMES:
        return f"is the name of batchinfer's own {folded!r} in the output folder"
    if folded.endswith(TMP_SUFFIX):
        return f"must not end in {TMP_SUFFIX!r}: batchinfer writes its files through <name>{TMP_SUFFIX}"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes, too long for a file name (with batchinfer's {TMP_SUFFIX})"
    return None
