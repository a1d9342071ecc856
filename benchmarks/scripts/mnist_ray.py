"""Reference for the mnist benchmark: Ray Data with an actor pool of 2, end to end.

    python mnist_ray.py MODEL FOLDER OUTPUT DONE_FILE --source read_images|from_items --temp-dir DIR

``--source read_images``: ``ray.data.read_images(FOLDER, mode="L",
include_paths=True)`` decodes the PNGs in Ray's read tasks; ``from_items``:
``ray.data.from_items`` of the sorted paths, decoded with PIL in the actors
(as the bare loop and batchinfer's entry script do). Either way
``map_batches`` runs a class that loads the Keras model once per actor
(``concurrency=2``, ``num_cpus=0.5``: on 2 CPUs, actors at 1 CPU each would
leave no slot for the read task), ``batch_size=256``. The driver writes one
``"<name>: <digit>"`` line per image to OUTPUT, then ``time.time()`` of the
last row written to DONE_FILE, then shuts Ray down.

Ray runs on loopback only: the caller sets ``RAY_USAGE_STATS_ENABLED=0``,
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, ``RAY_AUTH_MODE=token`` and a random
``RAY_AUTH_TOKEN`` in the environment (and runs this in a network namespace
with only loopback where it can).
"""

import argparse
import os
import sys
import time

T0 = time.time()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np
import ray


class Predictor:
    """One per actor: loads the model once, scores one batch per call."""

    def __init__(self, model_path, source):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        self.keras = keras
        self.model = keras.models.load_model(model_path)
        self.source = source

    def __call__(self, batch):
        if self.source == "read_images":
            pixels = np.asarray(batch["image"], dtype=np.float32)
            names = [os.path.basename(p) for p in batch["path"]]
        else:
            from PIL import Image

            paths = list(batch["item"])
            images = []
            for path in paths:
                with Image.open(path) as image:
                    images.append(np.asarray(image.convert("L"), dtype=np.float32))
            pixels = np.stack(images)
            names = [os.path.basename(p) for p in paths]
        digits = self.keras.ops.convert_to_numpy(self.model(pixels, training=False)).argmax(axis=1)
        return {"line": np.array([f"{n}: {d}" for n, d in zip(names, digits)])}


def phase(name):
    """Log when a phase ends (seconds since this script started) to stderr, for the report."""
    print(f"phase {name}: {time.time() - T0:.2f}s", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("output")
    parser.add_argument("done_file")
    parser.add_argument("--source", choices=["read_images", "from_items"], default="read_images")
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    phase("import ray")
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=2,
        _temp_dir=args.temp_dir,
        log_to_driver=False,
    )
    phase("ray.init")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        if args.source == "read_images":
            ds = ray.data.read_images(args.folder, mode="L", include_paths=True)
        else:
            paths = sorted(os.path.join(args.folder, n) for n in os.listdir(args.folder) if n.endswith(".png"))
            ds = ray.data.from_items(paths)
        ds = ds.map_batches(
            Predictor,
            fn_constructor_args=(os.path.abspath(args.model), args.source),
            batch_size=args.batch,
            batch_format="numpy",
            concurrency=2,
            num_cpus=0.5,
        )
        with open(args.output, "w", encoding="utf-8") as out:
            for i, batch in enumerate(ds.iter_batches(batch_size=None, batch_format="numpy")):
                if i == 0:
                    phase("first batch")
                out.write("".join(f"{line}\n" for line in batch["line"]))
        with open(args.done_file, "w") as f:
            f.write(repr(time.time()))
        phase("last row written")
    finally:
        ray.shutdown()
        phase("ray.shutdown")


if __name__ == "__main__":
    main()
