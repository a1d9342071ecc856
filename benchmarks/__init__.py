"""batchinfer's benchmark suite: how much batchinfer costs next to hand-written references.

Run from the repository root::

    python -m benchmarks [--quick] [--only NAME ...] [--repeat N] [--json PATH]

Each benchmark makes its own deterministic data in a temporary folder, runs
batchinfer as the real command (``python -m batchinfer run job.yaml --output
DIR --quiet``, timed as a whole process from start to exit) and its references
on the same data in the same run, repeats every measurement (median of at
least 3, tools interleaved) and adds rows to one table (see ``_harness``).

Benchmarks (one module each): ``dispatch``, ``cpu``, ``mnist``, ``tabular``,
``listing``, ``storage``, ``report``.
"""

NAMES = ("dispatch", "cpu", "mnist", "tabular", "listing", "storage", "report")
