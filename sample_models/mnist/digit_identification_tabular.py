"""batchinfer entry script: identify handwritten digits stored as table rows.

Each row holds one digit: an ``id`` column and 784 pixel columns ``p0`` ..
``p783`` (0..255, row-major 28x28). batchinfer imports this file in each
worker process, calls ``init()`` once, then ``run(mini_batch)`` with a
``pandas.DataFrame`` for every mini-batch of rows. Run it with::

    batchinfer run sample_data/mnist_tabular_job.yaml

``run()`` returns one ``"<id>: <digit>"`` string per row.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np

import batchinfer
import keras

PIXEL_COLUMNS = [f"p{i}" for i in range(784)]

model = None


def init():
    """Load the model named ``mnist`` under ``models:`` in the job spec, once per worker."""
    global model
    model = keras.models.load_model(batchinfer.model_path("mnist"))


def run(mini_batch):
    """Score a DataFrame of digits with one batched model call."""
    if len(mini_batch) == 0:
        return []
    missing = [c for c in ["id", *PIXEL_COLUMNS] if c not in mini_batch.columns]
    if missing:
        raise ValueError(f"mini-batch lacks columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    # Raw 0..255 pixels: the model scales them to [0, 1] itself.
    batch = mini_batch[PIXEL_COLUMNS].to_numpy(dtype=np.float32).reshape(-1, 28, 28)
    probabilities = keras.ops.convert_to_numpy(model(batch, training=False))
    digits = probabilities.argmax(axis=1)
    return [f"{row_id}: {digit}" for row_id, digit in zip(mini_batch["id"], digits)]
