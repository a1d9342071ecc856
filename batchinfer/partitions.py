"""``partition_format`` and ``partition_keys``: values from paths, and mini-batches of one partition each.

A ``partition_format`` such as ``{Store}/{Brand}/{file_name}.csv`` or
``dataset_partition_test/{user}/{season}/{genres}.wav`` (Azure v1's ``partition_format``,
MLTable's ``extract_columns_from_partition_format``) gives each file values from its path:
``{name}`` is one path part or part of one, ``{name:yyyy/MM/dd}`` a date, and the format is
matched against the end of the path, from a ``/``. With ``partition_keys``, files (or, for
tables, rows) with equal values form one mini-batch, sorted by value so that ids are stable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from batchinfer.errors import InputError
from batchinfer.protocol import MiniBatch, Partition
from batchinfer.redact import for_log
from batchinfer.safeyaml import shown

if TYPE_CHECKING:
    from batchinfer.inputs import InputPlan

FIELD = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")  # {name} or {name:date format}
FIELD_TEXT = re.compile(r"\{([^{}:]*)(:?)([^{}]*)\}")  # the same, for checking what a user wrote
# date formats in partition_format, as MLTable (and .NET) write them
DATE_TOKENS = {"yyyy": (r"\d{4}", "%Y"), "MM": (r"\d{2}", "%m"), "dd": (r"\d{2}", "%d"), "HH": (r"\d{2}", "%H"),
               "mm": (r"\d{2}", "%M"), "ss": (r"\d{2}", "%S")}
DATE_LETTERS = frozenset("yMdHhmsftzKgF")


@functools.lru_cache(maxsize=32)
def date_pattern(date_format: str) -> tuple[str, str]:
    """(regular expression, strptime format) for a date format such as ``yyyy/MM/dd`` or
    ``yyyyMMddTHHmm``; ValueError names what is not supported."""
    regex, strp, i = [], [], 0
    while i < len(date_format):
        token = next((t for t in DATE_TOKENS if date_format.startswith(t, i)), None)
        if token is not None:
            regex.append(DATE_TOKENS[token][0])
            strp.append(DATE_TOKENS[token][1])
            i += len(token)
        elif date_format[i] in DATE_LETTERS:
            raise ValueError(f"the date format {date_format!r} uses {date_format[i]!r}: batchinfer reads "
                             "yyyy, MM, dd, HH, mm and ss")
        else:
            regex.append(re.escape(date_format[i]))
            strp.append(date_format[i].replace("%", "%%"))
            i += 1
    if not strp or not any(t in date_format for t in DATE_TOKENS):
        raise ValueError(f"the date format {date_format!r} names no part of a date (yyyy, MM, dd, HH, mm, ss)")
    return "".join(regex), "".join(strp)


@functools.lru_cache(maxsize=32)
def _partition_regex(partition_format: str) -> re.Pattern:
    """``{name}`` is one path part or part of one; ``{name:yyyy/MM/dd}`` what the date format
    describes; the format matches the end of a path, from a '/'."""
    out, last = [], 0
    body = partition_format.lstrip("/")
    for match in FIELD.finditer(body):
        out.append(re.escape(body[last : match.start()]))
        value = "[^/]+" if match.group(2) is None else date_pattern(match.group(2))[0]
        out.append(f"({value})")
        last = match.end()
    out.append(re.escape(body[last:]))
    return re.compile("(?:^|/)" + "".join(out) + r"\Z")


def partition_values(path: str, partition_format: str) -> dict[str, Any] | None:
    """The values that ``path`` gives the fields of ``partition_format``: text, as MLTable gives
    them, and a ``datetime`` for a field with a date format; None when the path does not match."""
    import datetime

    match = _partition_regex(partition_format).search(path.replace("\\", "/"))
    if match is None:
        return None
    values: dict[str, Any] = {}
    for (name, date_format), text in zip(FIELD.findall(partition_format), match.groups()):
        if date_format:
            try:
                values[name] = datetime.datetime.strptime(text, date_pattern(date_format)[1])
            except ValueError:  # digits that are no date (month 13): the path does not match
                return None
        else:
            values[name] = text
    return values


def partition_fields(format_: str) -> list[str]:
    """The ``{name}`` (or ``{name:date format}``) fields of a ``partition_format``, by name, in
    order; ValueError for a malformed one."""
    fields = [f"{name}:{fmt}" if colon else name for name, colon, fmt in FIELD_TEXT.findall(format_)]
    if not fields:
        raise ValueError(f"{shown(format_)} names no {{field}}, e.g. {{year}}/{{month}}/{{name}}.csv")
    names = []
    for field in fields:
        name, colon, date_format = field.partition(":")
        if not name.strip() or "/" in name:
            raise ValueError(f"{{{field}}} is not a field name: a field is a column name, within one path part")
        if colon:
            try:
                date_pattern(date_format)
            except ValueError as exc:
                raise ValueError(f"{{{field}}}: {exc}") from None
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"{shown(format_)} names a field twice")
    if re.search(r"\}\{", format_):
        raise ValueError(f"{shown(format_)}: two fields must be separated by some text, as in {{a}}_{{b}}")
    if FIELD_TEXT.sub("", format_).count("{") or FIELD_TEXT.sub("", format_).count("}"):
        raise ValueError(f"{shown(format_)} has an unmatched brace")
    return names


def file_partitions(plan: InputPlan, ids: Iterator[int]) -> Iterator[MiniBatch]:
    """File inputs with ``partition_keys``: the files whose paths give the keys equal values
    form one mini-batch (``partition_format`` says which part of a path is which key). The whole
    listing is read first; mini-batches are sorted by their values, so ids are stable."""
    from batchinfer.inputs import digest

    keys = list(plan.spec.partition_keys or [])
    groups: dict[tuple[tuple[str, ...], int], list[Any]] = {}  # FoundFile
    for index, found in plan.files():
        partition_format = plan.spec.inputs[index].partition_format
        assert partition_format is not None  # spec.py: file inputs are partitioned by their paths
        values = partition_values(found.path, partition_format) or {}
        groups.setdefault((tuple(values[k] for k in keys), index), []).append(found)
    plan.partition_count = len(groups)  # exact from here on (counting.Counter)
    for values, index in sorted(groups):
        found_files = groups[(values, index)]
        by_key = dict(zip(keys, values))
        label = ", ".join(f"{k}={v}" for k, v in by_key.items())
        yield MiniBatch(
            next(ids), index, files=tuple(f.path for f in found_files), known_items=len(found_files),
            digest=digest(*found_files, label), partition_values=by_key,
        )


def table_partitions(plan: InputPlan, ids: Iterator[int]) -> Iterator[MiniBatch]:
    """Group rows by ``partition_keys`` across all files. Keys that ``partition_format`` takes
    from the paths need no read: when every key does, the listing alone makes the partitions.
    Otherwise the key columns of every file are read before the run."""
    from batchinfer.inputs import digest, table_format
    from batchinfer.readers import read_columns

    keys = list(plan.spec.partition_keys or [])
    groups: dict[tuple, dict[tuple[str, str], int | None]] = {}
    index_of: dict[tuple, int] = {}
    found_by_path: dict[str, Any] = {}  # FoundFile
    for index, found in plan.files():
        found_by_path[found.path] = found
        spec_input = plan.spec.inputs[index]
        fmt, _ = table_format(found.path, spec_input.format)
        assert fmt is not None
        from_path = partition_fields(spec_input.partition_format) if spec_input.partition_format else []
        if all(k in from_path for k in keys):
            values = partition_values(found.path, spec_input.partition_format or "") or {}
            key = tuple(values[k] for k in keys)
            groups.setdefault(key, {})[(found.path, fmt)] = None  # rows counted when read
            index_of.setdefault(key, index)
            continue
        try:
            frame = read_columns(found.path, fmt, keys, spec_input.storage_options, plan.read_options[index])
        except KeyError as exc:
            raise InputError(
                f"partition_keys: column {exc.args[0]!r} is not in {for_log(found.path)}",
                hint="partition_keys must name columns present in every input file, or {fields} of inputs.partition_format",
            ) from None
        except Exception as exc:  # the keys of every file decide the mini-batches: none may be skipped
            why = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            raise InputError(
                f"partition_keys: cannot read {for_log(found.path)}: {for_log(why)}",
                hint="fix or remove that file; with partition_keys every input file is read before the run",
            ) from None
        for values, count in frame.groupby(keys, dropna=False, sort=True).size().items():
            values = values if isinstance(values, tuple) else (values,)
            files = groups.setdefault(values, {})
            files[(found.path, fmt)] = (files.get((found.path, fmt)) or 0) + int(count)
            index_of.setdefault(values, index)
    plan.partition_count = len(groups)  # exact from here on (counting.Counter)
    for values in sorted(groups, key=lambda v: tuple(str(x) for x in v)):
        files = groups[values]
        partition = Partition(tuple(files), dict(zip(keys, (_plain(v) for v in values))))
        batch_digest = digest(*(found_by_path[path] for path, _ in partition.files), partition.label())
        counts = list(files.values())
        known = None if None in counts else sum(c for c in counts if c is not None)
        yield MiniBatch(next(ids), index_of[values], table=partition, known_items=known, digest=batch_digest)


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so partition values print and serialise plainly."""
    return value.item() if hasattr(value, "item") else value
