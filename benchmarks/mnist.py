"""mnist: scoring PNG digits with the sample Keras model, end to end, against a bare loop and Ray Data.

10,000 PNGs (``--quick``: 2,000), copies of the 1,000 sample digits under new
names. batchinfer runs the sample entry script
(``sample_models/mnist/digit_identification.py``) with the sample model,
``mini_batch_size`` 256, 2 processes. References, each a whole process:

- ``mnist_bare.py``: the bare batched loop in ONE process (load the model,
  decode PNGs with PIL, ``model(batch, training=False)`` per 256); the ceiling
  is that throughput x 2 cores. (Full run: also a 256-image run of it, its
  fixed cost, for a ceiling that does not halve start-up: "fixed + work / 2".)
- ``mnist_ray.py``: Ray Data ``read_images`` + ``map_batches`` on an actor pool
  of 2 (``num_cpus=0.5``), batch 256; its wall is process start to the last
  row written (its exit, after ``ray.shutdown()``, is in the notes). Also Ray
  Data ``from_items`` of the paths (PIL decoding in the actors). Ray costs
  ~18 s per run whatever the size (``ray.init`` ~4 s, actors importing
  TensorFlow ~10 s, shutdown ~1.5 s), so ``--quick`` leaves Ray out unless
  given ``--ray`` (then only ``from_items``, the faster variant here).

Also reported: batchinfer's ``worker_rss_mb_max`` (worker RSS after
``init()``) and ``init_s_max`` from summary.json.

Targets: batchinfer >= 0.90 x (bare x 2 cores); faster than Ray Data.
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
    netns_available,
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


def run(ctx: Context) -> BenchResult:
    """Measure the bare loop, batchinfer and Ray Data on the same images."""
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
    bare_script = str(ctx.scripts / "mnist_bare.py")
    ray_script = str(ctx.scripts / "mnist_ray.py")

    def bare(images: Path, n: int, label: str):
        return lambda: run_reference(
            ctx, label, lambda out, _: [ctx.python, bare_script, str(MODEL), str(images), str(out), "--batch", str(BATCH)], n)

    def ray(source: str):
        def after(result: ProcResult, run_dir: Path) -> None:
            done = float((run_dir / "done.txt").read_text())
            result.extra["to_last_row_s"] = done - result.start_epoch
            for line in result.stderr_path.read_text(errors="replace").splitlines():  # "phase NAME: 1.23s"
                if line.startswith("phase ") and line.endswith("s") and ": " in line:
                    name, _, value = line[len("phase "):].rpartition(": ")
                    result.extra[f"phase {name}"] = float(value[:-1])

        def build(out: Path, run_dir: Path) -> list[str]:
            temp = ctx.short_tmp()  # Ray's socket paths must stay under 107 bytes
            return ray_command([ctx.python, ray_script, str(MODEL), str(folder), str(out), str(run_dir / "done.txt"),
                                "--source", source, "--temp-dir", str(temp), "--batch", str(BATCH)], isolate)

        def one_run() -> ProcResult:
            try:
                return run_reference(ctx, f"ray-{source}", build, count, env=ray_env(ctx), after=after)
            finally:
                ctx.cleanup()

        return one_run

    def batchinfer() -> ProcResult:
        return run_batchinfer(ctx, job, "mnist-bi", count)[0]

    with_ray = (not ctx.quick) if ctx.ray is None else ctx.ray
    ray_sources = [] if not with_ray else ["from_items"] if ctx.quick else ["read_images", "from_items"]
    isolate = bool(ray_sources) and netns_available()
    tools = [("bare", bare(folder, count, "mnist-bare")), ("batchinfer", batchinfer)]
    tools += [(f"ray-{s}", ray(s)) for s in ray_sources]
    if not ctx.quick:
        ctx.log(f"{NAME}: warming up (importing keras and ray once, untimed)")
        _warm_up(ctx, "import keras")
        if ray_sources:
            _warm_up(ctx, "import ray, ray.data")
        tools.append(("bare-fixed", bare(make_images(ctx, BATCH), BATCH, "mnist-bare-fixed")))
    if ray_sources:
        ctx.log(f"{NAME}: Ray runs {'in a loopback-only network namespace' if isolate else 'on 127.0.0.1'}")
    ctx.log(f"{NAME}: measuring")
    runs = measure(ctx, tools)

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
    bi = Row.from_runs(NAME, "batchinfer, mini_batch_size 256", count, runs["batchinfer"])
    rss, init = median_of(runs["batchinfer"], "worker_rss_mb_max"), median_of(runs["batchinfer"], "init_s_max")
    bi.extra.update(worker_rss_mb_max=rss, init_s_max=init)
    bi.note = f"worker RSS after init() {rss:.0f} MB, init() {init:.2f}s (summary.json, max over workers)"
    result.rows.append(bi)
    ray_rows = []
    for source in ray_sources:
        ray_runs = runs[f"ray-{source}"]
        row = Row.from_runs(NAME, f"Ray Data {source}, actors 2", count, ray_runs, wall_key="to_last_row_s")
        exit_wall = median_of(ray_runs, "wall_s")
        row.extra["exit_wall_s"] = exit_wall
        row.note = f"wall to last row; process exit at {exit_wall:.2f}s"
        ray_rows.append(row)
        phases = ["ray.init", "first batch", "last row written", "ray.shutdown"]
        if all(f"phase {p}" in r.extra for r in ray_runs for p in phases):
            result.notes.append(f"Ray Data {source}, seconds after the script started (median): " + ", ".join(
                f"{p} {median_of(ray_runs, f'phase {p}'):.1f}" for p in phases))
    result.rows += ray_rows
    for row in result.rows:
        if row is not ceiling:
            row.ratio = ceiling.wall_s / row.wall_s
    result.targets.append(Target(NAME, "batchinfer throughput / (bare x 2 cores)", bi.ratio, 0.90))
    for row in ray_rows:
        result.targets.append(Target(NAME, f"batchinfer speed-up over {row.tool} (Ray wall / batchinfer wall)",
                                     row.wall_s / bi.wall_s, 1.0))
    if amdahl_wall:
        result.notes.append(f"batchinfer throughput / (fixed + work / 2): {amdahl_wall / bi.wall_s:.2f} "
                            f"(a ceiling that does not halve the bare loop's start-up)")
    result.notes.append(f"batchinfer per worker: RSS after init() {rss:.0f} MB (worker_rss_mb_max), "
                        f"init() {init:.2f}s (init_s_max); medians over runs "
                        f"{[r.extra['worker_rss_mb_max'] for r in runs['batchinfer']]} MB, "
                        f"{[r.extra['init_s_max'] for r in runs['batchinfer']]} s")
    if ray_sources:
        result.notes.append("Ray ran " + ("inside `unshare --net` (loopback only)" if isolate else "on 127.0.0.1")
                            + f"; Ray Data source: {', '.join(ray_sources)}")
    else:
        result.notes.append("Ray Data reference not run (--quick leaves it out: ~18 s per run; add --ray)")
    return result
