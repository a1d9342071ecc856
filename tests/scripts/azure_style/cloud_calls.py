"""Uses an Azure ML API that needs the cloud, as Azure's scripts and notebooks do; which one comes from --call.

--where init (default) makes the call in init(), --where run in run().
"""

import argparse
import os

CALLS = {
    "Workspace.from_config": "from azureml.core import Workspace\nWorkspace.from_config()",
    "Workspace()": "from azureml.core import Workspace\nWorkspace('sub', 'rg', 'ws')",
    "Experiment()": "from azureml.core import Experiment, Run\nExperiment(Run.get_context().experiment.workspace, 'x')",
    "Dataset.File.from_files": "from azureml.core import Dataset\nDataset.File.from_files(path='x')",
    "Dataset.Tabular.from_delimited_files": "from azureml.core.dataset import Dataset\n"
                                            "Dataset.Tabular.from_delimited_files(path='x')",
    "Model.register": "from azureml.core.model import Model\nModel.register(None, 'm.pkl', 'm')",
    "Run(experiment, run_id)": "from azureml.core import Run\nRun(None, 'abc')",
    "Run.get_metrics": "from azureml.core import Run\nRun.get_context().get_metrics()",
    "Workspace.datastores": "from azureml.core import Run\nRun.get_context().experiment.workspace.datastores['x']",
    "Datastore.get": "from azureml.core import Datastore\nDatastore.get(None, 'workspaceblobstore')",
    "NoSuchThing": "from azureml.core import NoSuchThing",
    "azureml.core.compute": "from azureml.core.compute import AmlCompute",
    "azureml.pipeline": "from azureml.pipeline.steps import ParallelRunStep",
    "EntryScript.config": "from azureml_user.parallel_run import EntryScript\nEntryScript().config['x']",
}


def _parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("--call", required=True)
    parser.add_argument("--where", default="init")
    args, _ = parser.parse_known_args()
    return args


def init():
    global args
    args = _parse()
    if args.where == "init":
        exec(CALLS[args.call], {})  # noqa: S102 - the call, imports included, as the script would write it


def run(mini_batch):
    if args.where == "run":
        exec(CALLS[args.call], {})  # noqa: S102 - the call, imports included, as the script would write it
    return [os.path.basename(p) for p in mini_batch]
