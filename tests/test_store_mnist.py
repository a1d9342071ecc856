"""The MNIST sample with everything on an object store: images, model and output on moto's S3 server,
and again on Azurite. 1,000 rows exactly once, the same accuracy as on local disk (issue 13's "done when").

Credentials reach the job as a user would give them: ``${VAR}`` in ``storage_options``, the values in
the environment; none of them may appear in anything batchinfer writes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from tests.stores import upload_tree

pytest.importorskip("keras", reason="the sample needs the 'tensorflow' extra")
pytestmark = pytest.mark.tensorflow

SAMPLE = REPO / "sample_data" / "mnist"
MODEL_DIR = REPO / "sample_models" / "mnist"


def _options(store) -> tuple[dict, dict[str, str]]:
    """storage_options naming ${VARS}, and the environment that holds their values."""
    if store.kind == "s3":
        options = {"key": "${TEST_S3_KEY}", "secret": "${TEST_S3_SECRET}",
                   "client_kwargs": {"endpoint_url": store.server.endpoint_url, "region_name": "eu-west-1"}}
        env = {"TEST_S3_KEY": store.server.key, "TEST_S3_SECRET": store.server.secret}
    else:
        options = {"connection_string": "${TEST_AZURE_CONNECTION_STRING}"}
        env = {"TEST_AZURE_CONNECTION_STRING": store.server.connection_string()}
    return options, env


def test_mnist_sample_with_images_model_and_output_on_the_store(store, batchinfer, tmp_path):
    bucket = store.new_bucket()
    fs = store.fs()
    upload_tree(fs, SAMPLE, f"{bucket}/mnist")
    fs.pipe(f"{bucket}/models/model.keras", (MODEL_DIR / "model.keras").read_bytes())
    options, env = _options(store)
    spec = {
        "name": "mnist-on-store",
        "entry_script": "digit_identification.py",
        "source_directory": str(MODEL_DIR),
        "models": {"mnist": {"path": store.url(bucket, "models/model.keras"), "storage_options": options}},
        "inputs": {"type": "file", "path": store.url(bucket, "mnist/*.png"), "storage_options": options},
        "mini_batch_size": 25,
        "error_threshold": 10,
        "output_action": "append_row",
        "process_count_per_node": 2,
        "output": {"path": store.url(bucket, "out"), "storage_options": options},
    }
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    run = batchinfer("run", str(job), cwd=elsewhere, env={**env, "BATCHINFER_CACHE_DIR": str(tmp_path / "cache")},
                     timeout=600)
    assert run.code == 0, run.stderr
    assert "succeeded: 1000/1000 items succeeded" in run.stderr

    rows_file = tmp_path / "rows.txt"
    rows_file.write_bytes(fs.cat(f"{bucket}/out/parallel_run_step.txt"))
    rows = rows_file.read_text().splitlines()
    assert len(rows) == 1000 and len(set(rows)) == 1000
    check = subprocess.run([sys.executable, str(MODEL_DIR / "check_accuracy.py"), str(rows_file)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert float(check.stdout.split("accuracy")[1]) >= 0.96

    import json

    summary = json.loads(fs.cat(f"{bucket}/out/summary.json"))
    assert summary["items_succeeded"] == 1000 and summary["status"] == "succeeded"
    assert summary["output_dir"].startswith(store.url(bucket, "out"))
    assert fs.exists(f"{bucket}/out/logs/job.log") and fs.exists(f"{bucket}/out/logs/worker-0.log")
    assert not fs.exists(f"{bucket}/out/.batchinfer/segments") or not fs.ls(f"{bucket}/out/.batchinfer/segments")
    # nothing batchinfer wrote holds a credential: not in the store, not on the terminal
    secrets = [v for v in env.values()] + ([store.server.account_key] if store.kind == "azurite" else [])
    written = {path: fs.cat(path) for path in fs.find(f"{bucket}/out")}
    for secret in secrets:
        assert secret not in run.stdout + run.stderr
        for path, data in written.items():
            assert secret.encode() not in data, f"{secret[:4]}... found in {path}"
