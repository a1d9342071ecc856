"""Stand-in for ``azureml.core.model``: ``Model`` answers from the job spec's ``models``."""

from batchinfer._compat.azure_data import Model
from batchinfer._compat.cloud_only import missing_names

__all__ = ["Model"]
__getattr__ = missing_names("azureml.core.model", "Model")
