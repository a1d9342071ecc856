"""CSV and TSV files are cut only where a row ends: quoted newlines, doubled quotes and CRLF
never lose a row or make a garbage one, for byte sizes and row counts alike.

Each file below holds 200 rows whose ids are ``<file>-000`` .. ``<file>-199``; every
mini-batch size must give back each id exactly once, and the fields as pandas reads
the whole file.
"""

from __future__ import annotations

import collections
import io

import pandas as pd
import pytest

from batchinfer.inputs import InputPlan
from batchinfer.readers import read_table
from batchinfer.spec import load_spec

ROWS = 200


def _field(i: int) -> str:
    """A value that is hard to cut around: newlines, delimiters and doubled quotes inside quotes."""
    return [
        f'"line one {i}\nline two, with a comma"',
        f'"he said ""{i}"", then left"',
        f"plain{i}",
        f'"""quoted"" start\n\n"',
        '""',
        f'"tab\there {i}"',
        f'"{i}\r\nwindows line"',
    ][i % 7]


def _table(name: str, sep: str = ",", newline: str = "\n", trailing: bool = True,
           header: str = "id,text,n", last: str | None = None) -> bytes:
    lines = [header.replace(",", sep)]
    lines += [sep.join([f"{name}-{i:03d}", _field(i), str(i)]) for i in range(ROWS - 1)]
    lines.append(last.replace(",", sep) if last else sep.join([f"{name}-{ROWS - 1:03d}", _field(ROWS - 1), "x"]))
    return (newline.join(lines) + (newline if trailing else "")).encode()


# file name -> content: each a way a naive newline cut goes wrong
FILES = {
    "quoted_newlines.csv": _table("quoted_newlines"),
    "tabs.tsv": _table("tabs", sep="\t"),
    "crlf.csv": _table("crlf", newline="\r\n"),
    "no_trailing_newline.csv": _table("no_trailing_newline", trailing=False),
    "header_newline.csv": _table("header_newline", header='id,"text\nwith a newline",n'),
    "quote_heavy_last_row.csv": _table(
        "quote_heavy_last_row", trailing=False,
        last='quote_heavy_last_row-199,"""""""\n,\n""\n""""","""\n"""',
    ),
    "stray_quotes.csv": _table("stray_quotes").replace(b"plain", b'5" plain'),  # a quote mid-field is a character
}
SIZES = ["1", "100", "500", "4KB", "1MB", "1rows", "7rows", "64rows", "199rows", "5000rows"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    for name, content in FILES.items():
        (folder / name).write_bytes(content)
    return folder


def _text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every value as text (an empty field read as NaN becomes ''), to compare frames cell by cell."""
    return frame.astype(object).where(frame.notna(), "").astype(str)


def _whole(path) -> pd.DataFrame:
    sep = "\t" if path.suffix == ".tsv" else ","
    return _text(pd.read_csv(io.BytesIO(path.read_bytes()), sep=sep))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(FILES))
def test_slices_hold_every_row_once_as_pandas_reads_the_whole_file(tables, size, name):
    (tables / "job.yaml").write_text(
        f"entry_script: x.py\ninputs: {{type: tabular, path: {name}}}\nmini_batch_size: {size}\n"
    )
    plan = InputPlan(load_spec(tables / "job.yaml"))
    frames = [read_table(batch.table, {}) for batch in plan.mini_batches()]
    got = pd.concat([_text(frame) for frame in frames], ignore_index=True)
    whole = _whole(tables / name)
    assert list(got["id"]) == [f"{name.split('.')[0]}-{i:03d}" for i in range(ROWS)]
    assert got.equals(whole), name
    if size.endswith("rows"):
        count = int(size[:-4])
        assert [len(f) for f in frames[:-1]] == [count] * (len(frames) - 1)


@pytest.mark.parametrize("size", ["500", "3KB", "13rows"])
def test_a_run_over_quoted_newlines_scores_every_row_exactly_once(tmp_path, job, size):
    (tmp_path / "t").mkdir()
    for name, content in FILES.items():
        (tmp_path / "t" / name).write_bytes(content)
    run = job("tabular_ids.py", inputs={"type": "tabular", "path": "t"}, mini_batch_size=size)
    assert run.code == 0, run.stderr
    ids = collections.Counter(row.split()[0] for row in run.rows())
    expected = {f"{name.split('.')[0]}-{i:03d}" for name in FILES for i in range(ROWS)}
    assert set(ids) == expected and set(ids.values()) == {1}
    summary = run.summary
    assert summary["items_total"] == summary["items_succeeded"] == ROWS * len(FILES)
    assert summary["items_failed"] == 0
