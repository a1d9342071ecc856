"""Local meanings of the Azure ML objects that scoring scripts use.

``azureml/`` and ``azureml_user/`` hold the stand-in packages that a worker appends to
``sys.path`` (last: the real Azure packages win when installed); they only re-export
what the modules of this package implement, so that batchinfer itself (the worker's
``mini_batch_context``) can use the same objects whichever ``azureml`` is installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

STAND_IN_PATHS = tuple(str(Path(__file__).parent / name) for name in ("azureml_user", "azureml"))


def command_step_environment(environ: Mapping[str, str], log_dir: str | None) -> dict[str, str]:
    """The environment of a subprocess (a pipeline's command step) whose script may use Azure's helpers.

    ``batchinfer`` and the stand-ins go at the end of ``PYTHONPATH`` (the real Azure packages,
    when installed, still win), and ``BATCHINFER_LOG_DIR`` makes ``Run.get_context()`` keep its
    metrics and uploads in ``log_dir`` as a worker's run does (without it they go to stderr).
    """
    package_root = Path(__file__).resolve().parent.parent.parent
    # a source checkout must be importable too; a site-packages folder is not added (the step may run another
    # Python, which must not pick up this one's compiled packages)
    extra = list(STAND_IN_PATHS)
    if package_root.name not in ("site-packages", "dist-packages"):
        extra.insert(0, str(package_root))
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths += [p for p in extra if p not in paths]
    environment = {**environ, "PYTHONPATH": os.pathsep.join(paths)}
    if log_dir is not None:
        environment["BATCHINFER_LOG_DIR"] = log_dir
    else:
        environment.pop("BATCHINFER_LOG_DIR", None)
    return environment
