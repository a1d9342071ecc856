"""Tabular: raises when the DataFrame holds the row whose id is given by --bad; returns ids otherwise."""

import argparse

bad = None


def init():
    global bad
    parser = argparse.ArgumentParser()
    parser.add_argument("--bad", required=True)
    bad = parser.parse_known_args()[0].bad


def run(mini_batch):
    if (mini_batch["id"] == bad).any():
        raise ValueError(f"row {bad} is corrupt")
    return list(mini_batch["id"])
