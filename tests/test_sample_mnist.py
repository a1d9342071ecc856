"""The README's first command: the real MNIST sample scores 1,000 digits, each once, accurately."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("keras", reason="the sample needs the 'tensorflow' extra")
pytestmark = pytest.mark.tensorflow


@pytest.mark.parametrize(("spec", "name"), [("mnist_job.yaml", "mnist-digits"),
                                            ("mnist_tabular_job.yaml", "mnist-tabular")])
def test_sample_job_scores_every_digit_once_with_accuracy_over_96_percent(batchinfer, tmp_path, spec, name):
    out = tmp_path / name
    run = batchinfer("run", str(REPO / "sample_data" / spec), "--output", str(out), output=out, timeout=600)
    assert run.code == 0, run.stderr
    assert "succeeded: 1000/1000 items succeeded" in run.stderr
    rows = run.rows()
    assert len(rows) == 1000 and len(set(rows)) == 1000
    check = subprocess.run(
        [sys.executable, str(REPO / "sample_models" / "mnist" / "check_accuracy.py"), str(out / "parallel_run_step.txt")],
        capture_output=True, text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    accuracy = float(check.stdout.split("accuracy")[1])
    assert accuracy >= 0.96
    assert run.summary["items_succeeded"] == 1000
