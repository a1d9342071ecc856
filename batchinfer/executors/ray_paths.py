"""What ``backend: ray`` refuses in a spec before any cluster is reached: paths that only this machine
sees, on several nodes. Imports no Ray: the registry (``base.check_backend``) runs it for ``run``,
``validate`` and ``plan`` alike.
"""

from __future__ import annotations

from typing import Any

from batchinfer.errors import InputError
from batchinfer.spec import is_url


def check_paths(spec: Any) -> None:
    """On more than one node, every input, model and side input must be a URL, unless the spec says
    that every node mounts the same paths (``shared_filesystem: true``): an actor reads them itself."""
    if spec.node_count <= 1 or spec.shared_filesystem:
        return
    # models and side inputs at URLs are fetched into this machine's cache (modelcache.py), which
    # the actors are given: on other nodes, that is a local path too
    named = [("model", loc.path) for loc in spec.models.values()]
    named += [("side input", loc.path) for loc in spec.side_inputs.values()]
    named += [("input", path) for item in spec.inputs for path in item.path if not is_url(path)]
    if named:
        what, path = named[0]
        hint = ("use a URL (s3://, az://, gs://, https://), or a path every node mounts and say so with "
                "shared_filesystem: true")
        if what != "input":
            hint = "put it on a path every node mounts and say so with shared_filesystem: true"
        raise InputError(f"the {what} {path} is read from this machine, which the other nodes of a Ray cluster "
                         f"do not see (node_count {spec.node_count})", hint=hint)

