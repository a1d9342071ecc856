"""A side input registered as a dataset (an MLTable folder), read the way Azure's scripts read one."""

from azureml.core import Dataset, Run


def init():
    global table, files
    dataset = Dataset.get_by_name(Run.get_context().experiment.workspace, "lookup")
    files = dataset.to_path()
    table = dataset.to_pandas_dataframe()


def run(mini_batch):
    return [f"{files} {list(table.columns)} {table.values.tolist()}" for _ in mini_batch]
