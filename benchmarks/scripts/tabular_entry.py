"""batchinfer entry script for the tabular benchmark: ``tabular_score.score`` per mini-batch."""

from tabular_score import score


def run(mini_batch):
    """A DataFrame in, a DataFrame (id, label) out: one row per input row."""
    return score(mini_batch)
