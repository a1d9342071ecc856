"""Reference for the mnist benchmark: a hand-written Ray ``ActorPool`` of 2 actors, end to end.

    python mnist_actor_pool.py MODEL FOLDER OUTPUT DONE_FILE --temp-dir DIR [--batch 256] [--actors 2]

What a user writes without a framework on top of Ray: ``ray.init`` on this
machine, ``--actors`` actors (``num_cpus=0.5`` each, so 2 fit on 2 CPUs) that
load the Keras model once, and ``ray.util.ActorPool.map_unordered`` over the
sorted paths in lists of ``--batch``; each call decodes its PNGs with PIL and
makes one batched model call. The driver writes one ``"<name>: <digit>"`` line
per image to OUTPUT, then ``time.time()`` of the last row written to DONE_FILE,
then shuts Ray down. Phases go to stderr as ``phase NAME: SECONDS``.

Ray runs on loopback only: the caller sets ``RAY_USAGE_STATS_ENABLED=0``,
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, ``RAY_AUTH_MODE=token`` and a random
``RAY_AUTH_TOKEN`` (and runs this in a network namespace with only loopback
where it can).
"""

import argparse
import os
import sys
import time

T0 = time.time()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray.util import ActorPool


@ray.remote(num_cpus=0.5)
class Scorer:
    """One per actor: loads the model once, scores a list of PNG paths per call."""

    def __init__(self, model_path):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        self.keras = keras
        self.model = keras.models.load_model(model_path)

    def score(self, paths):
        import numpy as np
        from PIL import Image

        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("L"), dtype=np.float32))
        digits = self.keras.ops.convert_to_numpy(self.model(np.stack(images), training=False)).argmax(axis=1)
        return [f"{os.path.basename(p)}: {d}" for p, d in zip(paths, digits)]


def phase(name):
    """Log when a phase ends (seconds since this script started) to stderr, for the report."""
    print(f"phase {name}: {time.time() - T0:.2f}s", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("output")
    parser.add_argument("done_file")
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    phase("import ray")
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2, _temp_dir=args.temp_dir,
             log_to_driver=False)
    phase("ray.init")
    try:
        paths = sorted(os.path.join(args.folder, n) for n in os.listdir(args.folder) if n.endswith(".png"))
        batches = [paths[i:i + args.batch] for i in range(0, len(paths), args.batch)]
        pool = ActorPool([Scorer.remote(os.path.abspath(args.model)) for _ in range(args.actors)])
        with open(args.output, "w", encoding="utf-8") as out:
            for i, lines in enumerate(pool.map_unordered(lambda actor, batch: actor.score.remote(batch), batches)):
                if i == 0:
                    phase("first batch")
                out.write("".join(f"{line}\n" for line in lines))
        with open(args.done_file, "w") as f:
            f.write(repr(time.time()))
        phase("last row written")
    finally:
        ray.shutdown()
        phase("ray.shutdown")


if __name__ == "__main__":
    main()
