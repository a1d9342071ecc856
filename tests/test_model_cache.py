"""Models and side inputs at URLs, on real servers (moto's S3, Azurite): fetched once per machine into
a bounded cache before any init(), read by the script as local paths, reused while unchanged."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import OLD_PYTHON, REPO, SCRIPTS, assert_one_line_error
from tests.stores import no_proxy_env

SECRET_VAR = "MC_STORE_SECRET"


@pytest.fixture
def job(tmp_path, batchinfer):
    """conftest's ``job``, with the environment of the run: ``job(script, *args, spec_env={...}, **keys)``."""

    def make_and_run(script: str, *extra_args: str, spec_env: dict[str, str], **keys) -> object:
        spec = {"entry_script": script, "source_directory": str(SCRIPTS), "process_count_per_node": 2, **keys}
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        output = tmp_path / "out"
        if "--output" in extra_args:
            output = Path(extra_args[extra_args.index("--output") + 1])
        else:
            extra_args = ("--output", str(output), *extra_args)
        return batchinfer("run", str(path), *extra_args, output=output, env=spec_env)

    return make_and_run


def _options_with_secret_from_env(store) -> tuple[dict, str]:
    """The store's storage_options with its secret given as ${MC_STORE_SECRET}; and the secret."""
    options = json.loads(json.dumps(store.storage_options))
    name = "secret" if store.kind == "s3" else "connection_string"
    secret, options[name] = options[name], "${%s}" % SECRET_VAR
    return options, secret


@pytest.fixture
def cache_env(tmp_path, store):
    """The environment of a run: a private model cache, the store's credentials (for the side input,
    read through the SDK's own environment variables) and the secret the spec names as ${VAR}."""
    _, secret = _options_with_secret_from_env(store)
    return {"BATCHINFER_CACHE_DIR": str(tmp_path / "cache"), SECRET_VAR: secret, **store.env, **no_proxy_env()}


def _upload_models(store, bucket: str, version: str = "1") -> None:
    fs = store.fs()
    fs.pipe(f"{bucket}/models/weights.bin", f"weights v{version}".encode())
    fs.pipe(f"{bucket}/models/net/config.json", b'{"layers": 2}')
    fs.pipe(f"{bucket}/models/net/sub/layer.txt", f"layer v{version}".encode())
    fs.pipe(f"{bucket}/side/labels.csv", b"id,label\n1,cat\n")


def _model_job(tmp_path, store, bucket: str, text_files) -> dict:
    options, _ = _options_with_secret_from_env(store)
    return dict(
        inputs={"path": str(text_files(3))},
        models={"weights": {"path": store.url(bucket, "models/weights.bin"), "storage_options": options},
                "net": {"path": store.url(bucket, "models/net"), "storage_options": options}},
        side_inputs={"labels": store.url(bucket, "side/labels.csv")},  # the SDK's environment variables
        mini_batch_size=3,
    )


@contextlib.contextmanager
def _requests_to_moto():
    """The request lines moto's server (werkzeug, in this process) logs meanwhile."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("werkzeug")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _entries(cache: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """Every file of every cache entry: {entry: {relative path: (inode, mtime_ns)}}."""
    found = {}
    for entry in sorted((cache / "entries").iterdir()):
        found[entry.name] = {str(p.relative_to(entry)): (p.stat().st_ino, p.stat().st_mtime_ns)
                             for p in sorted((entry / "data").rglob("*")) if p.is_file()}
    return found


def test_models_from_the_store_are_local_paths_for_every_helper_and_reused_by_later_runs(
        tmp_path, store, job, text_files, cache_env):
    bucket = store.new_bucket()
    _upload_models(store, bucket)
    keys = _model_job(tmp_path, store, bucket, text_files)
    first = job("remote_models.py", **keys, spec_env=cache_env)
    assert first.code == 0, first.stderr
    rows = [json.loads(line) for line in first.rows()]
    assert sorted(r["item"] for r in rows) == ["f000.txt", "f001.txt", "f002.txt"]
    seen = rows[0]
    assert seen["weights"] == seen["weights_azure"] == seen["weights_model_dir"] == "weights v1"
    assert seen["net"] == {"config.json": '{"layers": 2}', "sub/layer.txt": "layer v1"}
    assert seen["net_model_dir"] == {"net/config.json": '{"layers": 2}', "net/sub/layer.txt": "layer v1"}
    assert seen["labels"] == "id,label\n1,cat\n"
    cache = tmp_path / "cache"
    for key in ("weights_path", "net_path", "labels_path"):  # never the URL: a copy in the cache
        assert seen[key].startswith(str(cache / "entries")), seen[key]
    assert seen["weights_path"].endswith("/weights.bin") and seen["net_path"].endswith("/net")
    log = first.log("job.log")
    assert log.count("downloaded (") == 3 and "reused" not in log, log
    assert "model 'weights' " in log and "model 'net' " in log and "side input 'labels' " in log
    entries = _entries(cache)
    assert len(entries) == 3 and not os.listdir(cache / "tmp")

    # a later run (a fresh output folder): the cache's copies, untouched; only metadata was asked for
    with _requests_to_moto() as requests:  # moto's server runs in this process and logs every request
        again = job("remote_models.py", "--output", str(tmp_path / "out2"), **keys, spec_env=cache_env)
    assert again.code == 0, again.stderr
    assert [json.loads(line) for line in again.rows()][0]["weights"] == "weights v1"
    log = again.log("job.log")
    assert log.count("reused from the cache") == 3 and "downloaded" not in log, log
    assert _entries(cache) == entries
    if store.kind == "s3":
        requests = [line for line in requests if bucket in line]
        assert any('"HEAD /' in line for line in requests), requests  # the metadata: asked for
        downloads = [line for line in requests if f'"GET /{bucket}/models/' in line or f'"GET /{bucket}/side/' in line]
        assert downloads == [], downloads
    print_one = json.loads((first.output_dir / ".batchinfer" / "job.json").read_text())["fingerprint"]
    assert json.loads((again.output_dir / ".batchinfer" / "job.json").read_text())["fingerprint"] == print_one

    # the model changes in the store: a different job (the first folder refuses it), downloaded again
    store.fs().pipe(f"{bucket}/models/net/sub/layer.txt", b"layer v2")
    refused = job("remote_models.py", **keys, spec_env=cache_env)
    assert_one_line_error(refused, "holds a different job")
    changed = job("remote_models.py", "--output", str(tmp_path / "out3"), **keys,
                  spec_env=cache_env)
    assert changed.code == 0, changed.stderr
    assert json.loads(changed.rows()[0])["net"]["sub/layer.txt"] == "layer v2"
    log = changed.log("job.log")
    assert log.count("reused from the cache") == 2 and log.count("downloaded (") == 1, log
    assert json.loads((changed.output_dir / ".batchinfer" / "job.json").read_text())["fingerprint"] != print_one

    # no file batchinfer wrote holds the secret the spec named as ${VAR}
    secret = cache_env[SECRET_VAR]
    for root in (first.output_dir, again.output_dir, changed.output_dir, cache):
        for path in root.rglob("*"):
            if path.is_file() and "data" not in path.relative_to(root).parts:
                assert secret not in path.read_text(errors="replace"), path


def test_a_rotated_credential_keeps_the_job(tmp_path, store, job, text_files, cache_env):
    """storage_options are not part of the fingerprint: the same models reached with other credentials
    (the SDK's environment variables instead of the spec's storage_options) are the same finished job."""
    bucket = store.new_bucket()
    _upload_models(store, bucket)
    keys = _model_job(tmp_path, store, bucket, text_files)
    first = job("remote_models.py", **keys, spec_env=cache_env)
    assert first.code == 0, first.stderr
    summary = first.summary
    keys["models"] = {name: location["path"] for name, location in keys["models"].items()}
    again = job("remote_models.py", **keys, spec_env=cache_env)
    assert again.code == 0, again.stderr
    assert again.summary == summary  # reused as it was: not run again


def _filler(tmp_path: Path, spec: Path, index: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / "cache_filler.py"), str(spec), str(tmp_path / f"ready-{index}"),
         str(tmp_path / "barrier")],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_processes_filling_one_entry_at_once_both_get_it_right(tmp_path, store, cache_env):
    bucket = store.new_bucket()
    fs = store.fs()
    files = {f"models/big/part-{i:03d}.txt": f"part {i}\n" * 50 for i in range(60)}  # enough for the two to overlap
    for name, text in files.items():
        fs.pipe(f"{bucket}/{name}", text.encode())
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"entry_script": "x.py", "inputs": str(tmp_path),
                                    "models": {"big": store.url(bucket, "models/big")}}))
    fillers = [_filler(tmp_path, spec, i, cache_env) for i in range(2)]
    try:
        for i, proc in enumerate(fillers):  # both resolved, both waiting at the barrier
            while not (tmp_path / f"ready-{i}").exists():
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.01)  # polling for the ready file (not a wait standing in for one)
        (tmp_path / "barrier").touch()
        results = [proc.communicate(timeout=120) for proc in fillers]
    finally:
        for proc in fillers:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(fillers, results):
        assert proc.returncode == 0, err
    answers = [json.loads(out) for out, _ in results]
    notes = [note for a in answers for note in a["notes"]]
    assert sum(": downloaded (" in note for note in notes) <= 1, notes  # one copy kept; the other run used it
    paths = {a["paths"]["big"][0] for a in answers}
    assert len(paths) == 1  # one entry, the same for both
    local = Path(paths.pop())
    assert {str(p.relative_to(local)): p.read_text() for p in local.iterdir()} == {
        name.rsplit("/", 1)[1]: text for name, text in files.items()}
    cache = tmp_path / "cache"
    assert len(os.listdir(cache / "entries")) == 1 and os.listdir(cache / "tmp") == []


def test_the_loser_of_a_fill_uses_the_winners_copy(tmp_path, store, cache_env, monkeypatch):
    """The same race, decided: the entry appears while a second download runs; its copy is discarded."""
    from batchinfer.modelcache import ModelCache, resolve
    from batchinfer.spec import load_spec

    for name, value in cache_env.items():
        monkeypatch.setenv(name, value)
    bucket = store.new_bucket()
    store.fs().pipe(f"{bucket}/m.bin", b"weights")
    spec_path = tmp_path / "job.yaml"
    spec_path.write_text(yaml.safe_dump({"entry_script": "x.py", "inputs": str(tmp_path),
                                         "models": {"m": store.url(bucket, "m.bin")}}))
    spec = load_spec(spec_path)
    remotes = resolve(spec)
    cache = ModelCache()
    with cache.fetch(spec, remotes) as winner:
        entry = Path(winner.models["m"]).parent.parent
        inode = entry.stat().st_ino
        fd, won = cache._download(remotes[0])  # as a second run that listed before the first renamed
        try:
            assert won is False and fd is not None
            assert os.fstat(fd).st_ino == (entry / "meta.json").stat().st_ino
        finally:
            os.close(fd)
        assert entry.stat().st_ino == inode and Path(winner.models["m"]).read_text() == "weights"
        assert os.listdir(cache.tmp_dir) == []


def _one_model_job(tmp_path, store, bucket, name, size, text_files, job, env, output):
    store.fs().pipe(f"{bucket}/{name}", b"x" * size)
    return job("echo_names.py", "--output", str(tmp_path / output), inputs={"path": str(text_files(1))},
               models={"m": {"path": store.url(bucket, name), "storage_options": store.storage_options}},
               spec_env=env)


def test_least_recently_used_entries_go_past_the_limit(tmp_path, store, job, text_files, batchinfer, cache_env):
    bucket = store.new_bucket()
    env = {**cache_env, "BATCHINFER_CACHE_MAX_GB": str(1500 / 1024**3)}  # 1500 bytes
    cache = tmp_path / "cache"
    a = _one_model_job(tmp_path, store, bucket, "a.bin", 1000, text_files, job, env, "out-a")
    assert a.code == 0, a.stderr
    assert len(os.listdir(cache / "entries")) == 1
    b = _one_model_job(tmp_path, store, bucket, "b.bin", 1000, text_files, job, env, "out-b")
    assert b.code == 0, b.stderr
    assert "removed" in b.log("job.log") and "a.bin" in b.log("job.log")
    listed = batchinfer("cache", "list", env=env)
    assert listed.code == 0 and "b.bin" in listed.stdout and "a.bin" not in listed.stdout, listed.stdout
    # a model larger than the limit alone: kept for its run (the entry in use is never removed), said so
    big = _one_model_job(tmp_path, store, bucket, "big.bin", 3000, text_files, job, env, "out-big")
    assert big.code == 0, big.stderr
    assert "kept for this run only" in big.log("job.log")
    listed = batchinfer("cache", "list", env=env)
    assert "big.bin" in listed.stdout and "b.bin" not in listed.stdout.replace("big.bin", ""), listed.stdout
    # the next download removes it: it is no longer in use
    again = _one_model_job(tmp_path, store, bucket, "a.bin", 1000, text_files, job, env, "out-a2")
    assert again.code == 0, again.stderr
    assert "downloaded (" in again.log("job.log")
    listed = batchinfer("cache", "list", env=env)
    assert "a.bin" in listed.stdout and "big.bin" not in listed.stdout, listed.stdout


def test_cache_list_and_clear(tmp_path, store, job, text_files, batchinfer, cache_env):
    bucket = store.new_bucket()
    for name in ("old.bin", "new.bin"):
        run = _one_model_job(tmp_path, store, bucket, name, 10, text_files, job, cache_env, f"out-{name}")
        assert run.code == 0, run.stderr
    cache = tmp_path / "cache"
    listed = batchinfer("cache", "list", env=cache_env)
    assert listed.code == 0 and listed.stderr == ""
    assert "old.bin" in listed.stdout and "new.bin" in listed.stdout and "2 entries" in listed.stdout
    for entry in (cache / "entries").iterdir():  # old.bin last used 40 days ago
        if "old.bin" in (entry / "meta.json").read_text():
            os.utime(entry / "meta.json", (0, os.stat(entry / "meta.json").st_mtime - 40 * 86400))
    cleared = batchinfer("cache", "clear", "--older-than", "30", env=cache_env)
    assert cleared.code == 0 and cleared.stdout == "removed 1 entry (10 B)\n" and cleared.stderr == ""
    listed = batchinfer("cache", "list", "--json", env=cache_env)
    assert [e["url"].rsplit("/", 1)[1] for e in json.loads(listed.stdout)["entries"]] == ["new.bin"]
    cleared = batchinfer("cache", "clear", env=cache_env)
    assert cleared.stdout == "removed 1 entry (10 B)\n"
    assert os.listdir(cache / "entries") == []
    empty = tmp_path / "never"
    assert batchinfer("cache", "clear", env={"BATCHINFER_CACHE_DIR": str(empty)}).code == 0
    assert not empty.exists()  # nothing is written where there was no cache


# refused credentials on S3: moto's server accepts any key unless its auth mode is on, which
# tests/test_storage_errors.py runs in a server of its own (models included); here, on Azurite
@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("kind, case", [("s3", "missing object"), ("s3", "missing bucket"),
                                        ("azurite", "missing object"), ("azurite", "missing bucket"),
                                        ("azurite", "refused credentials")])
def test_errors_are_one_line_before_any_worker_starts(request, tmp_path, job, batchinfer, text_files, cache_env,
                                                      kind, case, command):
    from tests.stores import Store

    store = Store(kind, request.getfixturevalue("s3_server" if kind == "s3" else "azurite"))
    bucket = store.new_bucket()
    options = json.loads(json.dumps(store.storage_options))
    url = store.url(bucket, "nope/model.bin")
    if case == "missing bucket":
        url = store.url("bi-no-such-bucket", "model.bin")
    elif case == "refused credentials":
        store.fs().pipe(f"{bucket}/model.bin", b"w")
        url = store.url(bucket, "model.bin")
        options["connection_string"] = store.server.connection_string("V3JvbmdLZXk" + "A" * 77 + "==")
    keys = dict(inputs={"path": str(text_files(1))}, models={"m": {"path": url, "storage_options": options}})
    if command == "run":
        run = job("echo_names.py", **keys, spec_env=cache_env)
        assert not run.output_dir.exists()  # nothing ran, nothing was written
    else:
        spec = tmp_path / "job.yaml"
        spec.write_text(yaml.safe_dump({"entry_script": "echo_names.py", "source_directory": str(SCRIPTS), **keys}))
        run = batchinfer("validate", str(spec), env=cache_env)
    assert_one_line_error(run, "model 'm'", url.split("://")[0] + "://")
    assert not (tmp_path / "cache").exists()  # nothing was downloaded
    secrets = [v for v in (options.get("secret"), options.get("connection_string")) if v]
    assert not any(s in run.stderr for s in secrets)


def test_missing_extra_is_one_line_with_the_install_hint(tmp_path, text_files):
    """.venv-old has no s3fs: the spec's s3:// model says which package to install, exit 2."""
    if not OLD_PYTHON.exists():
        pytest.skip(f"{OLD_PYTHON} (the oldest-versions environment, without s3fs) is not installed")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"entry_script": "echo_names.py", "source_directory": str(SCRIPTS),
                                    "inputs": str(text_files(1)), "models": {"m": "s3://bucket/model.bin"}}))
    proc = subprocess.run([str(OLD_PYTHON), "-m", "batchinfer", "run", str(spec), "--output", str(tmp_path / "out")],
                          env={**os.environ, "PYTHONPATH": str(REPO), "BATCHINFER_CACHE_DIR": str(tmp_path / "c")},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "pip install 'batchinfer[s3]'" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "c").exists()


def test_a_model_and_side_input_over_http(tmp_path, http_files, job, text_files):
    """Any fsspec URL: plain HTTP has no ETag here (Python's server), so size and Last-Modified are the version."""
    (http_files.root / "clf.bin").write_text("weights")
    (http_files.root / "lookup.txt").write_text("table\n")
    env = {"BATCHINFER_CACHE_DIR": str(tmp_path / "cache"), **no_proxy_env()}
    keys = dict(inputs={"path": str(text_files(2))}, models={"clf": f"{http_files.url}/clf.bin"},
                side_inputs={"lookup": f"{http_files.url}/lookup.txt"}, process_count_per_node=1)
    run = job("environment.py", **keys, spec_env=env)
    assert run.code == 0, run.stderr
    seen = json.loads(run.rows()[0])
    assert seen["model"].startswith(str(tmp_path / "cache" / "entries")) and seen["model"].endswith("/clf.bin")
    assert seen["model_dir_files"] == ["clf.bin"] and seen["lookup"] == "table"
    assert run.log("job.log").count("downloaded (") == 2
    again = job("environment.py", "--output", str(tmp_path / "out2"), **keys, spec_env=env)
    assert again.code == 0, again.stderr
    assert again.log("job.log").count("reused from the cache") == 2


@pytest.mark.parametrize("kind, name", [("models", "net"), ("side_inputs", "labels")])
def test_a_location_without_storage_options_uses_its_inputs_store_options_for_the_download_too(
        tmp_path, store, job, kind, name):
    """A model or side input on the store of an input, without storage_options of its own and with no
    SDK environment variables: reached with the input's storage_options by the preflight, the metadata
    and the download alike (one helper, ``JobSpec.location_options``), never passing one and failing another."""
    bucket = store.new_bucket()
    fs = store.fs()
    for i in range(2):
        fs.pipe(f"{bucket}/in/f{i}.txt", f"{i}\n".encode())
    fs.pipe(f"{bucket}/shared/{name}.bin", b"the weights")
    env = {"BATCHINFER_CACHE_DIR": str(tmp_path / "cache"), **no_proxy_env()}
    done = job("reads_location.py", spec_env=env, mini_batch_size=1,
               inputs=[{"path": store.url(bucket, "in"), "storage_options": store.storage_options}],
               **{kind: {name: store.url(bucket, f"shared/{name}.bin")}})
    assert done.code == 0, done.stderr
    assert done.rows() == ["the weights", "the weights"]
    assert done.log("job.log").count("downloaded (") == 1
