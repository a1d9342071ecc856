"""Stand-in for ``azureml.core`` when the Azure ML SDK is not installed (see ``batchinfer/_compat``).

``Model``, ``Run`` and ``Dataset`` have local meanings; the cloud's classes import,
and using them raises one error naming the API; any other name is an ImportError.
"""

from batchinfer._compat.azure_data import Dataset, Model
from batchinfer._compat.azure_run import Run
from batchinfer._compat.cloud_only import cloud_only_class, missing_names

Workspace = cloud_only_class("azureml.core.Workspace")
Experiment = cloud_only_class("azureml.core.Experiment")
Datastore = cloud_only_class("azureml.core.Datastore")
Environment = cloud_only_class("azureml.core.Environment")
ComputeTarget = cloud_only_class("azureml.core.ComputeTarget")
ScriptRunConfig = cloud_only_class("azureml.core.ScriptRunConfig")
RunConfiguration = cloud_only_class("azureml.core.RunConfiguration")
Keyvault = cloud_only_class("azureml.core.Keyvault")

__all__ = ["ComputeTarget", "Dataset", "Datastore", "Environment", "Experiment", "Keyvault", "Model", "Run",
           "RunConfiguration", "ScriptRunConfig", "Workspace"]
__getattr__ = missing_names("azureml.core", ", ".join(__all__))
