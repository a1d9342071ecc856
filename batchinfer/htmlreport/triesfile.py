"""``logs/processed_mini_batches.csv`` read by column (``model.Tries``), for the report's reader.

No object per try: each column is converted at once with ``map``, so 100,000 tries take a fraction of
a second. A half-written last row (a running or killed job) is dropped silently; a damaged row is
skipped with a note.
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

from batchinfer.htmlreport.model import Tries
from batchinfer.trylog import TRIES_FILE


def read_tries(path: Path, notes: list[str]) -> tuple[Tries, list[float]]:
    """The tries of ``path`` by column, sorted by start, and their starts as epoch seconds (``Tries.start``
    is left for the caller to make relative to the report's t0)."""
    tries = Tries()
    starts: list[float] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        notes.append(f"logs/{TRIES_FILE} is absent: no tries to show")
        return tries, starts
    except OSError as exc:
        notes.append(f"logs/{TRIES_FILE} could not be read ({exc.strerror})")
        return tries, starts
    complete = text.endswith("\n")
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, None)
        rows = list(reader)
    except csv.Error as exc:
        notes.append(f"logs/{TRIES_FILE} could not be read ({exc}): tries not shown")
        return tries, starts
    if header is None:
        return tries, starts
    column = {name: i for i, name in enumerate(header)}
    needed = ("id", "worker", "start", "seconds")
    if any(name not in column for name in needed):
        notes.append(f"logs/{TRIES_FILE} has no {', '.join(n for n in needed if n not in column)} column: tries not shown")
        return tries, starts
    if rows and not complete:
        rows.pop()  # the half-written last line of a running or killed job: expected, not damage
    width = len(header)
    good = [row for row in rows if len(row) >= width]
    stamp = _stamp_parser()
    converters = [(column.get(name), convert, default) for name, convert, default in (
        ("start", stamp, 0.0), ("seconds", float, 0.0), ("worker", int, 0), ("id", int, 0), ("part", str, ""),
        ("try", int, 1), ("items", _count, 0), ("succeeded", _count, 0), ("failed", _count, 0), ("status", str, "ok"))]
    try:
        columns = _by_column(good, converters)
    except (ValueError, IndexError):  # some row is damaged: find them one by one (slow, and rare)
        good = [row for row in good if _row_ok(row, converters)]
        columns = _by_column(good, converters)
    if len(good) < len(rows):
        notes.append(f"logs/{TRIES_FILE}: {len(rows) - len(good)} damaged rows skipped")
    starts[:] = columns[0]
    order = sorted(range(len(starts)), key=starts.__getitem__)
    if any(i != k for k, i in enumerate(order)):
        columns = [[col[i] for i in order] for col in columns]
        starts[:] = columns[0]
    (_, tries.seconds, tries.worker, tries.mini_batch, tries.part, tries.try_number, tries.items,
     tries.succeeded, tries.failed, tries.status) = columns
    return tries, starts


def _stamp_parser():
    """ISO 8601 UTC with milliseconds (as TryLog writes them) to epoch seconds; each second parsed once."""
    seconds: dict[str, float] = {}

    def parse(stamp: str) -> float:
        second = seconds.get(stamp[:19])
        if second is None:
            second = seconds[stamp[:19]] = datetime.fromisoformat(stamp[:19]).replace(tzinfo=timezone.utc).timestamp()
        return second + (float(stamp[19:23]) if stamp[19:20] == "." else 0.0)

    return parse


def _count(value: str) -> int:
    return int(value) if value else 0  # items is empty when it was not known


def _by_column(rows: list[list[str]], converters: list) -> list[list]:
    """Each column converted at once (map, no per-try object); raises ValueError for a damaged value."""
    cells = list(zip(*rows)) if rows else []
    columns = []
    for index, convert, default in converters:
        if index is None or not rows:
            columns.append([default] * len(rows))
        elif convert is _count:
            try:
                columns.append(list(map(int, cells[index])))
            except ValueError:
                columns.append(list(map(_count, cells[index])))
        else:
            columns.append(list(map(convert, cells[index])))
    return columns


def _row_ok(row: list[str], converters: list) -> bool:
    try:
        for index, convert, _ in converters:
            if index is not None:
                convert(row[index])
    except (ValueError, IndexError):
        return False
    return True
