"""Executors: where the workers run. ``base.py`` states the contract every backend keeps and makes the
spec's backend's executor; ``local.py``: processes that batchinfer starts itself (each runs
``local_worker.py``); ``ray.py``: actors on a Ray cluster. This package imports no backend itself.

Only the ``batchinfer`` command adopts its workers' orphans (:func:`own_process`, called by
``cli.main``): ``batchinfer.run()`` called inside someone else's program (a notebook, Airflow,
pytest) must never kill or reap that program's own children, which a child subreaper cannot tell
from its workers' orphans.
"""

_owns_process = False


def own_process() -> None:
    """Say that this process is the ``batchinfer`` command, not a caller of ``batchinfer.run()``: its
    workers' orphaned children may then be adopted, and killed when the job ends."""
    global _owns_process
    _owns_process = True


def owns_process() -> bool:
    """Whether :func:`own_process` was called in this process."""
    return _owns_process
