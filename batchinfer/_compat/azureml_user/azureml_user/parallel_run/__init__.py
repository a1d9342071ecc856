"""Stand-in for ``azureml_user.parallel_run``: ParallelRunStep's ``EntryScript`` helper, backed by batchinfer."""

from __future__ import annotations

import logging

from batchinfer._runtime import get_context, logger


class EntryScript:
    """What ParallelRunStep scripts ask ``EntryScript()`` for, answered from the batchinfer worker."""

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
