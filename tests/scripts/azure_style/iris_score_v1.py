"""In the shape of the v1 notebook's iris scoring script: Model from azureml.core.model, EntryScript's
logger, --model_name read with parse_known_args, a pickled model, a DataFrame mini-batch."""

import argparse
import pickle

from azureml.core.model import Model
from azureml_user.parallel_run import EntryScript


def init():
    global classifier
    logger = EntryScript().logger
    logger.info("init() called")
    parser = argparse.ArgumentParser(description="iris scoring")
    parser.add_argument("--model_name", dest="model_name", required=True)
    args, _unknown = parser.parse_known_args()
    with open(Model.get_model_path(args.model_name), "rb") as f:
        classifier = pickle.load(f)


def run(input_data):
    EntryScript().logger.info("run() got %d rows", len(input_data))
    predictions = classifier.predict(input_data)
    # Azure's script assigns predictions.reshape((n, 1)), which only pandas < 2 accepts
    result = input_data.drop(input_data.columns[4:], axis=1)
    result["variety"] = predictions
    return result
