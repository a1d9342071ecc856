"""Reference for the mnist benchmark: a hand-written ``multiprocessing.Pool``, end to end.

    python mnist_pool.py MODEL FOLDER OUTPUT [--batch 256] [--processes 2]

A spawn ``Pool(--processes)`` whose initializer loads the Keras model once per
process; ``imap_unordered`` (chunksize 1) over the sorted paths in lists of
``--batch``; each task decodes its PNGs with PIL and makes one batched model
call. The parent writes one ``"<name>: <digit>"`` line per image to OUTPUT.
"""

import argparse
import multiprocessing
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the spawned processes

model = None


def load(model_path):
    """Pool initializer: import Keras and load the model, once per process."""
    global model
    import keras

    model = keras.models.load_model(model_path)


def score(paths):
    """One batched model call over the PNGs at ``paths``; one line per image."""
    import keras
    import numpy as np
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("L"), dtype=np.float32))
    digits = keras.ops.convert_to_numpy(model(np.stack(images), training=False)).argmax(axis=1)
    return [f"{os.path.basename(p)}: {d}" for p, d in zip(paths, digits)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("output")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    paths = sorted(os.path.join(args.folder, n) for n in os.listdir(args.folder) if n.endswith(".png"))
    batches = [paths[i:i + args.batch] for i in range(0, len(paths), args.batch)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.processes, initializer=load, initargs=(os.path.abspath(args.model),)) as pool, \
            open(args.output, "w", encoding="utf-8") as out:
        out.writelines("".join(f"{line}\n" for line in lines)
                       for lines in pool.imap_unordered(score, batches, chunksize=1))


if __name__ == "__main__":
    main()
