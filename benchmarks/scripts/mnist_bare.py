"""Reference for the mnist benchmark: the bare batched TensorFlow loop, in one process.

    python mnist_bare.py MODEL FOLDER OUTPUT [--batch 256]

Loads the Keras model, decodes the folder's PNGs (sorted names) with PIL,
calls ``model(batch, training=False)`` once per ``--batch`` images and writes
one ``"<name>: <digit>"`` line per image, as the sample entry script does.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import keras
import numpy as np
from PIL import Image


def read_digit(path):
    """Raw 0..255 float32 pixels of one 28x28 PNG (the model scales them itself)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("output")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    model = keras.models.load_model(args.model)
    names = sorted(n for n in os.listdir(args.folder) if n.endswith(".png"))
    with open(args.output, "w", encoding="utf-8") as out:
        for start in range(0, len(names), args.batch):
            chunk = names[start:start + args.batch]
            batch = np.stack([read_digit(os.path.join(args.folder, n)) for n in chunk])
            digits = keras.ops.convert_to_numpy(model(batch, training=False)).argmax(axis=1)
            out.write("".join(f"{n}: {d}\n" for n, d in zip(chunk, digits)))


if __name__ == "__main__":
    main()
