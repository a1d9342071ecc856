"""Run Azure's own public parallel examples with batchinfer, scripts byte for byte, and check their rows.

Usage (from the repository root, after `bash tests/install.sh`, which makes .venv and .venv-old):

    git clone https://github.com/Azure/azureml-examples /tmp/azureml-examples
    git clone https://github.com/Azure/MachineLearningNotebooks /tmp/MachineLearningNotebooks
    AZUREML_EXAMPLES=/tmp/azureml-examples AZURE_NOTEBOOKS=/tmp/MachineLearningNotebooks \
        .venv/bin/python examples/azure/try_examples.py [/tmp/azure-runs]

Each example runs in the environment it needs: TensorFlow ones in .venv, the scikit-learn /
MLflow / pandas-1.x ones in .venv-old (Azure's curated environments carry pandas 1.x). Only cloud
data and registered models are replaced, by the local stand-ins of standins.py. The README's
table "Azure's public parallel examples" is this script's result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MAIN = REPO / ".venv" / "bin"
OLD = REPO / ".venv-old" / "bin"


@dataclass
class Example:
    """One of Azure's examples: where it is, how batchinfer runs it, and what its rows must look like."""

    name: str
    venv: Path
    folder: str  # relative to the checkout named by `root`
    args: list[str]
    check: Callable[[Path], str] | None  # the output folder -> a line on what came out; raises if wrong
    root: str = "AZUREML_EXAMPLES"
    expect_failure: str | None = None  # why it cannot run here


def rows(path: Path, **read_csv: object) -> pd.DataFrame:
    frame = pd.read_csv(path, header=None, **read_csv)
    assert len(frame), f"{path} is empty"
    return frame


def iris_2a(out: Path) -> str:
    found = list((out / "batch_prediction/outputs/job_output_file").glob("*"))  # aggregated_returns.csv where named
    frame = rows(found[0], delimiter=" ")
    assert frame.shape[1] == 5, frame.shape
    return f"{found[0].name}: {frame.shape[0]} rows x {frame.shape[1]} columns (read as the notebook reads it)"


def mnist_pipeline(out: Path) -> str:
    files = list((out / "predict_digits_mnist/outputs/job_output_file").glob("*"))
    frame = rows(files[0], delimiter=":")
    assert frame.shape == (10, 2), frame.shape
    return f"{files[0].name}: 10 digits, e.g. {frame.iloc[0, 0]}:{frame.iloc[0, 1]}"


def oj_1a(out: Path) -> str:
    models = sorted((out / "parallel_train/outputs/model_folder").glob("*/*/MLmodel"))
    assert models, "no model written"
    return f"{len(models)} models written, one per Store/Brand partition (run() returns [] by design)"


def v1_rows(file_name: str, columns: int, delimiter: str) -> Callable[[Path], str]:
    def check(out: Path) -> str:
        frame = rows(out / file_name, delimiter=delimiter)
        assert frame.shape[1] == columns, frame.shape
        return f"{file_name}: {frame.shape[0]} rows x {columns} columns (read as the notebook reads it)"

    return check


def examples(standins: Path) -> list[Example]:
    v1 = HERE / "v1"
    return [
        Example("v2 2a iris (cli/jobs/parallel)", OLD, "cli/jobs/parallel/2a_iris_batch_prediction",
                ["pipeline.yml", "--input", f"batch_prediction.score_model={standins / 'iris-mlflow-model'}"], iris_2a),
        Example("v2 iris pipeline (cli/jobs/pipelines)", OLD, "cli/jobs/pipelines/iris-batch-prediction-using-parallel",
                ["pipeline.yml", "--input", f"batch_prediction.score_model={standins / 'iris-mlflow-model'}"], iris_2a),
        Example("v2 1a OJ sales (cli/jobs/parallel)", OLD, "cli/jobs/parallel/1a_oj_sales_prediction", ["pipeline.yml"], oj_1a),
        Example("v2 MNIST pipeline (cli/jobs/pipelines)", MAIN, "cli/jobs/pipelines/mnist-batch-identification-using-parallel",
                ["pipeline.yml", "--input", "predict_digits_mnist.job_data_path=./mnist_mltable"], mnist_pipeline),
        Example("v2 3a MNIST (cli/jobs/parallel)", MAIN, "cli/jobs/parallel/3a_mnist_batch_identification",
                ["pipeline.yml", "--input",
                 "predict_digits_mnist.job_data_path="
                 + str(Path(os.environ["AZUREML_EXAMPLES"]) / "cli/jobs/pipelines/mnist-batch-identification-using-parallel/mnist_mltable/mnist")],
                None, expect_failure="its script calls TensorFlow 1 APIs (tf.reset_default_graph, tf.Session) that TensorFlow 2 lacks"),
        Example("v1 digit_identification.py", MAIN, ".", [str(v1 / "digit_identification.yaml")],
                v1_rows("mnist_outputs.txt", 2, ":"), root="AZURE_NOTEBOOKS"),
        Example("v1 iris_score.py", OLD, ".", [str(v1 / "iris_score.yaml")], v1_rows("iris_outputs.txt", 5, " "),
                root="AZURE_NOTEBOOKS"),
        Example("v1 total_income.py", OLD, ".", [str(v1 / "total_income.yaml")], v1_rows("revenue_outputs.txt", 19, " "),
                root="AZURE_NOTEBOOKS"),
        Example("v1 total_file_size.py", MAIN, ".", [str(v1 / "total_file_size.yaml")],
                v1_rows("file_size_outputs.txt", 6, ","), root="AZURE_NOTEBOOKS"),
        Example("v1 tutorial batch_scoring.py", MAIN, ".", [str(v1 / "batch_scoring.yaml")], None, root="AZURE_NOTEBOOKS",
                expect_failure="it imports tf_slim (TensorFlow 1's slim) and its init() git-clones tensorflow/models"),
    ]


def main() -> int:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/azure-runs").absolute()
    standins = runs / "standins"
    env = dict(os.environ, STANDINS=str(standins), RAY_USAGE_STATS_ENABLED="0")
    subprocess.run([str(OLD / "python"), str(HERE / "standins.py"), str(standins), env["AZURE_NOTEBOOKS"]], check=True, env=env)
    failures = 0
    for example in examples(standins):
        out = runs / example.name.replace(" ", "_").replace("/", "_").replace("(", "").replace(")", "")
        command = [str(example.venv / "batchinfer"), "run", *example.args, "--output", str(out), "--restart", "--quiet"]
        cwd = Path(env[example.root]) / example.folder
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        if example.expect_failure:
            status = "cannot run" if done.returncode != 0 else "UNEXPECTEDLY RAN"
            print(f"{status:12} {example.name}: {example.expect_failure}\n{'':12} batchinfer said: "
                  f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '(nothing)'}")
            continue
        try:
            assert done.returncode == 0, f"exit {done.returncode}: {done.stderr.strip()[-500:]}"
            assert example.check is not None
            print(f"{'runs':12} {example.name}: {example.check(out)}")
        except Exception as exc:  # noqa: BLE001 - a report, not a test
            failures += 1
            print(f"{'FAILS':12} {example.name}: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
