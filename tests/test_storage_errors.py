"""Store errors before anything runs (issue 13, item 1): a missing package, a missing bucket or container,
and refused credentials are one line on stderr, exit 2, naming the URL with no secret in it; GCS through
gcp-storage-emulator.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from batchinfer import storage
from batchinfer.errors import StorageError
from tests.conftest import OLD_PYTHON, REPO, SCRIPTS, assert_one_line_error
from tests.stores import S3_REGION, S3Server, _wait_for_port, free_port, no_proxy_env

WRONG_AZURE_KEY = "d3Jvbmcta2V5LW5vdC1henVyaXRlcy1vd24ta2V5LWF0LWFsbC0xMjM0NTY3ODkwYWI="


def _spec(tmp_path: Path, **keys) -> Path:
    spec = {"entry_script": "echo_names.py", "source_directory": str(SCRIPTS), "process_count_per_node": 1, **keys}
    spec.setdefault("inputs", str(tmp_path / "data"))
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "a.txt").write_text("a")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ------------------------------------------------------------------ missing packages (the real old env)

MISSING_EXTRAS = [
    # (spec keys, the role and URL named, the package, the extra)
    ({"inputs": "s3://bucket/data/"}, "input s3://bucket/data/", "s3fs", "s3"),
    ({"inputs": "az://container/data/"}, "input az://container/data/", "adlfs", "abfs"),
    ({"inputs": "abfs://container/data/*.csv"}, "input abfs://container/data/*.csv", "adlfs", "abfs"),
    ({"inputs": "gs://bucket/data/"}, "input gs://bucket/data/", "gcsfs", "gcs"),
    ({"output": "s3://bucket/out"}, "output s3://bucket/out", "s3fs", "s3"),
    ({"output": "az://container/out"}, "output az://container/out", "adlfs", "abfs"),
    ({"output": "gs://bucket/out"}, "output gs://bucket/out", "gcsfs", "gcs"),
    ({"models": {"net": "s3://bucket/model.pkl"}}, "model 'net' s3://bucket/model.pkl", "s3fs", "s3"),
    ({"models": {"net": "abfs://container/model/"}}, "model 'net' abfs://container/model/", "adlfs", "abfs"),
    ({"side_inputs": {"lookup": "gs://bucket/lookup.csv"}}, "side input 'lookup' gs://bucket/lookup.csv", "gcsfs", "gcs"),
    # credentials in the URL itself: named, masked
    ({"inputs": "s3://AKIAEXAMPLE:hunter2-secret/value@bucket/data/"}, "input s3://AKIAEXAMPLE:***@bucket/data/",
     "s3fs", "s3"),
]


@pytest.mark.skipif(not OLD_PYTHON.exists(), reason="the old-versions env (tests/install.sh makes it) is missing")
@pytest.mark.parametrize(("keys", "named", "package", "extra"), MISSING_EXTRAS)
def test_missing_package_is_one_line_with_the_pip_command(keys, named, package, extra, tmp_path, run_marker):
    """``batchinfer validate`` in the old-versions env, which has no s3fs, adlfs or gcsfs."""
    spec = _spec(tmp_path, **keys)
    proc = subprocess.run([str(OLD_PYTHON), "-m", "batchinfer", "validate", str(spec)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO), "BATCHINFER_TEST_RUN": run_marker},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"batchinfer: error: {named} needs {package}, which is not installed "
                           f"(pip install 'batchinfer[{extra}]')\n")
    assert "hunter2" not in proc.stderr


# ------------------------------------------------------------------ real servers: buckets and credentials


@pytest.fixture(scope="module")
def strict_s3():
    """A moto S3 server with its authentication on (moto accepts any key otherwise): one bucket made
    first, then every request must carry credentials moto knows. Its own process: moto's switch is
    process-wide, and would turn authentication on for the session's server too."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, "moto_server")
        server = S3Server(endpoint_url=f"http://127.0.0.1:{port}")
        bucket = server.new_bucket()
        server.fs().pipe(f"{bucket}/data/a.txt", b"a")
        request = urllib.request.Request(server.endpoint_url + "/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 200
        yield server, bucket
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _case(request, kind: str) -> tuple[str, dict, list[str], str | None]:
    """(URL, storage_options, fragments of the expected line, the secret that must not show) for a case."""
    if kind.startswith("s3"):
        server = request.getfixturevalue("s3_server")
        bucket = server.new_bucket()
        server.fs().pipe(f"{bucket}/data/a.txt", b"a")
        if kind == "s3 missing bucket":
            return "s3://no-such-bucket-bi/data/", server.storage_options, ["bucket 'no-such-bucket-bi' does not exist"], None
        if kind == "s3 wrong credentials":
            strict, bucket = request.getfixturevalue("strict_s3")
            secret = "wrong-" + secrets.token_urlsafe(20)
            options = {"key": "AKIA" + secrets.token_hex(8).upper(), "secret": secret,
                       "client_kwargs": {"endpoint_url": strict.endpoint_url, "region_name": S3_REGION}}
            return f"s3://{bucket}/data/", options, ["refused the credentials (InvalidAccessKeyId)"], secret
    server = request.getfixturevalue("azurite")
    container = server.new_bucket()
    server.fs().pipe(f"{container}/data/a.txt", b"a")
    if kind == "az missing container":
        return "az://no-such-container/data/", server.storage_options, ["container 'no-such-container' does not exist"], None
    if kind == "az wrong key":
        options = {"connection_string": server.connection_string(WRONG_AZURE_KEY)}
        return f"az://{container}/data/", options, ["refused the credentials (AuthorizationFailure)"], WRONG_AZURE_KEY
    raise AssertionError(kind)


def _as_env(options: dict) -> dict[str, str]:
    """The SDK's environment variables saying what ``options`` say."""
    if "connection_string" in options:
        return {"AZURE_STORAGE_CONNECTION_STRING": options["connection_string"]}
    client = options["client_kwargs"]
    return {"AWS_ACCESS_KEY_ID": options["key"], "AWS_SECRET_ACCESS_KEY": options["secret"],
            "AWS_ENDPOINT_URL": client["endpoint_url"], "AWS_DEFAULT_REGION": client["region_name"]}


STORE_CASES = ["s3 missing bucket", "s3 wrong credentials", "az missing container", "az wrong key"]


@pytest.mark.parametrize("kind", STORE_CASES)
@pytest.mark.parametrize("role", ["inputs", "output", "models"])
def test_store_refusals_are_one_line_before_anything_runs(kind, role, request, batchinfer, tmp_path):
    """validate and run: one line naming the role and the URL, exit 2, no secret; run started nothing."""
    url, options, fragments, secret = _case(request, kind)
    if role == "inputs":
        keys = {"inputs": [{"path": url, "storage_options": options}]}
        named = f"input {url}"
    elif role == "output":
        keys = {"output": {"path": url + "out", "storage_options": options}}
        named = f"output {url}out"
    else:  # no input on that store: the model is reached with the SDK's environment variables
        keys = {"models": {"net": url + "model.pkl"}}
        named = f"model 'net' {url}model.pkl"
    spec = _spec(tmp_path, **keys)
    env = {**no_proxy_env(), **(_as_env(options) if role == "models" else {})}
    for command in ("validate", "run"):  # plan checks as validate does
        run = batchinfer(command, str(spec), env=env)
        assert_one_line_error(run, named, *fragments)
        if secret:
            assert secret not in run.stderr
    assert not (tmp_path / "outputs").exists()  # run made no output folder


def test_a_model_url_is_checked_with_its_role(s3_server, batchinfer, tmp_path):
    spec = _spec(tmp_path, models={"net": "s3://no-such-models-bi/net.pkl"})
    run = batchinfer("validate", str(spec), env={**no_proxy_env(), **s3_server.env})
    assert_one_line_error(run, "model 'net' s3://no-such-models-bi/net.pkl", "bucket 'no-such-models-bi' does not exist")


def test_check_reachable_accepts_what_exists_and_what_is_not_there_yet(store):
    """The contract the model cache and the remote output rely on: an existing bucket answers, a path
    not there yet in it is fine; a local path is not asked about."""
    bucket = store.new_bucket()
    store.fs().pipe(f"{bucket}/m/model.pkl", b"x")
    for url in (store.url(bucket), store.url(bucket, "m/model.pkl"), store.url(bucket, "m"),
                store.url(bucket, "not/yet/there"), store.url(bucket, "m/*.pkl")):
        fs, path = storage.check_reachable(url, store.storage_options, "output")
        assert path.startswith(bucket)
    storage.check_reachable("/no/such/local/folder", None, "output")
    with pytest.raises(StorageError, match="does not exist"):
        storage.check_reachable(store.url("no-such-bucket-bi", "x"), store.storage_options, "output")


def test_unusable_storage_options_are_one_line(azurite, batchinfer, tmp_path):
    spec = _spec(tmp_path, inputs=[{"path": "az://c/data/", "storage_options": {"connection_string": "garbage"}}])
    run = batchinfer("validate", str(spec), env=no_proxy_env())
    assert_one_line_error(run, "input az://c/data/: the storage_options are not usable", "check storage_options")


# ------------------------------------------------------------------ GCS (gcp-storage-emulator)


def test_file_job_reads_from_gcs(gcs_server, job):
    """A file job whose inputs are on the GCS emulator: every file scored once; a missing bucket is one line."""
    bucket = gcs_server.new_bucket()
    fs = gcs_server.fs()
    for i in range(5):
        fs.pipe(f"{bucket}/data/f{i}.txt", f"{i}\n".encode())
    inputs = [{"path": f"gs://{bucket}/data", "storage_options": gcs_server.storage_options}]
    # the job fixture runs the CLI with this process's environment, where the fixture set the gcsfs switch
    assert os.environ.get("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT") == "false"
    run = job("echo_names.py", inputs=inputs, mini_batch_size=2)
    assert run.code == 0, run.stderr
    assert sorted(line.split()[-1] for line in run.rows()) == [str(i) for i in range(5)]
    assert run.summary["items_succeeded"] == 5
    missing = [{"path": "gs://no-such-bucket-bi/data", "storage_options": gcs_server.storage_options}]
    run = job("echo_names.py", inputs=missing)
    assert_one_line_error(run, "input gs://no-such-bucket-bi/data", "bucket 'no-such-bucket-bi' does not exist")


def _fs_of(store, bad_key: bool = False):
    """A fresh filesystem of ``store`` (with a wrong key on Azurite: refused)."""
    options = dict(store.storage_options)
    if bad_key:
        options["connection_string"] = store.server.connection_string("d3Jvbmcta2V5LWZvci1henVyaXRl")
    return storage.filesystem(store.url("x"), {**options, "skip_instance_cache": True})[0]


@pytest.mark.parametrize(
    "kind, case, expected",
    [(kind, case, expected) for kind in ("s3", "azurite") for case, expected in [
        ("exists", None),
        ("missing object", "does not exist"),
        ("missing bucket", "does not exist"),
        ("store not answering", "the store did not answer"),
        ("a batchinfer error", "already one line"),
    ]] + [("azurite", "refused credentials", "refused the credentials")],  # moto's server accepts any key
)
def test_store_call_is_one_line_for_every_failure(kind, case, expected, request):
    """storage.call, the one wrapper of a store operation (model cache, status, preflight): retried, then
    one StorageError naming the role and the URL (redacted), on the real servers."""
    from tests.stores import Store

    store = Store(kind, request.getfixturevalue("s3_server" if kind == "s3" else "azurite"))
    bucket = store.new_bucket()
    store.fs().pipe(f"{bucket}/m/model.pkl", b"x")
    url = store.url(bucket, "m/model.pkl")
    fs = _fs_of(store)
    if case == "missing object":
        url = store.url(bucket, "m/other.pkl")
    elif case == "missing bucket":
        url = store.url("no-such-bucket-bi", "m/model.pkl")
    elif case == "refused credentials":
        fs = _fs_of(store, bad_key=True)
    path = url.partition("://")[2]

    def fn():
        if case == "store not answering":
            raise ConnectionRefusedError("Connection refused")  # what aiohttp/botocore raise, as is_transient sees
        if case == "a batchinfer error":
            raise StorageError("already one line")
        return fs.info(path)

    if expected is None:
        assert storage.call(fn, url, "model 'net'", "reading")["size"] == 1
        return
    with pytest.raises(StorageError) as raised:
        storage.call(fn, url, "model 'net'", "reading", tries=2)
    message = raised.value.message
    assert expected in message and "\n" not in message
    if case != "a batchinfer error":
        assert message.startswith(f"model 'net' {url}"), message
