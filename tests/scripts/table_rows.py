"""Tabular: every row of the mini-batch as one JSON line: its columns, values as text, dtypes."""

import json


def _text(value):
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


def run(mini_batch):
    columns = [str(c) for c in mini_batch.columns]
    dtypes = [str(t) for t in mini_batch.dtypes]
    return [
        json.dumps({"columns": columns, "dtypes": dtypes, "values": [_text(v) for v in row]})
        for row in mini_batch.itertuples(index=False, name=None)
    ]
