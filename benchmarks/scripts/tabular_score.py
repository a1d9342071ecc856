"""The vectorised scoring function of the tabular benchmark, shared by batchinfer's script and the reference.

A weighted sum of the ten feature columns ``f0`` .. ``f9`` and a threshold:
returns a DataFrame with ``id`` and ``label`` (1 when the sum exceeds the
threshold), written as ``"<id> <label>"`` lines.
"""

import numpy as np
import pandas as pd

FEATURES = [f"f{i}" for i in range(10)]
WEIGHTS = np.array([0.8, -0.5, 0.3, 0.0, 1.2, -0.7, 0.25, 0.6, -1.1, 0.4])
THRESHOLD = 0.1


def score(frame):
    """id and 0/1 label for every row of ``frame``."""
    weighted = frame[FEATURES].to_numpy(dtype=np.float64) @ WEIGHTS
    return pd.DataFrame({"id": frame["id"].to_numpy(), "label": (weighted > THRESHOLD).astype(np.int8)})


def to_lines(result):
    """The bytes batchinfer's ``txt`` format writes for a DataFrame (values separated by spaces)."""
    return result.to_csv(sep=" ", header=False, index=False, lineterminator="\n").encode()
