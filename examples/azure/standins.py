"""Local stand-ins for the cloud data and registered models that Azure's parallel examples use.

Usage: python standins.py STANDINS_DIR [AZURE_NOTEBOOKS]

Azure's examples read data from Azure blobs and models from a workspace's registry. To run
their scripts unchanged on this machine, this writes small local equivalents into
STANDINS_DIR (nothing is downloaded: iris comes with scikit-learn; the rest is synthetic, or
copied from your checkout of MachineLearningNotebooks):

  iris/iris.csv            the v1 iris table (4 feature columns with a header)
  iris_model.pkl           the v1 model "iris-prs": a scikit-learn classifier, pickled
  iris-mlflow-model/       2a's score_model: an MLflow scikit-learn model over the 44 columns of
                           azureml-examples' neural-iris-mltable (its own model.pkl was pickled by
                           scikit-learn 0.20 and no longer loads)
  oj_sales_data/oj.csv     Dominick's orange-juice columns (synthetic values), for total_income.py
  dataset_partition_test/  the v1 partition-per-folder layout of the notebook's test_files/*.wav
  labels/labels.txt, inception_v3.ckpt   placeholders for the batch-scoring tutorial
"""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def iris(root: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    frame = pd.DataFrame(data.data, columns=["sepal.length", "sepal.width", "petal.length", "petal.width"])
    (root / "iris").mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "iris" / "iris.csv", index=False)
    model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
    (root / "iris_model.pkl").write_bytes(pickle.dumps(model))
    # 2a: 150 iris rows plus 40 noise columns; MLTable reads its first row as the header
    rng = np.random.default_rng(0)
    wide = np.hstack([data.data, rng.normal(size=(150, 40))])
    model = LogisticRegression(max_iter=2000).fit(wide[1:], data.target[1:])
    target = root / "iris-mlflow-model"
    shutil.rmtree(target, ignore_errors=True)
    import mlflow.sklearn

    mlflow.sklearn.save_model(model, str(target), serialization_format="cloudpickle")  # as Azure's own MLmodel says


def orange_juice(root: Path) -> None:
    rng = np.random.default_rng(1)
    weeks = pd.date_range("1990-06-14", periods=20, freq="7D")
    rows = []
    for store in (2, 5, 8):
        for brand in ("dominicks", "minute.maid", "tropicana"):
            for week in weeks:
                quantity = int(rng.integers(5000, 30000))
                rows.append({
                    "WeekStarting": week.date().isoformat(), "Store": store, "Brand": brand, "Quantity": quantity,
                    "logQuantity": round(float(np.log(quantity)), 4), "Advert": int(rng.integers(0, 2)),
                    "Price": round(float(rng.uniform(1.5, 3.5)), 2), "Age60": round(float(rng.uniform(0.1, 0.3)), 4),
                    "COLLEGE": round(float(rng.uniform(0.1, 0.4)), 4), "INCOME": round(float(rng.uniform(10, 11)), 4),
                    "Hincome150": round(float(rng.uniform(3, 6)), 4), "Large HH": round(float(rng.uniform(0.1, 0.2)), 4),
                    "Minorities": round(float(rng.uniform(0.0, 0.4)), 4), "WorkingWoman": round(float(rng.uniform(0.2, 0.5)), 4),
                    "SSTRDIST": round(float(rng.uniform(1, 10)), 4), "SSTRVOL": round(float(rng.uniform(0.5, 1.5)), 4),
                    "CPDIST5": round(float(rng.uniform(1, 3)), 4), "CPWVOL5": round(float(rng.uniform(0.2, 0.6)), 4),
                })
    (root / "oj_sales_data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "oj_sales_data" / "oj.csv", index=False)


def partition_layout(root: Path, notebooks: Path) -> None:
    test_files = notebooks / "how-to-use-azureml/machine-learning-pipelines/parallel-run/test_files"
    layout = [("disco", "user1/winter"), ("orchestra", "user1/fall"), ("piano", "user2/summer"),
              ("spirituality", "user3/fall"), ("piano", "user4/spring"), ("piano", "user4/fall")]
    for genre, where in layout:  # as the notebook's datastore.upload calls lay them out
        target = root / "dataset_partition_test" / where
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(test_files / genre / f"{genre}.wav", target / f"{genre}.wav")


def tutorial_placeholders(root: Path) -> None:
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "labels.txt").write_text("background\n")
    (root / "inception_v3.ckpt").write_bytes(b"")


def main() -> None:
    root = Path(sys.argv[1]).absolute()
    root.mkdir(parents=True, exist_ok=True)
    iris(root)
    orange_juice(root)
    if len(sys.argv) > 2:
        partition_layout(root, Path(sys.argv[2]))
    tutorial_placeholders(root)
    print(f"stand-ins written to {root}")


if __name__ == "__main__":
    main()
