"""Stand-in for ``azureml.core.dataset``: ``Dataset.get_by_name`` answers from the job spec's ``side_inputs``."""

from batchinfer._compat.azure_data import Dataset
from batchinfer._compat.cloud_only import missing_names

__all__ = ["Dataset"]
__getattr__ = missing_names("azureml.core.dataset", "Dataset")
