"""identify.py's rows, and a file of its own per mini-batch in EntryScript().output_dir (the port folder)."""

import os

from azureml_user.parallel_run import EntryScript

from identify import init, run as identify  # noqa: F401 - init is the entry script's too


def run(mini_batch):
    rows = identify(mini_batch)
    with open(os.path.join(EntryScript().output_dir, os.path.basename(mini_batch[0]) + ".seen"), "w") as f:
        f.write("\n".join(rows))
    return rows
