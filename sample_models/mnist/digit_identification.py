"""batchinfer entry script: identify the handwritten digit in each PNG file.

The batchinfer counterpart of the MNIST script in Azure ML's ParallelRunStep
tutorial. batchinfer imports this file in each worker process, calls
``init()`` once, then ``run(mini_batch)`` for every mini-batch of files.
Run it with::

    batchinfer run sample_data/mnist_job.yaml

``run()`` returns one ``"<file name>: <digit>"`` string per image; with
``output_action: append_row`` each becomes a line of ``parallel_run_step.txt``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np
from PIL import Image

import batchinfer
import keras

model = None


def init():
    """Load the model named ``mnist`` under ``models:`` in the job spec, once per worker."""
    global model
    model = keras.models.load_model(batchinfer.model_path("mnist"))


def read_digit(path):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    if pixels.shape != (28, 28):
        raise ValueError(f"{path}: expected a 28x28 image, got {pixels.shape[1]}x{pixels.shape[0]}")
    return pixels


def run(mini_batch):
    """Score a list of local PNG paths with one batched model call."""
    if not mini_batch:
        return []
    # Raw 0..255 pixels: the model scales them to [0, 1] itself.
    batch = np.stack([read_digit(path) for path in mini_batch])
    probabilities = keras.ops.convert_to_numpy(model(batch, training=False))
    digits = probabilities.argmax(axis=1)
    return [f"{os.path.basename(path)}: {digit}" for path, digit in zip(mini_batch, digits)]
