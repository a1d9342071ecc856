"""Stand-in for ``azureml.core.run``: ``Run.get_context()`` is the local run of the job."""

from batchinfer._compat.azure_run import Run
from batchinfer._compat.cloud_only import missing_names

__all__ = ["Run"]
__getattr__ = missing_names("azureml.core.run", "Run")
