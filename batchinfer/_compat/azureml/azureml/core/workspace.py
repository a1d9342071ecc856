"""Stand-in for ``azureml.core.workspace``: ``Workspace`` imports; using it raises one error naming the API."""

from azureml.core import Workspace

from batchinfer._compat.cloud_only import missing_names

__all__ = ["Workspace"]
__getattr__ = missing_names("azureml.core.workspace", "Workspace")
