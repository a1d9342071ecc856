"""Stand-in for ``azureml_user.parallel_run``: ParallelRunStep's ``EntryScript`` helper, backed by batchinfer."""

from __future__ import annotations

import logging

from batchinfer._compat.cloud_only import ApiObject, missing_names
from batchinfer._runtime import get_context, logger


class EntryScript(ApiObject):
    """What ParallelRunStep scripts ask ``EntryScript()`` for, answered from the batchinfer worker."""

    _api = "azureml_user.parallel_run.EntryScript"
    _hint = "EntryScript here offers logger, log_dir, output_dir, working_dir, agent_name and node_id"

    def __init__(self, logging_level: int | str | None = None) -> None:
        self.logging_level = logging_level  # the job spec's logging_level decides; kept for scripts that read it

    def config_log(self) -> None:
        """Nothing to set up: the logger already writes to this worker's log file."""

    @property
    def logger(self) -> logging.Logger:
        """A logger writing to this worker's log file."""
        return logger()

    @property
    def log_dir(self) -> str:
        """The job's log folder."""
        return get_context().log_dir

    @property
    def output_dir(self) -> str:
        """The job's output folder."""
        return get_context().output_dir

    @property
    def working_dir(self) -> str:
        """This worker's private working folder."""
        return get_context().working_dir

    @property
    def agent_name(self) -> str:
        """This worker's name, e.g. ``worker-0``."""
        return get_context().worker_name

    @property
    def node_id(self) -> str:
        """The id of the node this worker runs on."""
        return get_context().node_id


__getattr__ = missing_names("azureml_user.parallel_run", "EntryScript")
