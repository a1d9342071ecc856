"""The worker's side of the script helpers: set once per worker (by ``worker.ScriptRuntime``, on every
backend), read by ``batchinfer.model_path`` & co."""

from __future__ import annotations

import logging
from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeContext:
    """What the helpers answer inside a worker process."""

    models: dict[str, str]
    side_inputs: dict[str, str]
    output_dir: str
    log_dir: str
    working_dir: str
    worker_name: str
    node_id: str


_context: RuntimeContext | None = None


def set_context(context: RuntimeContext) -> None:
    """Called by the worker's runtime before it imports the entry script."""
    global _context
    _context = context


def get_context() -> RuntimeContext:
    """The current worker's context; a clear error when called outside a batchinfer worker."""
    if _context is None:
        raise RuntimeError(
            "batchinfer helpers only work inside a script run by 'batchinfer run' "
            "(they were called outside a batchinfer worker)"
        )
    return _context


def current_context() -> RuntimeContext | None:
    """The current worker's context, or None outside a batchinfer worker (a pipeline's command step)."""
    return _context


def _named(kind: str, names: dict[str, str], name: str) -> str:
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise KeyError(f"no {kind} named {name!r} in the job spec (known: {known})")
    return names[name]


def model_path(name: str) -> str:
    """Local path of the model ``models[name]`` of the job spec."""
    return _named("model", get_context().models, name)


def side_input(name: str) -> str:
    """Local path of the side input ``side_inputs[name]`` of the job spec."""
    return _named("side input", get_context().side_inputs, name)


def output_dir() -> str:
    """The job's output folder, where a ``summary_only`` script writes its own files."""
    return get_context().output_dir


def node_id() -> str:
    """The id of the node (machine) this worker runs on: Ray's node id with ``backend: ray``; locally
    ``<hostname>-<n>``, n the local node (worker index // ``process_count_per_node``), so
    ``<hostname>-0`` for every worker of a one-node job."""
    return get_context().node_id


def logger() -> logging.Logger:
    """A logger writing to this worker's log file (``logs/worker-N.log``)."""
    return logging.getLogger("batchinfer.script")
