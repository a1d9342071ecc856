"""mnist: scoring PNG digits with the sample Keras model, end to end, against hand-written loops and Ray.

10,000 PNGs (``--quick``: 2,000), copies of the 1,000 sample digits under new
names. batchinfer runs the sample entry script
(``sample_models/mnist/digit_identification.py``) with the sample model,
``mini_batch_size`` 256, 2 processes, on the local backend and (with Ray) on
``--set backend=ray``: one node, 2 actors, batchinfer starting its own Ray
instance. References, each a whole process:

- ``mnist_bare.py``: the bare batched loop in ONE process (load the model,
  decode PNGs with PIL, ``model(batch, training=False)`` per 256); the ceiling
  is that throughput x 2 cores. (Full run: also a 256-image run of it, its
  fixed cost, for a ceiling that does not halve start-up: "fixed + work / 2".)
- ``mnist_pool.py``: a hand-written spawn ``multiprocessing.Pool(2)``, the
  model loaded once per process, one task per 256 paths.
- ``mnist_actor_pool.py``: a hand-written Ray ``ActorPool`` of 2 actors
  (``num_cpus=0.5``), the model loaded once per actor, one call per 256 paths;
  its wall is the whole process (``ray.init`` to ``ray.shutdown``), as
  batchinfer's, which also starts and stops its Ray instance.
- ``mnist_ray.py``: Ray Data ``read_images`` + ``map_batches`` on an actor pool
  of 2 (``num_cpus=0.5``), batch 256; its wall is process start to the last
  row written (its exit, after ``ray.shutdown()``, is in the notes). Also Ray
  Data ``from_items`` of the paths (PIL decoding in the actors).

Ray costs seconds per run whatever the size (``ray.init`` ~3-4 s, actors
importing TensorFlow, shutdown ~1.5 s), so ``--quick`` leaves every Ray row
out unless given ``--ray`` (then Ray Data only as ``from_items``, the faster
variant here). Every Ray run is on loopback only (``ray_command``/``ray_env``).
In the full run, a 256-image job (one mini-batch) of each backend gives
batchinfer's start-up cost: local and with Ray.

Also reported: batchinfer's ``worker_rss_mb_max`` (worker RSS after
``init()``) and ``init_s_max`` from summary.json.

Targets: batchinfer >= 0.90 x (bare x 2 cores); faster than Ray Data. With
``backend: ray``: >= 0.91 x the ``ActorPool``'s throughput (within 10%), faster
than Ray Data ``from_items``, >= 2x faster than Ray Data ``read_images``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from benchmarks._harness import (
    REPO,
    BenchResult,
    Context,
    ProcResult,
    Row,
    Target,
    measure,
    median_of,
    ray_command,
    ray_env,
    run_batchinfer,
    run_reference,
    write_job,
)

NAME = "mnist"
IMAGES = 10_000
IMAGES_QUICK = 2_000
BATCH = 256
SAMPLE_DIR = REPO / "sample_data" / "mnist"
MODEL_DIR = REPO / "sample_models" / "mnist"
MODEL = MODEL_DIR / "model.keras"
RAY_BACKEND = ("--set", "backend=ray")
RAY_PHASES = ["ray.init", "first batch", "last row written", "ray.shutdown"]


def make_images(ctx: Context, count: int) -> Path:
    """``count`` PNGs named ``img_00000.png`` ...: the sample digits copied round-robin."""
    folder = ctx.workdir / "data" / f"mnist-{count}"
    done = folder / ".complete"
    if done.exists():
        return folder
    sources = sorted(SAMPLE_DIR.glob("digit_*.png"))
    if not sources:
        raise SystemExit(f"benchmarks: no sample digits in {SAMPLE_DIR}")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copyfile(sources[i % len(sources)], folder / f"img_{i:05d}.png")
    done.touch()
    return folder


def _warm_up(ctx: Context, code: str) -> None:
    """Import a framework once, untimed, so no measured run pays for a cold page cache."""
    subprocess.run([ctx.python, "-c", code], env=ctx.env(), check=False, capture_output=True)


def _ray_after(result: ProcResult, run_dir: Path) -> None:
    """Extras of a Ray reference run: when its last row was written, and its phases from stderr."""
    done = float((run_dir / "done.txt").read_text())
    result.extra["to_last_row_s"] = done - result.start_epoch
    for line in result.stderr_path.read_text(errors="replace").splitlines():  # "phase NAME: 1.23s"
        if line.startswith("phase ") and line.endswith("s") and ": " in line:
            name, _, value = line[len("phase "):].rpartition(": ")
            result.extra[f"phase {name}"] = float(value[:-1])


def _phases_note(tool: str, runs: list[ProcResult]) -> str | None:
    """'TOOL, seconds after the script started (median): ray.init 3.1, ...' when every run logged them."""
    if not all(f"phase {p}" in r.extra for r in runs for p in RAY_PHASES):
        return None
    return f"{tool}, seconds after the script started (median): " + ", ".join(
        f"{p} {median_of(runs, f'phase {p}'):.1f}" for p in RAY_PHASES)


def run(ctx: Context) -> BenchResult:
    """Measure the references, batchinfer local and batchinfer on Ray, on the same images."""
    count = IMAGES_QUICK if ctx.quick else IMAGES
    ctx.log(f"{NAME}: making {count:,} PNGs")
    folder = make_images(ctx, count)
    job = write_job(ctx.workdir / "jobs" / "mnist.yaml", {
        "name": "mnist-bench",
        "entry_script": "digit_identification.py",
        "source_directory": str(MODEL_DIR),
        "models": {"mnist": str(MODEL)},
        "inputs": {"type": "file", "path": str(folder / "*.png")},
        "mini_batch_size": BATCH,
        "node_count": 1,
        "process_count_per_node": 2,
    })
    scripts = ctx.scripts

    def plain(script: str, images: Path, n: int, label: str):
        return lambda: run_reference(
            ctx, label, lambda out, _: [ctx.python, str(scripts / script), str(MODEL), str(images), str(out),
                                        "--batch", str(BATCH)], n)

    def on_ray(script: str, label: str, *args: str):
        def build(out: Path, run_dir: Path) -> list[str]:
            temp = ctx.short_tmp()  # Ray's socket paths must stay under 107 bytes
            return ray_command([ctx.python, str(scripts / script), str(MODEL), str(folder), str(out),
                                str(run_dir / "done.txt"), *args, "--temp-dir", str(temp), "--batch", str(BATCH)],
                               ctx.ray_isolated)

        def one_run() -> ProcResult:
            try:
                return run_reference(ctx, label, build, count, env=ray_env(ctx), after=_ray_after)
            finally:
                ctx.cleanup()

        return one_run

    def batchinfer(label: str, n: int, *args: str, ray: bool = False):
        def one_run() -> ProcResult:
            env = ray_env(ctx) | {"RAY_TMPDIR": str(ctx.short_tmp())} if ray else None  # Ray's files: ours
            try:
                return run_batchinfer(ctx, job, label, n, args=args, ray=ray, env=env)[0]
            finally:
                ctx.cleanup()

        return one_run

    ray_sources = [] if not ctx.with_ray else ["from_items"] if ctx.quick else ["read_images", "from_items"]
    tools = [
        ("bare", plain("mnist_bare.py", folder, count, "mnist-bare")),
        ("pool", plain("mnist_pool.py", folder, count, "mnist-pool")),
        ("batchinfer", batchinfer("mnist-bi", count)),
    ]
    if ctx.with_ray:
        tools += [
            ("batchinfer-ray", batchinfer("mnist-bi-ray", count, *RAY_BACKEND, ray=True)),
            ("actor-pool", on_ray("mnist_actor_pool.py", "ray-actor-pool")),
        ]
        tools += [(f"ray-{s}", on_ray("mnist_ray.py", f"ray-{s}", "--source", s)) for s in ray_sources]
    if not ctx.quick:
        ctx.log(f"{NAME}: warming up (importing keras and ray once, untimed)")
        _warm_up(ctx, "import keras")
        if ctx.with_ray:
            _warm_up(ctx, "import ray, ray.data")
        small = make_images(ctx, BATCH)
        one_batch = ("--set", f"inputs.path={small / '*.png'}")
        tools.append(("bare-fixed", plain("mnist_bare.py", small, BATCH, "mnist-bare-fixed")))
        tools.append(("batchinfer-fixed", batchinfer("mnist-bi-fixed", BATCH, *one_batch)))
        if ctx.with_ray:
            tools.append(("batchinfer-ray-fixed",
                          batchinfer("mnist-bi-ray-fixed", BATCH, *one_batch, *RAY_BACKEND, ray=True)))
    if ctx.with_ray:
        ctx.log(f"{NAME}: Ray runs {'in a loopback-only network namespace' if ctx.ray_isolated else 'on 127.0.0.1'}")
    ctx.log(f"{NAME}: measuring")
    runs = measure(ctx, tools)
    return _report(ctx, runs, count, ray_sources)


def _batchinfer_row(runs: list[ProcResult], tool: str, count: int) -> Row:
    """A batchinfer row, with the workers' RSS after ``init()`` and ``init()`` time where summary.json has them."""
    row = Row.from_runs(NAME, tool, count, runs)
    keys = [k for k in ("worker_rss_mb_max", "init_s_max") if all(k in r.extra for r in runs)]
    row.extra.update({k: median_of(runs, k) for k in keys})
    if len(keys) == 2:
        row.note = (f"worker RSS after init() {row.extra['worker_rss_mb_max']:.0f} MB, init() "
                    f"{row.extra['init_s_max']:.2f}s (summary.json, max over workers)")
    return row


def _report(ctx: Context, runs: dict[str, list[ProcResult]], count: int, ray_sources: list[str]) -> BenchResult:
    result = BenchResult()
    bare_row = Row.from_runs(NAME, "bare loop, one process", count, runs["bare"])
    ceiling = Row(NAME, "ceiling: bare x 2 cores (ref)", count, bare_row.wall_s / 2, ratio=1.0, computed=True)
    result.rows += [bare_row, ceiling]
    amdahl_wall = None
    if "bare-fixed" in runs:
        fixed = median_of(runs["bare-fixed"], "wall_s")
        amdahl_wall = fixed + (bare_row.wall_s - fixed) / 2
        result.rows.append(Row(NAME, "bare: fixed + work / 2", count, amdahl_wall, computed=True,
                               note=f"fixed = bare on {BATCH} images: {fixed:.2f}s"))
    result.rows.append(Row.from_runs(NAME, "multiprocessing Pool(2) spawn, hand-written", count, runs["pool"]))
    bi = _batchinfer_row(runs["batchinfer"], "batchinfer, mini_batch_size 256", count)
    result.rows.append(bi)
    bi_ray = pool_row = None
    if "batchinfer-ray" in runs:
        bi_ray = _batchinfer_row(runs["batchinfer-ray"], "batchinfer backend: ray, 1 node, 2 actors", count)
        pool_runs = runs["actor-pool"]
        pool_row = Row.from_runs(NAME, "Ray ActorPool(2), hand-written", count, pool_runs)
        pool_row.extra["to_last_row_s"] = median_of(pool_runs, "to_last_row_s")
        pool_row.note = f"whole process; last row at {pool_row.extra['to_last_row_s']:.2f}s"
        result.rows += [bi_ray, pool_row]
        if note := _phases_note("Ray ActorPool", pool_runs):
            result.notes.append(note)
    ray_rows = []
    for source in ray_sources:
        ray_runs = runs[f"ray-{source}"]
        row = Row.from_runs(NAME, f"Ray Data {source}, actors 2", count, ray_runs, wall_key="to_last_row_s")
        exit_wall = median_of(ray_runs, "wall_s")
        row.extra["exit_wall_s"] = exit_wall
        row.note = f"wall to last row; process exit at {exit_wall:.2f}s"
        ray_rows.append(row)
        if note := _phases_note(f"Ray Data {source}", ray_runs):
            result.notes.append(note)
    result.rows += ray_rows
    fixed_rows = []
    for key, tool in (("batchinfer-fixed", "batchinfer, one mini-batch job"),
                      ("batchinfer-ray-fixed", "batchinfer backend: ray, one mini-batch job")):
        if key in runs:
            fixed_rows.append(Row.from_runs(NAME, tool, BATCH, runs[key], note="start-up: start, workers, exit"))
    for row in result.rows:
        if row is not ceiling:
            row.ratio = ceiling.wall_s / row.wall_s
    result.rows += fixed_rows  # their throughput is not comparable: no ratio

    result.targets.append(Target(NAME, "batchinfer throughput / (bare x 2 cores)", bi.ratio, 0.90))
    for row in ray_rows:
        result.targets.append(Target(NAME, f"batchinfer speed-up over {row.tool} (Ray wall / batchinfer wall)",
                                     row.wall_s / bi.wall_s, 1.0))
    if bi_ray is not None:
        result.targets.append(Target(NAME, "batchinfer ray throughput / Ray ActorPool's (whole processes)",
                                     pool_row.wall_s / bi_ray.wall_s, 0.91))
        for row in ray_rows:
            goal = 2.0 if "read_images" in row.tool else 1.0
            result.targets.append(Target(NAME, f"batchinfer ray speed-up over {row.tool} (Ray wall / batchinfer wall)",
                                         row.wall_s / bi_ray.wall_s, goal))
        result.notes.append(f"batchinfer ray / local wall: {bi_ray.wall_s / bi.wall_s:.2f}; ActorPool to last row "
                            f"{pool_row.extra['to_last_row_s']:.2f}s vs batchinfer ray's whole process "
                            f"{bi_ray.wall_s:.2f}s (it also stops Ray before exiting)")
    if len(fixed_rows) == 2:
        local, ray = fixed_rows
        result.notes.append(f"start-up cost (a {BATCH}-image job, one mini-batch, start to exit): local "
                            f"{local.wall_s:.2f}s, backend ray {ray.wall_s:.2f}s (+{ray.wall_s - local.wall_s:.2f}s: "
                            f"starting and stopping a Ray instance, actors importing TensorFlow)")
    if amdahl_wall:
        result.notes.append(f"batchinfer throughput / (fixed + work / 2): {amdahl_wall / bi.wall_s:.2f} "
                            f"(a ceiling that does not halve the bare loop's start-up)")
    rss, init = bi.extra.get("worker_rss_mb_max", 0.0), bi.extra.get("init_s_max", 0.0)
    result.notes.append(f"batchinfer per worker: RSS after init() {rss:.0f} MB (worker_rss_mb_max), "
                        f"init() {init:.2f}s (init_s_max); medians over runs "
                        f"{[r.extra['worker_rss_mb_max'] for r in runs['batchinfer']]} MB, "
                        f"{[r.extra['init_s_max'] for r in runs['batchinfer']]} s")
    if ctx.with_ray:
        result.notes.append("Ray ran " + ("inside `unshare --net` (loopback only)" if ctx.ray_isolated
                                          else "on 127.0.0.1") + f"; Ray Data source: {', '.join(ray_sources)}")
    else:
        result.notes.append("Ray rows not run (--quick leaves them out: seconds of start-up per run; add --ray)")
    return result
