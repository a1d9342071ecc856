"""The README's first command: the real MNIST sample scores 1,000 digits, each once, accurately.

The digits job's run is the session's ``mnist_digits`` (tests/conftest.py), shared with the report's browser
test of the sample's page: CI runs the sample once.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, Run

pytest.importorskip("keras", reason="the sample needs the 'tensorflow' extra")
pytestmark = pytest.mark.tensorflow


@pytest.fixture
def mnist_tabular(batchinfer, tmp_path) -> Run:
    out = tmp_path / "mnist-tabular"
    return batchinfer("run", str(REPO / "sample_data" / "mnist_tabular_job.yaml"), "--output", str(out), output=out,
                      timeout=600)


@pytest.mark.parametrize("sample", ["mnist_digits", "mnist_tabular"])
def test_sample_job_scores_every_digit_once_with_accuracy_over_96_percent(request, sample):
    run: Run = request.getfixturevalue(sample)
    assert run.code == 0, run.stderr
    assert "succeeded: 1000/1000 items succeeded" in run.stderr
    rows = run.rows()
    assert len(rows) == 1000 and len(set(rows)) == 1000
    check = subprocess.run(
        [sys.executable, str(REPO / "sample_models" / "mnist" / "check_accuracy.py"),
         str(run.output_dir / "parallel_run_step.txt")],
        capture_output=True, text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    accuracy = float(check.stdout.split("accuracy")[1])
    assert accuracy >= 0.96
    assert run.summary["items_succeeded"] == 1000
