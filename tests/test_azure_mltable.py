"""MLTable folders read as Azure reads them: batchinfer's rows against Microsoft's ``mltable``.

Each case is an MLTable folder (synthetic data in the shapes Azure's examples use). It runs as
a real job over the native spec that ``input_from_mltable`` gives, cut into several lazy
mini-batches, with a script that returns every row; the rows must equal
``mltable.load(folder).to_pandas_dataframe()`` (run in the old-versions environment with the
network off, see ``mltable_reference.py``): same columns in the same order, same rows in the
same order, values equal as text, and the same kind of dtype except where a case says why not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchinfer.errors import SpecError
from batchinfer.mltable import input_from_mltable
from mltable_reference import MltableRefused, mltable_frames

ROWS = "".join(f"{i},name {i},{i * 10 + 5},{i / 4}\n" for i in range(2, 42))  # id, text, int, float


@dataclass
class Case:
    """An MLTable folder: its files (text is written as UTF-8), its MLTable, and how to cut it."""

    name: str
    files: dict[str, str | bytes]
    mltable: str
    size: str = "64"  # mini_batch_size: small, so that every file is cut into several slices
    min_batches: int = 2
    kinds_differ: dict[str, str] = field(default_factory=dict)  # column -> why mltable's dtype differs
    # columns whose text differs with the dtype: compared after this conversion of both sides
    compare_as: dict[str, Callable[[str], Any]] = field(default_factory=dict)


def _parquet(frame: pd.DataFrame, row_group_size: int) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


CASES = [
    Case("semicolon_no_header", {"d.csv": "1;a\n2;b\n3;c\n"},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      delimiter: ';'\n      header: no_header\n",
         size="6"),
    Case("tab_delimited", {"d.tsv": "id\tname\tn\tx\n" + ROWS.replace(",", "\t")},
         "paths:\n  - file: ./d.tsv\ntransformations:\n  - read_delimited:\n      delimiter: \"\\t\"\n"),
    Case("pipe_with_quoted_delimiter", {"d.csv": 'id|text\n10|"a|b"\n20|plain\n30|"x ""y"" z"\n'},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      delimiter: '|'\n", size="12"),
    Case("same_headers_iris_shape", {"a.csv": "id,name,n,x\n" + ROWS, "b.csv": "id,name,n,x\n" + ROWS},
         "paths:\n  - pattern: ./*.csv\ntransformations:\n  - read_delimited:\n      delimiter: ','\n"
         "      encoding: utf8\n      header: all_files_same_headers\n"),
    Case("same_headers_differing_names", {"a.csv": "id,name,n,x\n" + ROWS, "b.csv": "ID,NAME,N,X\n" + ROWS},
         "paths:\n  - pattern: ./*.csv\ntransformations:\n  - read_delimited\n"),
    Case("from_first_file", {"a.csv": "id,name,n,x\n" + ROWS, "b.csv": ROWS},
         "paths:\n  - pattern: ./*.csv\ntransformations:\n  - read_delimited:\n      header: from_first_file\n"),
    Case("different_headers", {"a.csv": "id,name\n10,x\n20,y\n", "b.csv": "name,id\nz,30\nw,40\n"},
         "paths:\n  - pattern: ./*.csv\ntransformations:\n  - read_delimited:\n      header: all_files_different_headers\n",
         size="8"),
    Case("no_header_with_path_column", {"d.csv": ROWS},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      header: no_header\n"
         "      include_path_column: true\n"),
    Case("latin1", {"d.csv": ("name,n\n" + "".join(f"café {i},{i + 10}\nnaïve {i},{i + 20}\n" for i in range(9))).encode("latin-1")},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      encoding: latin1\n"),
    Case("windows1252", {"d.csv": ("name,n\n" + "".join(f"€uro “{i}”,{i + 10}\n" for i in range(9))).encode("cp1252")},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      encoding: windows1252\n"),
    Case("utf8_with_bom", {"d.csv": ("\ufeffname,n\n" + "".join(f"café {i},{i + 10}\n" for i in range(9))).encode("utf-8")},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      encoding: utf8\n"),
    Case("utf16_whole_files", {f"{c}.csv": ("name,n\n" + "".join(f"café {c}{i},{i + 10}\n" for i in range(5))).encode("utf-16")
                               for c in "ab"},
         "paths:\n  - pattern: ./*.csv\ntransformations:\n  - read_delimited:\n      encoding: utf16\n"),
    Case("multi_line_quoted", {"d.csv": "id,text\n" + "".join(f'{i},"line {i}\nstill {i}, ""quoted"""\n' for i in range(10, 30))},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      support_multi_line: true\n"),
    Case("pattern_in_sub_folders", {"d/2020/a.csv": "id,n\n10,1.5\n20,2.5\n", "d/2021/b.csv": "id,n\n30,3.5\n",
                                    "d/2021/notes.txt": "not a table"},
         "paths:\n  - pattern: ./d/**/*.csv\ntransformations:\n  - read_delimited:\n      include_path_column: true\n",
         size="6"),
    Case("folder_and_file", {"d/a.csv": "id,n\n10,15\n20,25\n", "d/b.csv": "id,n\n30,35\n", "e.csv": "id,n\n40,45\n"},
         "paths:\n  - folder: ./d\n  - file: ./e.csv\ntransformations:\n  - read_delimited\n", size="6"),
    Case("empty_as_string", {"d.csv": "id,text,more\n10,,x\n20,y,\n30,z,w\n"},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      empty_as_string: true\n", size="8"),
    Case("empty_is_missing_na_is_text", {"d.csv": "id,text\n10,NA\n20,\n30,null\n"},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited\n", size="8"),
    Case("no_type_inference", {"d.csv": "id,name,n,x\n" + ROWS},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited:\n      infer_column_types: false\n"),
    Case("keep_columns_keeps_table_order", {"d.csv": "id,name,n,x\n" + ROWS},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited\n  - keep_columns: [x, id]\n"),
    Case("drop_columns", {"d.csv": "id,name,n,x\n" + ROWS},
         "paths:\n  - file: ./d.csv\ntransformations:\n  - read_delimited\n  - drop_columns: [name, not_there]\n"),
    Case("parquet_row_groups", {"p1.parquet": _parquet(pd.DataFrame({"id": range(10, 60), "s": [f"v{i}" for i in range(50)]}), 7),
                                "p2.parquet": _parquet(pd.DataFrame({"id": [70, 80], "s": ["x", None]}), 1)},
         "paths:\n  - pattern: ./*.parquet\ntransformations:\n  - read_parquet:\n      include_path_column: true\n",
         size="100"),
    Case("json_lines", {"a.jsonl": "".join(f'{{"id": {i}, "s": "v{i}", "f": {i / 2}}}\n' for i in range(10, 30)),
                        "b.jsonl": '{"id": 40, "s": null, "f": 1.25}\n'},
         "paths:\n  - pattern: ./*.jsonl\ntransformations:\n  - read_json_lines:\n      include_path_column: true\n"),
    Case("json_lines_invalid_dropped", {"a.jsonl": '{"id": 10}\nnot json\n{"id": 20}\n[1, 2]\n{"id": 30}\n'},
         "paths:\n  - file: ./a.jsonl\ntransformations:\n  - read_json_lines:\n      invalid_lines: drop\n", size="12"),
    Case("convert_column_types", {"d.csv": "a,b,c,d,e\n1,2.5,x,true,7\n2,oops,y,False,8.5\n,3,,t,\n"
                                           "4,1e2, z ,0, 4\n-5,-1,w,yes,x\n"},
         "paths:\n- file: ./d.csv\ntransformations:\n- read_delimited:\n    infer_column_types: false\n"
         "- convert_column_types:\n  - columns: a\n    column_type: int\n  - columns: [b, e]\n    column_type: float\n"
         "  - columns: d\n    column_type: boolean\n", size="24",
         kinds_differ={"a": "ints with a missing value are floats in mltable's whole table, here only in the "
                            "mini-batches that hold the missing value"},
         compare_as={"a": lambda text: None if text is None else float(text)}),
    Case("column_type_overrides", {"d.csv": "id,code,n\n10,007,1.5\n20,010,2\n30,x,3\n"},
         "paths:\n- file: ./d.csv\ntransformations:\n- read_delimited:\n    infer_column_types:\n"
         "      column_type_overrides:\n      - columns: code\n        column_type: string\n"
         "      - columns: n\n        column_type: int\n", size="10"),
    # the MLTable that Azure's OJ example (partition_data.py) writes, over its folder layout
    Case("oj_partition_format_and_drop_columns",
         {f"{store}/{brand}/partitioned_data.csv": "WeekStarting,Quantity,Advert,Price,Revenue\n"
          + "".join(f"1990-06-{d:02d},{store + d * 3},1,2.{d},{store * 2 + d}.5\n" for d in range(10, 20))
          for store in (1000, 1001) for brand in ("dominicks", "tropicana")},
         "type: mltable\npaths:\n- pattern: ./**/*.csv\ntransformations:\n- read_delimited:\n    delimiter: ','\n"
         "    empty_as_string: false\n    encoding: ascii\n    header: all_files_same_headers\n"
         "    include_path_column: true\n- extract_columns_from_partition_format:\n"
         "    partition_format: '{Store}/{Brand}/{file_name}.{extension}'\n- drop_columns:\n  - Path\n  - file_name\n"
         "  - extension\n",
         size="100",
         kinds_differ={"WeekStarting": "mltable infers dates; batchinfer leaves them as text",
                       "Advert": "mltable reads a column of only 0 and 1 as booleans; batchinfer as integers"},
         compare_as={"WeekStarting": pd.Timestamp, "Advert": lambda text: text in ("1", "True")}),
    Case("partition_format_with_a_date_across_folders",
         {"data/2020/01/02/x/f.csv": "v\n10\n20\n", "data/2021/12/31/y/f.csv": "v\n30\n"},
         "paths:\n- folder: ./data\ntransformations:\n- read_delimited:\n    include_path_column: true\n"
         "- extract_columns_from_partition_format:\n    partition_format: '{PartitionDate:yyyy/MM/dd}/{cat}/{name}.csv'\n",
         size="4"),
    Case("partition_format_from_an_outer_folder", {"data/2020/a/d.csv": "x\n10\n20\n", "data/2021/b/d.csv": "x\n30\n"},
         "paths:\n- folder: ./data\ntransformations:\n- read_delimited:\n    include_path_column: true\n"
         "- extract_columns_from_partition_format:\n    partition_format: 'data/{year}/{cat}/{name}.csv'\n",
         size="4"),
]


def _text(value):
    """A value as text, as tests/scripts/table_rows.py writes it (missing: None)."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NaT:
        return None
    return str(value)


def _kind(dtype: str) -> str:
    if dtype.startswith(("int", "uint")):
        return "int"
    if dtype.startswith("float"):
        return "float"
    if dtype.startswith("datetime"):
        return "datetime"
    return {"bool": "bool"}.get(dtype, "text")  # object, str, string


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Every case's folder, and mltable's frame for each (one old-versions process for all)."""
    root = tmp_path_factory.mktemp("mltables")
    folders = {}
    for case in CASES:
        folder = root / case.name
        for name, content in case.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content, encoding="utf-8")
            else:
                path.write_bytes(content)
        (folder / "MLTable").write_text(case.mltable)
        folders[case.name] = folder
    frames = mltable_frames(list(folders.values()))
    return {name: (folders[name], frame) for name, frame in zip(folders, frames)}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rows_equal_what_mltable_reads(case, tables, job):
    folder, reference = tables[case.name]
    assert not isinstance(reference, MltableRefused), reference
    native = input_from_mltable(folder)
    run = job("table_rows.py", inputs=native, mini_batch_size=case.size, ordered=True)
    assert run.code == 0, run.stderr
    assert run.summary["mini_batches_total"] >= case.min_batches  # lazily cut, not read whole
    rows = [json.loads(line) for line in run.rows()]
    columns = list(dict.fromkeys(c for row in rows for c in row["columns"]))
    assert columns == list(reference.columns)
    ours = [dict(zip(row["columns"], row["values"])) for row in rows]
    ours = [{c: row.get(c) for c in columns} for row in ours]
    theirs = [dict(zip(columns, (_text(v) for v in values))) for values in reference.itertuples(index=False, name=None)]
    for column, convert in case.compare_as.items():
        for mine, other in zip(ours, theirs):
            assert convert(mine.pop(column)) == convert(other.pop(column)), column
    assert ours == theirs
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for column, dtype in zip(row["columns"], row["dtypes"]):
            kinds.setdefault(column, set()).add(_kind(dtype))
    for column in columns:
        expected = _kind(reference.attrs["dtypes"][column])
        if column in case.kinds_differ:
            assert kinds[column] != {expected}, f"{column} now matches mltable: remove it from kinds_differ"
        elif len(kinds[column]) == 1:
            assert kinds[column] == {expected}, column
        else:  # mini-batches that differ (ints in one file, text in another): mltable has text
            assert expected == "text", (column, kinds[column])


def test_a_file_list_mltable_is_a_file_input(tmp_path, job):
    """Azure's MNIST shape: an MLTable without a read step lists files; 'file:' may name a folder."""
    (tmp_path / "mnist").mkdir()
    for i in range(5):
        (tmp_path / "mnist" / f"{i}.png").write_bytes(b"P" * (i + 1))
    for entry in ("file: ./mnist", "folder: ./mnist", "pattern: ./mnist/*.png"):
        (tmp_path / "MLTable").write_text(f"paths:\n  - {entry}\n")
        native = input_from_mltable(tmp_path)
        assert native == {"type": "file", "path": [str(tmp_path / "mnist") if "*" not in entry else str(tmp_path / "mnist/*.png")]}
    run = job("echo_names.py", inputs=native, mini_batch_size=2)
    assert run.code == 0, run.stderr
    assert sorted(run.rows()) == [f"{i}.png {'P' * (i + 1)}" for i in range(5)]
    assert run.summary["mini_batches_total"] == 3


MALFORMED = [
    ("", "is empty"),
    ("- just\n- a list\n", "must be a mapping"),
    ("paths: [{file: ./d.csv}]\nunknown_key: 1\n", "unknown_key: is not an MLTable key"),
    ("type: table\npaths: [{file: ./d.csv}]\n", "type: must be 'mltable'"),
    ("transformations: [read_delimited]\n", "paths: is required"),
    ("paths: ./d.csv\n", "paths: must be a list"),
    ("paths: [{files: ./d.csv}]\n", "paths[0]: must be one of"),
    ("paths: [{file: 12}]\n", "paths[0].file: must be a path"),
    ("paths: [{file: 'azureml://datastores/x/paths/d.csv'}]\n", "paths[0].file: 'azureml://"),
    ("paths: [{file: ./d.csv}]\ntransformations: read_delimited\n", "transformations: must be a list"),
    ("paths: [{file: ./d.csv}]\ntransformations: [{read_delimited: {header: maybe}}]\n",
     "transformations[0].read_delimited.header: 'maybe' is not one of"),
    ("paths: [{file: ./d.csv}]\ntransformations: [{read_delimited: {delimiter: '::'}}]\n",
     "transformations[0].read_delimited.delimiter: '::'"),
    ("paths: [{file: ./d.csv}]\ntransformations: [{read_delimited: {encoding: ebcdic}}]\n",
     "transformations[0].read_delimited.encoding: 'ebcdic' is not one of"),
    ("paths: [{file: ./d.csv}]\ntransformations: [{read_delimited: {sep: ';'}}]\n",
     "transformations[0].read_delimited.sep: is not an option"),
    ("paths: [{file: ./d.csv}]\ntransformations: [{read_delimited: {include_path_column: 'yes'}}]\n",
     "include_path_column: must be true or false"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, read_parquet]\n",
     "transformations[1].read_parquet: a second read step"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, {take: 5}]\n",
     "transformations[1].take: cannot be applied lazily"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, {skip: 1}]\n",
     "transformations[1].skip: cannot be applied lazily"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, {filter: 'col(\"a\") > 1'}]\n",
     "transformations[1].filter: cannot be applied lazily"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, {convert_column_types: "
     "[{columns: a, column_type: {datetime: {formats: ['%Y']}}}]}]\n",
     "transformations[1].convert_column_types[0].column_type: 'datetime' with options is not supported"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, {convert_column_types: [{columns: a}]}]\n",
     "transformations[1].convert_column_types[0]: must be a mapping of columns and column_type"),
    ("paths: [{file: ./d.csv}]\ntransformations: [{convert_column_types: []}]\n",
     "transformations[0].convert_column_types: works on columns"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, {frobnicate: 1}]\n",
     "transformations[1].frobnicate: is not a transformation"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delta_lake]\n", "transformations[0].read_delta_lake"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, {keep_columns: {pattern: '[ab]'}}]\n",
     "keep_columns: must be a column name or a list"),
    ("paths: [{file: ./d.csv}]\ntransformations: [{drop_columns: [a]}]\n", "drop_columns: works on columns"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, {extract_columns_from_partition_format: {}}]\n",
     "extract_columns_from_partition_format: needs partition_format"),
    ("paths: [{file: ./d.csv}]\ntransformations: [read_delimited, "
     "{extract_columns_from_partition_format: {partition_format: '{when:yy}/{x}.csv'}}]\n",
     "partition_format: {when:yy}: the date format 'yy' uses 'y'"),
    ("paths: [{file: ./d.csv}]\nquery_source: {handler: x}\n", "query_source: a database query"),
]


@pytest.mark.parametrize("text, fragment", MALFORMED, ids=[f[1][:40] for f in MALFORMED])
def test_a_malformed_mltable_is_one_line_naming_the_file_and_key(tmp_path, text, fragment):
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    (tmp_path / "MLTable").write_text(text)
    with pytest.raises(SpecError) as caught:
        input_from_mltable(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "MLTable")), message
    assert fragment in message, message


def test_a_folder_without_an_mltable_file_says_so(tmp_path):
    with pytest.raises(SpecError, match="needs a file named MLTable"):
        input_from_mltable(tmp_path)


def test_mltable_refuses_what_batchinfer_refuses(tmp_path):
    """The malformed files that are malformed for Azure too (not those batchinfer alone cannot read
    lazily): mltable refuses them as well, so the one-line errors are not batchinfer's own rules."""
    azure_rejects = [text for text, fragment in MALFORMED
                     if any(k in fragment for k in ("is not one of", "is not an MLTable key", "paths: is required",
                                                    "frobnicate", "paths[0]: must be one of"))]
    folders = []
    for i, text in enumerate(azure_rejects):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        (folder / "d.csv").write_text("a,b\n1,2\n")
        (folder / "MLTable").write_text(text)
        folders.append(folder)
    refused = mltable_frames(folders)
    assert all(isinstance(r, MltableRefused) for r in refused), [type(r).__name__ for r in refused]


def test_listing_twice_gives_the_same_mini_batches(tmp_path):
    """--retry-failed and the final digest list the inputs again: the header a later file takes from
    the first one (from_first_file) must not leak from one listing into the next."""
    from batchinfer.inputs import InputPlan
    from batchinfer.spec import JobSpec

    (tmp_path / "a.csv").write_text("id,name,n,x\n" + ROWS)
    (tmp_path / "b.csv").write_text(ROWS)
    (tmp_path / "MLTable").write_text("paths:\n  - pattern: ./*.csv\ntransformations:\n"
                                      "  - read_delimited:\n      header: from_first_file\n")
    spec = JobSpec.model_validate({"name": "abc", "entry_script": "s.py", "inputs": input_from_mltable(tmp_path),
                                   "mini_batch_size": "200"}, context={"base_dir": str(tmp_path)})
    plan = InputPlan(spec)
    first, second = list(plan.mini_batches()), list(plan.mini_batches())
    assert first == second
    names = {(b.table.path.rsplit("/", 1)[-1], b.table.names) for b in first}
    assert names == {("a.csv", None), ("b.csv", ("id", "name", "n", "x"))}  # b.csv has no header line of its own


def test_a_file_list_with_partition_format_partitions_files_as_mltable_names_them(tmp_path, job):
    """A file-list MLTable with extract_columns_from_partition_format: mltable gives each path its
    values as columns; batchinfer gives each file the same values, and partitions files by them."""
    layout = {"user1/winter/disco.wav": 3, "user1/fall/piano.wav": 4, "user2/fall/piano.wav": 5, "user2/spring/piano.wav": 6}
    for name, size in layout.items():
        (tmp_path / "audio" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "audio" / name).write_bytes(b"w" * size)
    (tmp_path / "MLTable").write_text(
        "paths:\n  - pattern: ./audio/*/*/*.wav\ntransformations:\n  - extract_columns_from_partition_format:\n"
        "      partition_format: '{user}/{season}/{genres}.wav'\n")
    native = input_from_mltable(tmp_path)
    assert native["type"] == "file" and native["partition_format"] == "{user}/{season}/{genres}.wav"
    run = job("partition_files.py", inputs=native, partition_keys=["user", "genres"])
    assert run.code == 0, run.stderr
    assert run.summary["mini_batches_total"] == 3
    ours = sorted((row.split(",")[2], int(row.split(",")[1])) for row in run.rows())
    reference = mltable_frames([tmp_path])[0]
    assert not isinstance(reference, MltableRefused), reference
    sizes = {str(tmp_path / "audio" / name): size for name, size in layout.items()}
    theirs = sorted((f"user={r.user};genres={r.genres}", sizes[r.Path]) for r in reference.itertuples())
    assert ours == theirs


def test_a_missing_old_python_fails_saying_how_to_create_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHINFER_OLD_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(RuntimeError, match=r"does not exist: create it with: python3.11 -m venv .venv-old"):
        mltable_frames([tmp_path])
