"""batchinfer: run an ``init()`` / ``run(mini_batch)`` script over many inputs in a pool of workers.

Inside an entry script, ``import batchinfer`` gives the helpers below, the same on every backend
(``node_id()`` names the machine: ``<hostname>-<n>`` locally, Ray's node id on Ray). From Python (a
notebook, an Airflow task), ``batchinfer.run()``, ``batchinfer.plan()`` and
``batchinfer.load_spec()`` run and inspect jobs and ``batchinfer.report()`` draws one (see ``batchinfer/api.py``). This module stays
light: every worker and the command line import it, and ``--help`` must be fast, so the API is
imported on first use.
"""

from typing import Any

from batchinfer._runtime import logger, model_path, node_id, output_dir, side_input

__version__ = "0.1.0"
_API = ("run", "plan", "report", "load_spec", "RunSummary", "PipelineSummary", "Plan")
__all__ = ["logger", "model_path", "node_id", "output_dir", "side_input", "__version__", *_API]


def __getattr__(name: str) -> Any:
    """The Python API, imported when first used (PEP 562)."""
    if name in _API:
        from batchinfer import api

        return getattr(api, name)
    raise AttributeError(f"module 'batchinfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
