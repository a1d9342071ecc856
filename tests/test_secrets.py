"""Secrets (issue 13, item 6): values of storage_options credentials and of environment variables named
like credentials never appear in a file batchinfer writes, on its stdout or stderr, or in the worker's
captured output; credentials are not part of the job's identity, so rotating them does not block a resume.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import yaml

from batchinfer import capture, redact
from tests.conftest import MARKER, SCRIPTS, assert_one_line_error
from tests.stores import no_proxy_env


def _all_written(run, tmp_path: Path) -> dict[str, bytes]:
    """Every file under the output folder, and the command's stdout and stderr."""
    found = {str(p): p.read_bytes() for p in run.output_dir.rglob("*") if p.is_file()}
    found["<stdout>"] = run.stdout.encode()
    found["<stderr>"] = run.stderr.encode()
    return found


def _spec(tmp_path: Path, script: str, **keys) -> Path:
    spec = {"entry_script": script, "source_directory": str(SCRIPTS), "process_count_per_node": 2,
            "run_invocation_timeout": 60, **keys}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _store_secret(store) -> tuple[dict, str]:
    """storage_options for ``store`` holding a credential, and that credential's value."""
    if store.kind == "s3":  # moto accepts any key: a fresh random one shows where it leaks
        secret = "s3-" + secrets.token_urlsafe(30)
        return {**store.storage_options, "key": "AKIA" + secrets.token_hex(8).upper(), "secret": secret}, secret
    return dict(store.storage_options), store.server.account_key  # Azurite checks its (well-known) key


def test_no_secret_in_any_file_or_output(store, batchinfer, tmp_path):
    """A file job on each store whose script prints its whole environment, a secret split across two
    writes, a child process's output, a log record and an exception message holding secrets: every
    file of the output folder, stdout and stderr hold none of them; PARTITION_KEYS's value stays."""
    bucket = store.new_bucket()
    fs = store.fs()
    for name in ("a.txt", "b.txt", "bad.txt", "c.txt"):
        fs.pipe(f"{bucket}/data/{name}", name.encode())
    options, store_secret = _store_secret(store)
    api_token = "tok-" + secrets.token_hex(16)
    aws_secret = "aws-" + secrets.token_urlsafe(24)
    visible = "visible-" + secrets.token_hex(6)
    spec = _spec(
        tmp_path, "prints_secrets.py", mini_batch_size=1, run_max_try=1,
        inputs=[{"path": store.url(bucket, "data"), "storage_options": options}],
        environment_variables={"MY_API_TOKEN": api_token, "PARTITION_KEYS": visible, "STORE_SECRET": store_secret},
    )
    out = tmp_path / "out"
    run = batchinfer("run", str(spec), "--output", str(out), output=out,
                     env={**no_proxy_env(), "AWS_SECRET_ACCESS_KEY": aws_secret})
    assert run.code == 0, run.stderr
    assert run.summary["items_failed"] == 1 and run.summary["items_succeeded"] == 3

    written = _all_written(run, tmp_path)
    for value in (store_secret, api_token, aws_secret):
        leaks = [name for name, data in written.items() if value.encode() in data]
        assert not leaks, f"{value[:6]}... appears in {leaks}"
    worker_logs = "".join(run.log(f"worker-{i}.log") for i in range(2) if (out / "logs" / f"worker-{i}.log").exists())
    assert f"MY_API_TOKEN={redact.MASK}" in worker_logs  # the environment, printed by init()
    assert f"split token: {redact.MASK}\n" in worker_logs  # the value written in two pieces
    assert f"child sees {redact.MASK}" in worker_logs and f"child stderr {redact.MASK}" in worker_logs
    assert f"raw fd 2: {redact.MASK}" in worker_logs
    assert f"partition keys: {visible}" in worker_logs  # not a credential's name: readable
    assert f"PARTITION_KEYS={visible}" in worker_logs
    [error] = run.errors()
    assert f"token {redact.MASK} and key {redact.MASK}" in error["message"]
    assert sorted(run.rows()) == [f"{n} {visible}" for n in ("a.txt", "b.txt", "c.txt")]


def test_validate_and_plan_show_no_secret(s3_server, batchinfer, tmp_path):
    """validate and plan (text and --json) of a job whose input URL and storage_options hold secrets."""
    bucket = s3_server.new_bucket()
    s3_server.fs().pipe(f"{bucket}/data/a.txt", b"a")
    secret = "sk-" + secrets.token_urlsafe(24)
    options = {**s3_server.storage_options, "secret": secret}
    spec = _spec(tmp_path, "echo_names.py", inputs=[{"path": f"s3://{bucket}/data", "storage_options": options}],
                 environment_variables={"DB_PASSWORD": "pw-" + secrets.token_hex(8)})
    password = yaml.safe_load(spec.read_text())["environment_variables"]["DB_PASSWORD"]
    env = {**no_proxy_env(), "MY_API_TOKEN": "tok-" + secrets.token_hex(8)}
    for args in (("validate",), ("plan",), ("plan", "--json")):
        run = batchinfer(*args, str(spec), env=env)
        assert run.code == 0, run.stderr
        for value in (secret, password, env["MY_API_TOKEN"]):
            assert value not in run.stdout + run.stderr, args
    # an error that quotes the secret: masked in the one line
    run = batchinfer("validate", str(spec), "--set", f"inputs.path=s3://{bucket}/{secret}/*.txt", env=env)
    assert_one_line_error(run, "no input files match", redact.MASK)
    assert secret not in run.stderr


def test_rotating_credentials_keeps_the_job(s3_server, batchinfer, tmp_path):
    """The same job with a new storage_options secret and a new MY_API_TOKEN: the finished job is
    reused (same identity); changing what the job computes (mini_batch_size) is not."""
    bucket = s3_server.new_bucket()
    for i in range(3):
        s3_server.fs().pipe(f"{bucket}/data/f{i}.txt", str(i).encode())
    out = tmp_path / "out"

    def run_with(secret: str, token: str, size: int = 1):
        options = {**s3_server.storage_options, "secret": secret}
        spec = _spec(tmp_path, "echo_names.py", mini_batch_size=size,
                     inputs=[{"path": f"s3://{bucket}/data", "storage_options": options}],
                     environment_variables={"MY_API_TOKEN": token, "GREETING": "hello"})
        return batchinfer("run", str(spec), "--output", str(out), output=out, env=no_proxy_env())

    first = run_with("old-secret-" + secrets.token_hex(8), "old-token-1234")
    assert first.code == 0, first.stderr
    second = run_with("new-secret-" + secrets.token_hex(8), "new-token-5678")
    assert second.code == 0, second.stderr
    assert "reused the finished job" in second.stderr
    assert sorted(second.rows()) == sorted(first.rows())
    third = run_with("new-secret-" + secrets.token_hex(8), "new-token-5678", size=2)
    assert third.code == 2 and "different job" in third.stderr


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("AWS_SECRET_ACCESS_KEY", True), ("AWS_ACCESS_KEY_ID", True), ("MY_API_TOKEN", True),
        ("AZURE_STORAGE_CONNECTION_STRING", True), ("AZURE_STORAGE_SAS_TOKEN", True), ("DB_PASSWORD", True),
        ("db_pwd", True), ("GOOGLE_APPLICATION_CREDENTIALS", True), ("APP_CREDENTIAL", True), ("SAS", True),
        ("PARTITION_KEYS", False), ("KEYBOARD", False), ("MONKEY_BUSINESS", False), ("TOKENIZER_PATH", False),
        ("PWD", False), ("HOME", False), ("CONNECTION_POOL", False), ("SECRETARY", False),
    ],
)
def test_which_environment_variables_are_secrets(name, secret):
    assert redact.is_secret_env_name(name) is secret


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"key": "AKIAABCDEFGH", "secret": "abc/def+ghi", "client_kwargs": {"endpoint_url": "http://x:1"}},
         {"AKIAABCDEFGH", "abc/def+ghi"}),
        ({"connection_string": "AccountName=a;AccountKey=c2VjcmV0LWtleQ==;BlobEndpoint=http://h/a;"},
         {"AccountName=a;AccountKey=c2VjcmV0LWtleQ==;BlobEndpoint=http://h/a;", "c2VjcmV0LWtleQ=="}),
        ({"account_name": "myaccount", "account_key": "a-long-key", "sas_token": "sv=2024&sig=xyz123"},
         {"a-long-key", "sv=2024&sig=xyz123"}),
        ({"token": "anon", "project": "my-project"}, set()),  # a mode of gcsfs, not a credential
        ({"password": "ab12", "sas_token": "1234", "secret": "xyz"}, {"ab12"}),  # short: masked as a whole token;
        ({"token": "cache", "key": "true"}, set()),  # a short number, 3 characters, ordinary words: never
        ({"client_secret": "cs-123456", "tenant_id": "tenant-1", "client_id": "client-1"}, {"cs-123456"}),
        ({"credentials": {"private_key": "-----BEGIN KEY-----x", "client_email": "a@b.c"}},
         {"-----BEGIN KEY-----x"}),
    ],
)
def test_secret_values_of_storage_options(options, expected):
    assert set(redact.secret_values([options])) == expected


@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        ([b"token s3cr3t-value here\n"], b"token *** here\n"),
        ([b"split s3cr3t", b"-value\n"], b"split ***\n"),  # one value, two writes
        ([b"a\nb s3cr3t-va", b"lue c\nd"], b"a\nb *** c\nd"),  # a partial last line, written at EOF
        ([b"longer-s3cr3t-value-2 and s3cr3t-value\n"], b"*** and ***\n"),  # longest first
        ([b"\xff\xfe not utf-8 s3cr3t-value\n"], b"\xff\xfe not utf-8 ***\n"),  # bytes are bytes
        ([b"nothing secret\n", b"", b"x"], b"nothing secret\nx"),
    ],
)
def test_capture_masks_across_writes(writes, expected, tmp_path):
    """capture.copy: what the capture process does, on a real pipe into a real file."""
    pattern = capture._pattern(("s3cr3t-value", "longer-s3cr3t-value-2"))
    read_end, write_end = os.pipe()
    for chunk in writes:
        os.write(write_end, chunk)
    os.close(write_end)
    target = tmp_path / "log"
    with open(target, "wb") as out:
        capture.copy(read_end, out.fileno(), pattern)
    os.close(read_end)
    assert target.read_bytes() == expected


def test_no_secrets_no_capture_process(run_marker, text_files, tmp_path):
    """Without secret values fds 1 and 2 are the log file itself (no capture process)."""
    data = text_files(2)
    script = tmp_path / "src" / "fds.py"
    script.parent.mkdir()
    script.write_text(textwrap.dedent("""
        import os
        def run(mini_batch):
            return [os.readlink("/proc/self/fd/1")] * len(mini_batch)
    """))
    env_without = {k: v for k, v in os.environ.items() if not redact.is_secret_env_name(k)}
    env_without[MARKER] = run_marker
    spec = {"entry_script": "fds.py", "source_directory": str(script.parent), "inputs": str(data),
            "process_count_per_node": 1}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "batchinfer", "run", str(tmp_path / "job.yaml"), "--output",
                           str(tmp_path / "out")], env=env_without, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    targets = set((tmp_path / "out" / "parallel_run_step.txt").read_text().split())
    assert targets == {str(tmp_path / "out" / "logs" / "worker-0.log")}


# ------------------------------------------------------------------ the capture process and faults


def test_stack_of_a_worker_holding_the_gil_reaches_the_log_masked(job, tmp_path, text_files):
    """A run() stuck in a C loop that never releases the GIL, in a job with a secret: the watchdog's
    stack dump still reaches worker-N.log (the capture is a process, not a thread needing the GIL),
    and the secret the script printed just before is masked."""
    markers = tmp_path / "markers"
    markers.mkdir()
    token = "tok-" + secrets.token_hex(12)
    run = job("holds_gil.py", inputs={"path": str(text_files(1))}, mini_batch_size=1, run_invocation_timeout=5,
              run_max_try=1, process_count_per_node=1, environment_variables={"MY_API_TOKEN": token},
              arguments=["--marker", str(markers), "--where", "run", "--how", "regex"])
    assert run.code == 1, run.stderr  # its only item failed
    [error] = run.errors()
    assert error["kind"] == "timeout"
    log = run.log("worker-0.log")
    assert "most recent call first" in log and "holds_gil.py" in log
    assert all(token.encode() not in data for data in _all_written(run, tmp_path).values())


def test_capture_processes_die_with_a_sigkilled_coordinator(tmp_path, text_files, run_marker):
    """The capture processes are below the workers: a SIGKILLed coordinator leaves none behind
    (run_marker fails the test if any process of this run outlives it)."""
    from tests.test_processes import all_gone, start, wait_for_files, write_spec

    markers = tmp_path / "markers"
    markers.mkdir()
    spec = write_spec(tmp_path, "holds_gil.py", text_files(2), environment_variables={"MY_API_TOKEN": "tok-123456789"},
                      arguments=["--marker", str(markers), "--where", "run", "--how", "sleep"])
    proc = start(spec, run_marker, "--output", str(tmp_path / "out"))
    workers = [int(p.name) for p in wait_for_files(markers, 2, proc)]
    captures = [c.pid for w in workers for c in psutil.Process(w).children()]
    assert len(captures) == 2  # one capture process per worker: the job has a secret
    proc.kill()
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    assert all_gone(workers + captures) == []


def _rotating_keys(case: str, url: str, credential: str, data: Path) -> dict:
    """The job keys of one case of ``test_a_credential_in_a_url_rotates_without_changing_the_job``."""
    host = url.partition("://")[2]
    local = {"inputs": [{"path": str(data)}]}
    return {
        "input ?sig=": {"inputs": [{"path": f"{url}/a.txt?sv=2022-11-02&sig={credential}"}]},
        "input ?X-Amz-Signature=": {"inputs": [{"path": f"{url}/a.txt?X-Amz-Date=1&X-Amz-Signature={credential}"}]},
        "input user:pass@": {"inputs": [{"path": f"http://reader:{credential}@{host}/a.txt"}]},
        "model ?token=": {**local, "models": {"clf": f"{url}/clf.bin?token={credential}"}},
        "side input ?sig=": {**local, "side_inputs": {"lookup": f"{url}/clf.bin?sp=r&sig={credential}"}},
        "model user:pass@": {**local, "models": {"clf": f"http://reader:{credential}@{host}/clf.bin"}},
        "argument ${TOKEN}": {**local, "arguments": ["--token", "${ROTATING_TOKEN}"]},
    }[case]


@pytest.mark.parametrize("case", ["input ?sig=", "input ?X-Amz-Signature=", "input user:pass@", "model ?token=",
                                  "side input ?sig=", "model user:pass@", "argument ${TOKEN}"])
def test_a_credential_in_a_url_rotates_without_changing_the_job(case, http_files, batchinfer, tmp_path, text_files):
    """A SAS or presigned signature, a ``user:pass@``, or an argument expanding a credential: the job's
    identity (fingerprint, mini-batch digests) and a model's cache entry use it masked, so a rotated one
    is the same finished job, and the same cache entry, not 'holds a different job' and a new download."""
    (http_files.root / "a.txt").write_text("remote\n")
    (http_files.root / "clf.bin").write_text("weights")
    data = text_files(2)
    env = {"BATCHINFER_CACHE_DIR": str(tmp_path / "cache"), **no_proxy_env()}

    def run_with(credential: str, output: Path):
        keys = _rotating_keys(case, http_files.url, credential, data)
        spec = _spec(tmp_path, "echo_names.py", mini_batch_size=1, **keys)
        return batchinfer("run", str(spec), "--output", str(output), output=output,
                          env={**env, "ROTATING_TOKEN": credential})

    first = run_with("OLDSIGVALUE0123", tmp_path / "out")
    assert first.code == 0, first.stderr
    second = run_with("ROTATEDSIGVALUE4567", tmp_path / "out")
    assert second.code == 0, second.stderr
    assert "reused the finished job" in second.stderr
    if case.startswith(("model", "side input")):  # a fresh output folder: the model's copy in the cache
        third = run_with("THIRDSIGVALUE89AB", tmp_path / "out3")
        assert third.code == 0, third.stderr
        assert "reused from the cache" in third.log("job.log") and "downloaded (" not in third.log("job.log")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PASSWORD=ab12", "PASSWORD=***"),  # a short secret as a whole token: after '=', at the end
        ("pw: ab12, next", "pw: ***, next"),
        ("'ab12' \"ab12\"", "'***' \"***\""),
        ("u=1&p=ab12&v=2", "u=1&p=***&v=2"),
        ("ab12;x", "***;x"),
        ("tab12 ab123 xab12", "tab12 ab123 xab12"),  # inside a longer word: left alone
        ("path/ab12/file", "path/ab12/file"),  # not a delimiter of the list: left alone
        ("the s3cr3t-value and xs3cr3t-valuex", "the *** and x***x"),  # a long secret: everywhere
        ("count 1234 and true", "count 1234 and true"),  # never secrets: a short number, an ordinary word
    ],
)
def test_short_secrets_are_masked_as_whole_tokens(text, expected):
    pattern = redact.secrets_pattern(("ab12", "s3cr3t-value", "1234", "true", "xyz"))
    assert pattern.sub(redact.MASK, text) == expected


@pytest.mark.parametrize(
    ("first", "rest", "shown_first", "expected"),
    [
        (b"key s3cr3t", b"-value here\n", b"key ", b"key *** here\n"),  # a secret cut by a long pause
        (b"pw ab", b"12\n", b"pw ", b"pw ***\n"),  # a short one too
        (b"progress 10%", b" 20%\n", b"progress 10%", b"progress 10% 20%\n"),  # no secret's start: shown at once
        (b"almost s3cr3t", b"-valu\n", b"almost ", b"almost s3cr3t-valu\n"),  # held, then not a secret after all
    ],
)
def test_an_idle_flush_holds_back_the_start_of_a_secret(first, rest, shown_first, expected):
    """capture.copy on real pipes: after the idle flush (read back from the log pipe, which blocks until
    it happens: no sleep), the rest arrives; the secret split across the pause is still masked."""
    secrets = ("s3cr3t-value", "ab12")
    source_read, source_write = os.pipe()
    log_read, log_write = os.pipe()
    import threading

    copier = threading.Thread(target=capture.copy,
                              args=(source_read, log_write, capture._pattern(secrets), capture._encoded(secrets)))
    copier.start()
    try:
        os.write(source_write, first)
        shown = b""
        while len(shown) < len(shown_first):  # what the idle flush wrote
            shown += os.read(log_read, 1 << 16)
        assert shown == shown_first
        os.write(source_write, rest)
    finally:
        os.close(source_write)
        copier.join()
    os.close(log_write)
    while chunk := os.read(log_read, 1 << 16):
        shown += chunk
    os.close(log_read)
    os.close(source_read)
    assert shown == expected
