"""The lease of a remote output folder, on the real servers (moto's S3, Azurite) and on file://.

One run holds a remote folder at a time: its lease object is created only if absent, renewed,
taken over once expired (or at once when its holder's pid is gone on this host), and deleted at
the end. ``batchinfer status URL`` reads it from another working directory with no local state.
Expiry is tested by writing old times into the lease, never by waiting.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml

from batchinfer.errors import ExitCode, OutputError
from batchinfer.lease import LEASE_FILE, TTL_S, Lease
from tests.conftest import assert_one_line_error


@dataclass
class Folder:
    """A remote output folder for one test: its URL, and a filesystem to reach it."""

    url: str
    path: str  # within the filesystem
    make_fs: Any
    env: dict[str, str]
    storage_options: dict[str, Any]

    @property
    def lease(self) -> str:
        return f"{self.path}/.batchinfer/{LEASE_FILE}"

    def acquire(self, **kwargs: Any) -> Lease:
        kwargs.setdefault("start", False)
        return Lease.acquire(self.make_fs(), self.path, url=self.url, **kwargs)

    def write(self, name: str, data: bytes) -> None:
        fs = self.make_fs()
        if self.url.startswith("file://"):
            fs.makedirs(f"{self.path}/{name}".rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(f"{self.path}/{name}", data)

    def read_lease_doc(self) -> dict[str, Any] | None:
        fs = self.make_fs()
        return json.loads(fs.cat_file(self.lease)) if fs.exists(self.lease) else None


@pytest.fixture(params=["s3", "azurite", "file"])
def folder(request, tmp_path) -> Folder:
    """An empty output folder on each real store, and on the local disk through file://."""
    if request.param == "file":
        import fsspec

        root = tmp_path / "remote-out"
        return Folder(f"file://{root}", str(root), lambda: fsspec.filesystem("file"), {}, {})
    from tests.stores import Store

    store = Store(request.param, request.getfixturevalue("s3_server" if request.param == "s3" else "azurite"))
    bucket = store.new_bucket()
    return Folder(store.url(bucket, "out"), f"{bucket}/out", store.fs, store.env, store.storage_options)


@pytest.fixture(params=["s3", "azurite"])
def remote(request) -> Folder:
    """An empty output folder on each real object store (for ``batchinfer status URL``)."""
    from tests.stores import Store

    store = Store(request.param, request.getfixturevalue("s3_server" if request.param == "s3" else "azurite"))
    bucket = store.new_bucket()
    return Folder(store.url(bucket, "out"), f"{bucket}/out", store.fs, store.env, store.storage_options)


def lease_doc(host: str, pid: int, renewed_s_ago: float, status: dict[str, Any] | None = None,
              ttl_s: float = TTL_S, pid_space: str | None = None) -> bytes:
    """A lease as another run would have written it, renewed ``renewed_s_ago`` seconds ago."""
    now = datetime.now(timezone.utc)
    return json.dumps({
        "format": 1, "run_id": "ab" * 16, "pid": pid, "host": host,
        "started_at": (now - timedelta(seconds=renewed_s_ago + 60)).isoformat(),
        "renewed_at": (now - timedelta(seconds=renewed_s_ago)).isoformat(),
        "ttl_s": ttl_s, "command": "batchinfer run job.yaml", "pid_space": pid_space, "status": status,
    }).encode()


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


# ---------------------------------------------------------------- taking the lease


def test_of_runs_acquiring_at_once_exactly_one_wins(folder):
    runs = 4
    barrier = threading.Barrier(runs)
    won: list[Lease] = []
    refused: list[str] = []
    errors: list[BaseException] = []
    filesystems = [folder.make_fs() for _ in range(runs)]  # as separate runs would have

    def run(fs: Any) -> None:
        barrier.wait()
        try:
            won.append(Lease.acquire(fs, folder.path, url=folder.url, start=False))
        except OutputError as exc:
            refused.append(str(exc))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fs,)) for fs in filesystems]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(won) == 1, refused
    assert len(refused) == runs - 1
    assert all("is in use by another batchinfer run" in message for message in refused)
    assert folder.read_lease_doc()["run_id"] == won[0].run_id
    won[0].release()


def test_a_live_lease_refuses_a_second_run_in_one_line(folder):
    first = folder.acquire()
    with pytest.raises(OutputError) as refused:
        folder.acquire()
    message = str(refused.value)
    assert refused.value.exit_code == ExitCode.USAGE
    assert "\n" not in message
    found = re.match(rf"output {re.escape(folder.url)} is in use by another batchinfer run "
                     rf"\(pid {os.getpid()} on {re.escape(socket.gethostname())}, renewed (\d+) s ago; "
                     rf"expires in (\d+) s unless renewed\) \(wait for it to end", message)
    assert found, message
    renewed, expires = int(found[1]), int(found[2])
    assert renewed + expires == TTL_S and expires > 0
    assert folder.read_lease_doc()["run_id"] == first.run_id  # the refused run changed nothing
    first.release()


# (host, pid, seconds since renewed) of a lease another run left -> whether a new run takes it over
HERE = "here"  # this host name, boot and pid namespace
HERE_OTHER_CONTAINER = "here-other-pid-space"  # this host name, but another pid namespace
ELSEWHERE = "another-machine.example"
LIVE, GONE = "live", "gone"


@pytest.mark.parametrize(
    "host, pid, renewed_s_ago, taken",
    [
        (ELSEWHERE, 4242, 0, False),  # renewed just now: live
        (ELSEWHERE, 4242, TTL_S - 5, False),  # about to expire, but not yet
        (ELSEWHERE, 4242, TTL_S + 5, True),  # not renewed for longer than its TTL: expired
        (ELSEWHERE, 4242, 3600, True),  # a run killed an hour ago on another machine
        (HERE, GONE, 0, True),  # killed (SIGKILL) on this host: its pid is gone, taken at once
        (HERE, LIVE, 0, False),  # its pid is alive on this host: live
        (HERE, LIVE, TTL_S + 5, True),  # alive but hung (or its pid reused): expired by its TTL
        (HERE_OTHER_CONTAINER, GONE, 0, False),  # a pid of another namespace says nothing here
    ],
    ids=["elsewhere-fresh", "elsewhere-almost-expired", "elsewhere-expired", "elsewhere-long-dead",
         "here-pid-gone", "here-pid-alive", "here-pid-alive-but-expired", "same-name-other-pid-space"],
)
def test_a_lease_left_by_another_run_is_taken_over_only_once_expired(folder, host, pid, renewed_s_ago, taken):
    from batchinfer.lease import pid_space_of_this_process

    holder_host = socket.gethostname() if host in (HERE, HERE_OTHER_CONTAINER) else host
    pid_space = pid_space_of_this_process() if host == HERE else "another-boot pid:[1]"
    holder_pid = {GONE: dead_pid(), LIVE: os.getppid()}.get(pid, pid)  # LIVE: the process that started the tests
    folder.write(f".batchinfer/{LEASE_FILE}", lease_doc(holder_host, holder_pid, renewed_s_ago, pid_space=pid_space))
    if taken:
        lease = folder.acquire()
        assert folder.read_lease_doc()["run_id"] == lease.run_id
        lease.release()
    else:
        with pytest.raises(OutputError, match=rf"in use by another batchinfer run \(pid {holder_pid} on "):
            folder.acquire()
        assert folder.read_lease_doc()["run_id"] == "ab" * 16


def test_of_two_runs_taking_over_an_expired_lease_at_once_exactly_one_wins(folder):
    folder.write(f".batchinfer/{LEASE_FILE}", lease_doc(ELSEWHERE, 4242, 3600))
    runs = 3
    barrier = threading.Barrier(runs)
    won: list[Lease] = []
    refused: list[OutputError] = []
    filesystems = [folder.make_fs() for _ in range(runs)]

    def run(fs: Any) -> None:
        barrier.wait()
        try:
            won.append(Lease.acquire(fs, folder.path, url=folder.url, start=False))
        except OutputError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=run, args=(fs,)) for fs in filesystems]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == runs - 1, refused
    assert folder.read_lease_doc()["run_id"] == won[0].run_id
    won[0].release()


def test_a_damaged_lease_is_refused_with_what_to_do(folder):
    folder.write(f".batchinfer/{LEASE_FILE}", b"{not json")
    with pytest.raises(OutputError, match=r"is damaged .* delete that object"):
        folder.acquire()


# ---------------------------------------------------------------- keeping and letting go


def test_renewal_rewrites_the_lease_with_the_live_status(folder):
    lease = folder.acquire()
    before = folder.read_lease_doc()
    assert lease.renew({"job": "j", "mini_batches_done": 3}) is True
    after = folder.read_lease_doc()
    assert after["run_id"] == lease.run_id
    assert after["status"] == {"job": "j", "mini_batches_done": 3}
    assert after["renewed_at"] > before["renewed_at"]
    lease.release()


def test_renewal_notices_that_another_run_took_the_lease_and_stops(folder):
    lost = threading.Event()
    reasons: list[str] = []
    first = folder.acquire(on_lost=lambda reason: (reasons.append(reason), lost.set()), interval_s=0.05)
    # the first run stalls past its TTL (as if suspended): its lease now reads as expired ...
    stalled = folder.read_lease_doc()
    stalled["renewed_at"] = (datetime.now(timezone.utc) - timedelta(seconds=TTL_S + 5)).isoformat()
    folder.write(f".batchinfer/{LEASE_FILE}", json.dumps(stalled).encode())
    # ... and a second run takes it over
    second = folder.acquire()
    first.start()  # the first run's renewal thread wakes up
    assert lost.wait(timeout=60), "the first run never noticed"
    assert first.lost
    assert reasons == [first.lost_reason]
    assert "another batchinfer run took over the lease" in first.lost_reason
    assert f"(pid {os.getpid()} on {socket.gethostname()})" in first.lost_reason
    assert first.renew() is False
    first.release()  # must not delete the second run's lease
    assert folder.read_lease_doc()["run_id"] == second.run_id
    second.release()


def test_release_deletes_the_lease_and_the_next_run_starts_at_once(folder):
    first = folder.acquire()
    first.release()
    assert folder.read_lease_doc() is None
    second = folder.acquire()
    assert folder.read_lease_doc()["run_id"] == second.run_id
    second.release()
    first.release()  # twice: nothing more happens
    assert folder.read_lease_doc() is None


# ---------------------------------------------------------------- batchinfer status URL, from elsewhere

LIVE_STATUS = {"job": "scores", "pid": 4242, "workers": 2, "started_at": "2026-11-30T08:00:00+00:00",
               "state": "running", "updated_at": "2026-11-30T08:01:00+00:00", "elapsed_s": 60.0,
               "mini_batches_done": 3, "mini_batches_total": 10, "listing_done": True, "items_done": 30,
               "items_failed": 1, "busy_workers": 2, "tries": 4}


@pytest.fixture
def elsewhere(tmp_path, batchinfer):
    """``batchinfer status`` run from a fresh working directory with no local state, credentials
    from the SDK's environment variables only."""
    cwd = tmp_path / "another-machine"
    cwd.mkdir()

    def status(folder: Folder, *args: str):
        return batchinfer("status", *args, cwd=cwd, env=folder.env)

    return status


def test_status_of_a_remote_folder_while_it_runs(remote, elsewhere):
    lease = remote.acquire()
    lease.renew(LIVE_STATUS)
    run = elsewhere(remote, remote.url)
    assert run.code == 0, run.stderr
    assert re.fullmatch(rf"scores: running \(pid {os.getpid()} on {re.escape(socket.gethostname())}, "
                        r"renewed \d+ s ago\): 3/10 mini-batches, 30 items \(1 failed\), 0 items/s, "
                        r"2/2 workers busy, 60.0s\n", run.stdout), run.stdout
    doc = json.loads(elsewhere(remote, remote.url, "--json").stdout)
    assert doc["state"] == "running"
    assert doc["lease"]["run_id"] == lease.run_id
    assert doc["mini_batches_done"] == 3
    lease.release()


def test_status_of_a_finished_remote_folder(remote, elsewhere):
    summary = {"status": "succeeded", "exit_code": 0, "job": "scores", "items_total": 100, "items_succeeded": 99,
               "items_failed": 1, "mini_batches_total": 10, "elapsed_s": 12.5,
               "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    remote.write("summary.json", json.dumps(summary).encode())
    run = elsewhere(remote, remote.url)
    assert run.code == 0, run.stderr
    assert run.stdout == "scores: succeeded: 99/100 items succeeded, 1 failed, 10 mini-batches, 12.5s\n"
    assert json.loads(elsewhere(remote, remote.url, "--json").stdout)["state"] == "succeeded"


def test_status_of_a_remote_folder_whose_run_stopped_renewing(remote, elsewhere):
    remote.write(f".batchinfer/{LEASE_FILE}", lease_doc(ELSEWHERE, 4242, 100, status=LIVE_STATUS))
    run = elsewhere(remote, remote.url)
    assert run.code == 0, run.stderr
    found = re.fullmatch(rf"scores: stale: the output folder's lease \(pid 4242 on {re.escape(ELSEWHERE)}\) "
                         r"expired: the run holding it stopped renewing it (\d+) s ago; run the job again to resume\n",
                         run.stdout)
    assert found and int(found[1]) >= 100, run.stdout
    assert json.loads(elsewhere(remote, remote.url, "--json").stdout)["state"] == "stale"


def test_a_summary_newer_than_an_expired_lease_says_the_job_finished(remote, elsewhere):
    # the run wrote its summary, then was killed before it could delete its lease
    remote.write(f".batchinfer/{LEASE_FILE}", lease_doc(ELSEWHERE, 4242, 100))
    summary = {"status": "failed", "exit_code": 1, "job": "scores", "items_total": 10, "items_succeeded": 2,
               "items_failed": 8, "mini_batches_total": 1, "elapsed_s": 3.0,
               "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    remote.write("summary.json", json.dumps(summary).encode())
    run = elsewhere(remote, remote.url)
    assert run.stdout.startswith("scores: failed: 2/10 items succeeded"), run.stdout


def test_status_of_a_remote_folder_that_is_not_a_batchinfer_one(remote, elsewhere):
    remote.write("somefile.txt", b"hello")
    run = elsewhere(remote, remote.url)
    assert_one_line_error(run, f"{remote.url} is not a batchinfer output folder")


def test_status_reads_the_folder_and_credentials_from_a_job_spec(remote, elsewhere, tmp_path):
    remote.write("summary.json", json.dumps({
        "status": "succeeded", "exit_code": 0, "job": "scores", "items_total": 1, "items_succeeded": 1,
        "items_failed": 0, "mini_batches_total": 1, "elapsed_s": 1.0, "finished_at": "2026-11-30T08:00:00+00:00",
    }).encode())
    spec = tmp_path / "another-machine" / "job.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "scores", "entry_script": "score.py", "inputs": [{"path": "data"}],
        "output": {"path": remote.url, "storage_options": remote.storage_options},
    }))
    run = elsewhere(Folder(remote.url, remote.path, remote.make_fs, {}, {}), "--spec", str(spec))  # no env
    assert run.code == 0, run.stderr
    assert run.stdout == "scores: succeeded: 1/1 items succeeded, 0 failed, 1 mini-batches, 1.0s\n"



@pytest.mark.parametrize("problem", ["missing-bucket", "wrong-key"])
def test_status_of_a_remote_folder_it_cannot_read_is_one_line(azurite, s3_server, batchinfer, tmp_path, problem):
    from tests.stores import Store

    if problem == "missing-bucket":
        store = Store("s3", s3_server)
        url, env = store.url("no-such-bucket-here", "out"), store.env
        expected = "s3://no-such-bucket-here/out is not a batchinfer output folder"
    else:  # Azurite checks its account key (moto's server accepts any)
        store = Store("azurite", azurite)
        url = store.url(store.new_bucket(), "out")
        wrong = azurite.connection_string(key="d3Jvbmcta2V5LW5vdC1hemVydGl0ZXMtb3duLWtleS0xMjM0NTY3OA==")
        env = {"AZURE_STORAGE_CONNECTION_STRING": wrong}
        expected = f"output {url}: "
    run = batchinfer("status", url, cwd=tmp_path, env=env)
    assert_one_line_error(run, expected)
    assert "d3Jvbmcta2V5" not in run.stderr


def test_a_lease_in_a_bucket_that_does_not_exist_is_one_error_naming_the_url(store):
    from batchinfer.errors import StorageError

    url = store.url("no-such-bucket-here", "out")
    with pytest.raises(StorageError) as refused:
        Lease.acquire(store.fs(), "no-such-bucket-here/out", url=url, start=False)
    assert str(refused.value).startswith(f"output {url}: ")
    assert "\n" not in str(refused.value)


def test_a_run_that_cannot_renew_its_lease_gives_it_up_before_another_run_may_take_it(s3_server):
    import s3fs

    from batchinfer.conditional import S3Objects
    from tests.stores import S3_REGION, free_port

    bucket = s3_server.new_bucket()
    reasons: list[str] = []
    # a TTL far shorter than the retries of one renewal: the first failed renewal is already too late
    lease = Lease.acquire(s3_server.fs(), f"{bucket}/out", url=f"s3://{bucket}/out", ttl_s=0.2, interval_s=0.1,
                          on_lost=reasons.append, start=False)
    # the store stops answering (nothing listens on that port any more)
    unreachable = s3fs.S3FileSystem(
        skip_instance_cache=True, key="k", secret="s", config_kwargs={"retries": {"max_attempts": 1}},
        client_kwargs={"endpoint_url": f"http://127.0.0.1:{free_port()}", "region_name": S3_REGION})
    unreachable.retries = 1  # s3fs's own retries (batchinfer's retrying() still tries 5 times)
    lease._objects = S3Objects(unreachable)  # the same lease, its store now out of reach
    assert lease.renew() is False
    assert lease.lost
    assert reasons and reasons[0].startswith("it could not be renewed for "), reasons
    lease.release()  # gives up quietly: the lease expires on the store


@pytest.mark.parametrize("store_late_s", [0.0, 0.3, 0.999])
def test_a_lease_renewed_within_the_stores_second_reads_as_renewed_0_s_ago(store_late_s):
    """The store's clock (an HTTP Date) has whole seconds, so a lease renewed in the same second is read
    a fraction of a second "before" it was renewed: status said "renewed -0 s ago"."""
    from batchinfer.lease import LeaseDoc, SeenLease

    renewed = datetime(2026, 11, 30, 10, 0, 0, 500_000, tzinfo=timezone.utc)
    doc = LeaseDoc(format=1, run_id="0" * 32, pid=42, host="vm", started_at=renewed, renewed_at=renewed, ttl_s=30)
    seen = SeenLease(doc, "etag", renewed - timedelta(seconds=store_late_s))
    assert seen.age_s == 0.0
    assert "renewed 0 s ago; expires in 30 s" in seen.describe()
