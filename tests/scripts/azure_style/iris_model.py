"""A stand-in for a pickled scikit-learn classifier: predict() over the four iris measurements."""

import numpy as np


class PetalRule:
    """Classifies by petal length, as a fitted tree's first split would."""

    def predict(self, frame):
        petal_length = np.asarray(frame.iloc[:, 2], dtype=float)
        return np.where(petal_length < 2.5, "Setosa", np.where(petal_length < 5.0, "Versicolor", "Virginica"))
