"""batchinfer: run an ``init()`` / ``run(mini_batch)`` script over many inputs in a pool of workers.

Inside an entry script, ``import batchinfer`` gives the helpers below. This
module stays light: the command line imports it too, and ``--help`` must be fast.
"""

from batchinfer._runtime import logger, model_path, node_id, output_dir, side_input

__version__ = "0.1.0"
__all__ = ["logger", "model_path", "node_id", "output_dir", "side_input", "__version__"]
