"""What ``backend: ray`` refuses (or warns of) in a spec before any cluster is reached: paths that only
this machine sees, on several nodes. Imports no Ray: the registry (``base.check_backend``) runs it for
``run``, ``validate`` and ``plan`` alike.
"""

from __future__ import annotations

import logging
from typing import Any

from batchinfer.errors import InputError
from batchinfer.spec import is_url

log = logging.getLogger("batchinfer.executor")
_warned: set[tuple[str, bool]] = set()  # (message, a log handler existed): once on stderr, once in job.log


def check_paths(spec: Any) -> None:
    """On more than one node, every input must be a URL and models and side inputs are refused, unless
    the spec says that every node mounts the same paths (``shared_filesystem: true``): an actor reads
    them itself. Files the script writes under ``output_dir()`` would stay on each node: a warning."""
    if spec.node_count <= 1 or spec.shared_filesystem:
        return
    nodes = f"node_count {spec.node_count}, shared_filesystem false"
    for what, locations in (("model", spec.models), ("side input", spec.side_inputs)):
        for loc in locations.values():
            if is_url(loc.path):
                # fetched into this machine's cache (modelcache.py), whose path the actors are given
                raise InputError(
                    f"the {what} {loc.path} is a URL, fetched into the cache of this machine only, which the "
                    f"other nodes of a Ray cluster do not see ({nodes})",
                    hint="set shared_filesystem: true with BATCHINFER_CACHE_DIR on a folder every node mounts, "
                         "or give a path every node mounts")
            raise InputError(
                f"the {what} {loc.path} is read from this machine, which the other nodes of a Ray cluster do "
                f"not see ({nodes})", hint="put it on a path every node mounts and say so with shared_filesystem: true")
    for item in spec.inputs:
        for path in item.path:
            if not is_url(path):
                raise InputError(
                    f"the input {path} is read from this machine, which the other nodes of a Ray cluster do not "
                    f"see ({nodes})", hint="use a URL (s3://, az://, gs://, https://), or a path every node "
                                           "mounts and say so with shared_filesystem: true")
    _warn(f"backend ray on {spec.node_count} nodes without shared_filesystem: files the script writes under "
          "output_dir() (AZUREML_BI_OUTPUT_PATH, ${{outputs.*}}) stay on the node that wrote them, only rows come "
          "back; for such files use an output folder every node mounts and shared_filesystem: true")


def _warn(message: str) -> None:
    """A warning once before job.log exists (the terminal) and once in job.log."""
    key = (message, log.hasHandlers())
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)
