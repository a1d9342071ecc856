"""Microsoft's ``mltable`` package as the reference for how Azure reads an MLTable folder.

``mltable_frames(folders)`` runs ``mltable.load(folder).to_pandas_dataframe()`` for each
folder in the old-versions interpreter (``BATCHINFER_OLD_PYTHON``, default
``<repo>/.venv-old/bin/python``: ``mltable`` pulls in azureml-dataprep, which pins
``pandas<3`` and ``pyarrow<26``, so it cannot live in the project's own environment).
The interpreter runs under ``unshare --net``: with no network at all, nothing it does
can reach outside this machine (it does try a DNS lookup for its telemetry on exit).

The frames come back as plain Python values (a pickle of lists, never of pandas objects,
which do not travel between pandas 1.5 and 2+; timestamps as ISO text, azureml's
own objects such as a file list's StreamInfo as their text) and are rebuilt here with the same
column names and, where numpy has the dtype, the same dtypes; ``frame.attrs["dtypes"]``
keeps mltable's dtype names. A folder that mltable refuses comes back as the exception's
type and message (``MltableRefused``), so tests can compare refusals too.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OLD_PYTHON_VARIABLE = "BATCHINFER_OLD_PYTHON"
HOW_TO_CREATE = (
    "create it with: python3.11 -m venv .venv-old && .venv-old/bin/pip install "
    "'mltable==1.7.*' 'pandas==1.5.3' 'numpy==1.26.4' 'pyarrow<26' (or the CI script that does so), "
    f"or set {OLD_PYTHON_VARIABLE} to a Python that has mltable"
)

# Runs in the old interpreter: argv = [pickle to write, folder...]
_LOADER = r"""
import pickle, sys
import mltable
import pandas as pd
def plain(value):
    # only builtins travel: a Timestamp as ISO text, anything else of azureml's (StreamInfo) as its text
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is None or type(value) in (str, int, float, bool, bytes):
        return value
    return str(value)

import os
out = [os.readlink("/proc/self/ns/net")]  # the network namespace it ran in: checked to be a new, empty one
for folder in sys.argv[2:]:
    try:
        frame = mltable.load(folder).to_pandas_dataframe()
    except Exception as exc:
        out.append({"error": type(exc).__name__, "message": str(exc)})
        continue
    columns = [str(c) for c in frame.columns]
    data = []
    for i in range(len(columns)):
        column = frame.iloc[:, i]
        if column.dtype.kind == "M":  # pandas Timestamps do not unpickle in another pandas: ISO text
            data.append([None if v is pd.NaT else v.isoformat() for v in column.tolist()])
        else:
            data.append([plain(v) for v in column.astype(object).tolist()])
    out.append({"columns": columns, "dtypes": [str(t) for t in frame.dtypes], "data": data})
with open(sys.argv[1], "wb") as f:
    pickle.dump(out, f, protocol=4)
"""


class MltableRefused(Exception):
    """mltable could not load a folder: ``kind`` is its exception's type, the message its text."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def old_python() -> str:
    """The old-versions interpreter; a clear failure (never a skip) when it is missing."""
    path = os.environ.get(OLD_PYTHON_VARIABLE) or str(REPO / ".venv-old" / "bin" / "python")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"the old-versions Python {path} does not exist: {HOW_TO_CREATE}")
    return path


def _frame(entry: dict[str, Any]):
    import numpy as np
    import pandas as pd

    if "error" in entry:
        return MltableRefused(entry["error"], entry["message"])
    series = {}
    for name, dtype, values in zip(entry["columns"], entry["dtypes"], entry["data"]):
        column = pd.Series(values, dtype=object)
        try:
            if dtype.startswith("datetime64"):
                column = pd.to_datetime(column)
            elif dtype != "object":
                column = column.astype(np.dtype(dtype))
        except (TypeError, ValueError):
            pass  # kept as objects; attrs["dtypes"] still says what mltable had
        series[name] = column
    frame = pd.DataFrame(series, columns=entry["columns"])
    frame.attrs["dtypes"] = dict(zip(entry["columns"], entry["dtypes"]))
    return frame


def mltable_frames(folders: list[str | Path]) -> list[Any]:
    """``mltable.load(f).to_pandas_dataframe()`` for each folder, in one old-versions process.

    Each result is a DataFrame, or an :class:`MltableRefused` when mltable raised.
    """
    python = old_python()
    if shutil.which("unshare") is None:
        raise RuntimeError("'unshare' (util-linux) is needed to run mltable with the network off")
    with tempfile.TemporaryDirectory(prefix="mltable-ref-") as scratch:
        result = Path(scratch) / "frames.pickle"
        # cwd: azureml-dataprep writes logs/azureml/... into the working folder
        # root may make a network namespace; anyone else makes one inside a user namespace of their own
        unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
        proc = subprocess.run(
            [*unshare, python, "-c", _LOADER, str(result), *(str(Path(f).resolve()) for f in folders)],
            cwd=scratch, capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError(f"the mltable reference failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        with result.open("rb") as f:
            namespace, *entries = pickle.load(f)  # noqa: S301 - written just now by our own loader
    if namespace == os.readlink("/proc/self/ns/net"):
        raise RuntimeError("the mltable reference ran with this machine's network: it must run without one")
    return [_frame(e) for e in entries]


def mltable_frame(folder: str | Path):
    """``mltable.load(folder).to_pandas_dataframe()``; raises :class:`MltableRefused` when mltable did."""
    frame = mltable_frames([folder])[0]
    if isinstance(frame, MltableRefused):
        raise frame
    return frame
