"""storage: the MNIST job reading its PNGs from an S3 server, against the server's own ceiling and local disk.

10,000 PNGs (``--quick``: 2,000), made as the mnist benchmark makes them, are
uploaded (untimed) to moto's S3 server, which runs in a process of its own
(``scripts/s3_server.py``: 127.0.0.1 only, a free port, region eu-west-1),
started before and stopped after the measured runs. Tools, interleaved:

- ceiling (the reference): ``scripts/s3_ceiling.py``, a bare loop of concurrent
  s3fs reads of the same objects (``fs.find`` of the prefix, then every object
  read whole). Two ways are probed once, untimed, on a few hundred objects:
  one ``fs.cat(paths)`` call (s3fs's event loop) and ``fs.cat_file`` in thread
  pools; the faster read rate is the one measured.
- batchinfer, S3: the sample MNIST job (entry script and model of
  ``sample_models/mnist``), ``inputs.path: s3://.../*.png`` with
  ``storage_options`` naming the server, output on local disk,
  ``mini_batch_size`` 256 and 32, 2 processes.
- batchinfer, local: the same job on the same PNGs on local disk (size 256).

The server is the bottleneck (moto serves a few hundred GETs/s here, in
Python) and its CPU competes with the jobs for the 2 cores, so each run's
server CPU time is read (psutil) and reported; it is taken out of the run's
"background load", which counts everything outside the measured process tree.

Target: batchinfer-S3 throughput >= 0.8 x the ceiling's, i.e. downloads
overlapped with scoring; measured as the median of the per-round ratios (the
ceiling swings with the machine's load: client and server are CPU-bound).
"""

from __future__ import annotations

import importlib.util
import selectors
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness import (
    BenchmarkError,
    BenchResult,
    Context,
    ProcResult,
    Row,
    Target,
    measure,
    median,
    median_of,
    run_batchinfer,
    run_reference,
    write_job,
)
from benchmarks.mnist import BATCH, MODEL, MODEL_DIR, make_images

NAME = "storage"
IMAGES = 10_000
IMAGES_QUICK = 2_000
SMALL_BATCH = 32
REGION = "eu-west-1"
BUCKET = "bench-mnist"
PREFIX = f"{BUCKET}/mnist"
KEY, SECRET = "bench-access-key", "bench-secret-key"  # moto accepts any credentials
PROBE_OBJECTS = 400
PROBES = (("cat", 0), ("threads", 8), ("threads", 16), ("threads", 32))
TARGET = 0.8


class S3ServerProcess:
    """moto's S3 server in its own process (``scripts/s3_server.py``), on 127.0.0.1."""

    def __init__(self, ctx: Context) -> None:
        with open(ctx.path("logs", "s3_server.stderr"), "wb") as err:
            self.proc = subprocess.Popen(
                [ctx.python, str(ctx.scripts / "s3_server.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err, env=ctx.env(), text=True,
            )
        self.endpoint = self._first_line(60.0)
        if not self.endpoint.startswith("http://127.0.0.1:"):
            self.stop()
            raise BenchmarkError(f"the S3 server did not start (said {self.endpoint!r}; see logs/s3_server.stderr)")
        self.ps = psutil.Process(self.proc.pid)

    def _first_line(self, timeout: float) -> str:
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return ""
        return self.proc.stdout.readline().strip()

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs's keyword arguments for this server."""
        return {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION}}

    def cpu_s(self) -> float:
        """User + system CPU seconds the server has used so far (all its threads)."""
        try:
            t = self.ps.cpu_times()
        except psutil.Error:
            raise BenchmarkError(f"the S3 server (pid {self.proc.pid}) is gone; see logs/s3_server.stderr") from None
        return t.user + t.system

    def stop(self) -> None:
        """Close its stdin (it then stops by itself); kill it by pid if it does not."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _upload(server: S3ServerProcess, folder: Path, count: int) -> None:
    """Put the PNGs under ``s3://PREFIX/`` (s3fs sends the PUTs concurrently)."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)
    fs.mkdir(BUCKET)
    names = [f"img_{i:05d}.png" for i in range(count)]
    fs.put([str(folder / n) for n in names], [f"{PREFIX}/{n}" for n in names])
    found = len(fs.find(PREFIX))
    if found != count:
        raise BenchmarkError(f"upload: {found} objects under s3://{PREFIX}, expected {count}")


def _phases(result: ProcResult) -> None:
    """``phase NAME: 1.23s`` lines of a reference's stderr into ``result.extra``."""
    for line in result.stderr_path.read_text(errors="replace").splitlines():
        if line.startswith("phase ") and line.endswith("s") and ": " in line:
            name, _, value = line[len("phase "):].rpartition(": ")
            result.extra[f"phase {name}"] = float(value[:-1])


def _read_rate(result: ProcResult, objects: int) -> float:
    """Objects/s of the ceiling's read loop alone (after listing, before writing its output)."""
    return objects / max(1e-9, result.extra["phase read"] - result.extra["phase listed"])


def _with_server_cpu(server: S3ServerProcess, fn: Callable[[], ProcResult]) -> Callable[[], ProcResult]:
    """``fn``, also recording the server's CPU seconds during the run (and taking them out of the
    run's background load: the server is part of what is measured, not another user of the machine)."""
    def run() -> ProcResult:
        before = server.cpu_s()
        result = fn()
        cpu = server.cpu_s() - before
        result.extra["server_cpu_s"] = cpu
        if result.wall_s > 0:
            result.background_cores = max(0.0, result.background_cores - cpu / result.wall_s)
        return result

    return run


def run(ctx: Context) -> BenchResult:
    """Measure the ceiling of concurrent s3fs reads, batchinfer on S3 (two sizes) and on local disk."""
    missing = [name for name in ("s3fs", "moto", "werkzeug") if importlib.util.find_spec(name) is None]
    if missing:
        return BenchResult(notes=[f"NOT RUN: {', '.join(missing)} not installed; "
                                  f"pip install 'batchinfer[s3]' 'moto[server]'"])
    count = IMAGES_QUICK if ctx.quick else IMAGES
    ctx.log(f"{NAME}: making {count:,} PNGs")
    folder = make_images(ctx, count)
    ctx.log(f"{NAME}: starting the S3 server (moto, its own process)")
    server = S3ServerProcess(ctx)
    try:
        return _measure(ctx, server, folder, count)
    finally:
        server.stop()


def _job(ctx: Context, name: str, path: str, size: int, storage_options: dict[str, Any] | None = None) -> Path:
    inputs: dict[str, Any] = {"type": "file", "path": path}
    if storage_options:
        inputs["storage_options"] = storage_options
    return write_job(ctx.workdir / "jobs" / f"{name}.yaml", {
        "name": f"storage-bench-{name}",
        "entry_script": "digit_identification.py",
        "source_directory": str(MODEL_DIR),
        "models": {"mnist": str(MODEL)},
        "inputs": inputs,
        "mini_batch_size": size,
        "node_count": 1,
        "process_count_per_node": 2,
    })


def _measure(ctx: Context, server: S3ServerProcess, folder: Path, count: int) -> BenchResult:
    result = BenchResult()
    ctx.log(f"{NAME}: uploading {count:,} PNGs to {server.endpoint} (untimed)")
    cpu0, t0 = server.cpu_s(), time.perf_counter()
    _upload(server, folder, count)
    upload_s, upload_cpu = time.perf_counter() - t0, server.cpu_s() - cpu0
    result.notes.append(f"upload (untimed): {count:,} PUTs in {upload_s:.1f}s, server CPU {upload_cpu:.1f}s")

    ceiling_script = str(ctx.scripts / "s3_ceiling.py")
    env = ctx.env(AWS_EC2_METADATA_DISABLED="true")

    def ceiling(mode: str, threads: int, limit: int | None, label: str) -> Callable[[], ProcResult]:
        def build(out: Path, _: Path) -> list[str]:
            cmd = [ctx.python, ceiling_script, f"s3://{PREFIX}", server.endpoint, str(out), "--mode", mode]
            cmd += ["--threads", str(threads)] if mode == "threads" else []
            return cmd + (["--limit", str(limit)] if limit else [])

        return _with_server_cpu(server, lambda: run_reference(
            ctx, label, build, limit or count, env=env, after=lambda r, _: _phases(r)))

    ctx.log(f"{NAME}: probing the ceiling's ways of reading ({PROBE_OBJECTS} objects each, untimed)")
    rates = {}
    for mode, threads in PROBES:
        probe = ceiling(mode, threads, PROBE_OBJECTS, f"probe-{mode}{threads or ''}")()
        rates[(mode, threads)] = _read_rate(probe, PROBE_OBJECTS)
    mode, threads = max(rates, key=rates.get)
    way = "fs.cat(paths)" if mode == "cat" else f"fs.cat_file in {threads} threads"
    result.notes.append("ceiling probe, read rate on " + f"{PROBE_OBJECTS} objects: " + ", ".join(
        f"{'fs.cat' if m == 'cat' else f'{t} threads'} {r:.0f}/s" for (m, t), r in rates.items()) + f"; kept {way}")

    s3_url = f"s3://{PREFIX}/*.png"
    jobs = {
        BATCH: _job(ctx, "s3-256", s3_url, BATCH, server.storage_options),
        SMALL_BATCH: _job(ctx, f"s3-{SMALL_BATCH}", s3_url, SMALL_BATCH, server.storage_options),
    }
    local_job = _job(ctx, "local-256", str(folder / "*.png"), BATCH)

    def batchinfer(job: Path, label: str) -> Callable[[], ProcResult]:
        return _with_server_cpu(server, lambda: run_batchinfer(ctx, job, label, count, env=env)[0])

    tools = [("ceiling", ceiling(mode, threads, None, "s3-ceiling"))]
    tools += [(f"s3-{size}", batchinfer(job, f"storage-s3-{size}")) for size, job in jobs.items()]
    tools.append(("local", batchinfer(local_job, "storage-local")))
    ctx.log(f"{NAME}: measuring")
    runs = measure(ctx, tools)

    def server_note(name: str) -> str:
        cpu = median_of(runs[name], "server_cpu_s")
        cores = median([r.extra["server_cpu_s"] / r.wall_s for r in runs[name]])
        return f"server CPU {cpu:.1f}s ({cpu / count * 1000:.2f} ms/object, {cores:.2f} cores)"

    ceil_row = Row.from_runs(NAME, f"ceiling: s3fs, {way} (ref)", count, runs["ceiling"], ratio=1.0)
    read_rate = median([_read_rate(r, count) for r in runs["ceiling"]])
    list_s = median_of(runs["ceiling"], "phase listed")
    client_cpu = median_of(runs["ceiling"], "phase cpu")
    ceil_row.extra.update(read_objects_per_s=read_rate, listed_s=list_s, client_cpu_s=client_cpu,
                          server_cpu_s=median_of(runs["ceiling"], "server_cpu_s"))
    ceil_row.note = (f"read loop alone {read_rate:.0f} objects/s ({1000 / read_rate:.2f} ms/object); "
                     + server_note("ceiling"))
    result.rows.append(ceil_row)
    for size in jobs:
        row = Row.from_runs(NAME, f"batchinfer S3, mini_batch_size {size}", count, runs[f"s3-{size}"])
        row.extra["server_cpu_s"] = median_of(runs[f"s3-{size}"], "server_cpu_s")
        row.note = server_note(f"s3-{size}")
        result.rows.append(row)
    local = Row.from_runs(NAME, f"batchinfer local disk, mini_batch_size {BATCH}", count, runs["local"])
    result.rows.append(local)
    for row in result.rows[1:]:
        row.ratio = ceil_row.wall_s / row.wall_s
    for size, row in zip(jobs, result.rows[1:-1]):
        # per round (the tools run interleaved): the ceiling swings with the machine's load, and a
        # ratio of two runs made a minute apart is steadier than a ratio of medians
        paired = [c.wall_s / r.wall_s for c, r in zip(runs["ceiling"], runs[f"s3-{size}"])]
        row.extra["paired_ratios"] = [round(x, 3) for x in paired]
        result.targets.append(Target(NAME, f"{row.tool} throughput / ceiling (median of the per-round ratios)",
                                     median(paired), TARGET))
        result.notes.append(f"{row.tool} / ceiling per round: " + ", ".join(f"{x:.2f}" for x in paired)
                            + f"; ceiling walls {', '.join(f'{c.wall_s:.1f}' for c in runs['ceiling'])}s")

    result.notes.append(
        "the S3 server is moto in its own process on 127.0.0.1 (werkzeug, one thread per request, Python): "
        "it is the bottleneck and its CPU competes with the job's 2 processes for the 2 cores; its CPU per "
        "run is in the notes of each S3 row and is not counted as background load")
    result.notes.append(
        f"ceiling per GET: {1000 / read_rate:.2f} ms of wall per object in the read loop "
        f"({read_rate:.0f} objects/s; listing {count:,} objects took {list_s:.2f}s after the script started), "
        f"server CPU {ceil_row.extra['server_cpu_s'] / count * 1000:.2f} ms per object, client (s3fs) CPU "
        f"{client_cpu / count * 1000:.2f} ms per object; whole process {ceil_row.items_per_s:.0f} objects/s")
    result.notes.append(
        "server CPU per object of a batchinfer row / the ceiling's ~ requests per object (~2 when each "
        "object is read through s3fs's open(), which sends a HEAD before the GET; ~1 for one GET each)")
    result.notes.append(f"batchinfer local / ceiling: {local.ratio:.2f} (how far the store slows the job down)")
    s3_runs = [r for size in jobs for r in runs[f"s3-{size}"]]
    if all("init_s_max" in r.extra for r in s3_runs):
        init = median([r.extra["init_s_max"] for r in s3_runs])
        result.notes.append(
            f"batchinfer's fixed start-up is in its wall and not in the ceiling's: init() (importing TensorFlow, "
            f"loading the model) took {init:.2f}s (median init_s_max of the S3 runs), so unless downloads "
            f"also overlap init(), the best ratio is ceiling / (ceiling + init) = "
            f"{ceil_row.wall_s / (ceil_row.wall_s + init):.2f} here")
    return result
