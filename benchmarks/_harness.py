"""Shared helpers of the benchmark suite: timing whole processes, RSS sampling, medians, the table.

- :func:`run_process` starts a command, times it from just before ``Popen`` to
  its exit, and samples (every ~50 ms, in a thread, with psutil) the RSS of the
  process alone and the sum over the process and all of its descendants; it
  reports both peaks. Descendants still alive after the process exited (which
  it started and did not stop) are waited for a few seconds, then killed by
  pid, and counted as ``leftovers``.
- :func:`measure` repeats a set of tools, interleaved (run 1 of every tool,
  then run 2, ...), so slow drifts of the machine hit every tool alike.
- :class:`Row` / :class:`Target` are what the benchmarks report;
  :func:`format_report` prints them as one table, :func:`report_json` as JSON.
- :func:`run_batchinfer` runs ``python -m batchinfer run JOB --output DIR
  --quiet`` and checks its exit code, summary and row count.
- :func:`ray_command` / :func:`ray_env` run a Ray program on loopback only.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

SAMPLE_INTERVAL_S = 0.05
LEFTOVER_WAIT_S = 5.0
REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
MB = 2**20


class BenchmarkError(RuntimeError):
    """A tool failed or produced the wrong output: the measurement is not valid."""


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What every benchmark gets: where to put data, how big, how often."""

    workdir: Path  # this run's temporary folder (data, outputs, logs)
    quick: bool
    repeat: int
    python: str = sys.executable
    verbose: bool = True
    pythonpath: str | None = None  # a batchinfer snapshot to run instead of the installed one
    wait_quiet_s: float = 0.0  # before each run, wait up to this long for other processes to go quiet
    noisy_cores: float = 0.25  # a run during which others used more than this many cores is noisy
    redo_noisy: int = 0  # redo a noisy run up to this many times
    ray: bool | None = None  # run the Ray rows (None: in the full run only)
    _runs: int = 0
    _netns: bool | None = None
    _runs_root: Path | None = None
    _short_tmps: list[Path] = field(default_factory=list)

    @property
    def scripts(self) -> Path:
        """The helper scripts (entry scripts and references), copied into the workdir."""
        target = self.workdir / "scripts"
        if not target.exists():
            shutil.copytree(SCRIPTS, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return target

    @property
    def with_ray(self) -> bool:
        """Whether the Ray rows run: ``--ray`` / ``--no-ray``, else in the full run only."""
        return (not self.quick) if self.ray is None else self.ray

    @property
    def ray_isolated(self) -> bool:
        """Whether Ray runs go into a loopback-only network namespace (checked once)."""
        if self._netns is None:
            self._netns = netns_available()
        return self._netns

    def path(self, *parts: str) -> Path:
        """A path under the workdir (parents created)."""
        p = self.workdir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def runs_root(self) -> Path:
        """This invocation's folder for run outputs and logs (a reused workdir keeps older ones apart)."""
        if self._runs_root is None:
            self._runs_root = self.workdir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            self._runs_root.mkdir(parents=True)
        return self._runs_root

    def fresh_dir(self, name: str) -> Path:
        """A new, empty folder under :attr:`runs_root` (one per measured run)."""
        self._runs += 1
        p = self.runs_root / f"{self._runs:04d}-{name}"
        p.mkdir(parents=True)
        return p

    def short_tmp(self) -> Path:
        """A new folder with a short path (Ray's AF_UNIX sockets live under it: 107 bytes at most)."""
        p = Path(tempfile.mkdtemp(prefix="bir-", dir="/tmp"))
        self._short_tmps.append(p)
        return p

    def cleanup(self) -> None:
        """Remove the short temporary folders."""
        for p in self._short_tmps:
            shutil.rmtree(p, ignore_errors=True)
        self._short_tmps.clear()

    def log(self, message: str) -> None:
        """Progress on stderr (the table goes to stdout)."""
        if self.verbose:
            print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a measured process."""
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.pythonpath, env.get("PYTHONPATH")]))
        env.update({k: str(v) for k, v in extra.items()})
        return env


# --------------------------------------------------------------------------- one process


@dataclass
class ProcResult:
    """One run of one command."""

    wall_s: float  # from just before Popen to the process's exit
    start_epoch: float  # time.time() just before Popen (for timestamps written by the process)
    peak_rss_tree: int  # bytes: the largest sum of RSS over the process and its descendants
    peak_rss_root: int  # bytes: the largest RSS of the process alone
    returncode: int
    processes_seen: int
    leftovers: int  # descendants still alive after the exit, killed by us
    background_cores: float  # CPU used meanwhile by processes outside the measured tree, in cores
    stdout_path: Path
    stderr_path: Path
    extra: dict[str, float] = field(default_factory=dict)  # benchmark-specific numbers

    def stderr_tail(self, chars: int = 2000) -> str:
        """The end of the process's stderr, for error messages."""
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class RssSampler(threading.Thread):
    """Samples RSS of a process and its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = 0
        self.peak_root = 0
        self.seen: dict[int, psutil.Process] = {pid: self.root}
        self.cpu_by_pid: dict[int, float] = {}  # latest user+system seconds of each process seen
        self._stop_event = threading.Event()

    def sample(self) -> None:
        """One sample: RSS of the root and the sum over the root and its descendants."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            self.seen.setdefault(proc.pid, proc)
            try:
                rss = proc.memory_info().rss
                times = proc.cpu_times()
            except psutil.Error:
                continue
            self.cpu_by_pid[proc.pid] = times.user + times.system
            total += rss
            if proc.pid == self.root.pid:
                self.peak_root = max(self.peak_root, rss)
        self.peak_tree = max(self.peak_tree, total)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop_event.set()
        self.join()


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an orphaned zombie waits for PID 1 to reap it, which may be slow)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap_leftovers(sampler: RssSampler) -> int:
    """Wait a little for descendants that outlived the root, then kill them by pid."""
    alive = [proc for pid, proc in sampler.seen.items() if pid != sampler.root.pid and _running(proc)]
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [proc for proc in alive if _running(proc)]
    for proc in alive:
        try:
            proc.kill()  # psutil checks the pid still names the same process (creation time)
        except psutil.Error:
            pass
    return len(alive)


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, everything but idle and iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run_process(
    cmd: Sequence[str],
    *,
    log_dir: Path,
    label: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 1800,
) -> ProcResult:
    """Run ``cmd`` as a whole process; time it and sample the RSS of its process tree."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{label}.stdout", log_dir / f"{label}.stderr"
    me = psutil.Process()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy0, mine0 = _busy_seconds(), _cpu_seconds(me)
        start_epoch = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        try:
            sampler = RssSampler(proc.pid)
        except psutil.NoSuchProcess:  # exited before we could look
            sampler = None
        else:
            sampler.sample()
            sampler.start()
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchmarkError(f"{label}: still running after {timeout:g}s; killed") from None
        finally:
            wall = time.perf_counter() - t0
            if sampler is not None:
                sampler.stop()
            busy = _busy_seconds() - busy0 - (_cpu_seconds(me) - mine0)
    tree_cpu = sum(sampler.cpu_by_pid.values()) if sampler else 0.0
    leftovers = _reap_leftovers(sampler) if sampler else 0
    return ProcResult(
        wall_s=wall,
        start_epoch=start_epoch,
        peak_rss_tree=sampler.peak_tree if sampler else 0,
        peak_rss_root=sampler.peak_root if sampler else 0,
        returncode=returncode,
        processes_seen=len(sampler.seen) if sampler else 1,
        leftovers=leftovers,
        background_cores=max(0.0, busy - tree_cpu) / wall if wall > 0 else 0.0,
        stdout_path=out_path,
        stderr_path=err_path,
    )


def check_ok(result: ProcResult, label: str) -> None:
    """Raise BenchmarkError unless the process exited 0."""
    if result.returncode != 0:
        raise BenchmarkError(f"{label}: exit code {result.returncode}\n{result.stderr_tail()}")


def count_lines(path: Path) -> int:
    """Lines in a file (counted in binary blocks)."""
    count = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            count += block.count(b"\n")
    return count


def expect_lines(path: Path, expected: int, label: str) -> None:
    """Raise BenchmarkError unless ``path`` has exactly ``expected`` lines."""
    got = count_lines(path) if path.exists() else -1
    if got != expected:
        raise BenchmarkError(f"{label}: {path} has {got} lines, expected {expected}")


# --------------------------------------------------------------------------- batchinfer


def write_job(path: Path, spec: dict[str, Any]) -> Path:
    """Write a batchinfer job spec as YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_batchinfer(
    ctx: Context, job: Path, label: str, expected_items: int, *, env: dict[str, str] | None = None,
    expected_lines: int | None = None, args: Sequence[str] = (), ray: bool = False,
) -> tuple[ProcResult, dict[str, Any]]:
    """``python -m batchinfer run JOB --output <fresh dir> --quiet [ARGS]`` as a whole process; checked.

    ``ray``: the run starts Ray (``--set backend=ray`` in ``args``), so it gets
    :func:`ray_env` (unless ``env`` is given) and runs on loopback only (:func:`ray_command`).
    """
    run_dir = ctx.fresh_dir(label)
    out = run_dir / "out"
    cmd = [ctx.python, "-m", "batchinfer", "run", str(job), "--output", str(out), "--quiet", *args]
    if ray:
        cmd = ray_command(cmd, ctx.ray_isolated)
        env = env or ray_env(ctx)
    result = run_process(cmd, log_dir=run_dir, label="batchinfer", env=env or ctx.env(), cwd=run_dir)
    check_ok(result, f"batchinfer ({label})")
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("status") != "succeeded" or summary.get("items_succeeded") != expected_items:
        raise BenchmarkError(
            f"batchinfer ({label}): status {summary.get('status')}, "
            f"{summary.get('items_succeeded')} of {expected_items} items succeeded"
        )
    lines = expected_items if expected_lines is None else expected_lines
    expect_lines(out / "parallel_run_step.txt", lines, f"batchinfer ({label})")
    result.extra["summary_elapsed_s"] = summary.get("elapsed_s") or 0.0
    if summary.get("worker_rss_mb_max") is not None:
        result.extra["worker_rss_mb_max"] = summary["worker_rss_mb_max"]
    if summary.get("init_s_max") is not None:
        result.extra["init_s_max"] = summary["init_s_max"]
    shutil.rmtree(out, ignore_errors=True)  # outputs can be large (tabular)
    return result, summary


def run_reference(
    ctx: Context,
    label: str,
    build: Callable[[Path, Path], Sequence[str]],
    expected_lines: int | None,
    *,
    env: dict[str, str] | None = None,
    after: Callable[[ProcResult, Path], None] | None = None,
) -> ProcResult:
    """Run a reference program as a whole process in a fresh folder; check its exit code and lines.

    ``build(output_file, run_dir)`` returns the command; ``after(result, run_dir)`` may add extras.
    """
    run_dir = ctx.fresh_dir(label)
    out = run_dir / "out.txt"
    result = run_process(build(out, run_dir), log_dir=run_dir, label=label, env=env or ctx.env(), cwd=run_dir)
    check_ok(result, label)
    if expected_lines is not None:
        expect_lines(out, expected_lines, label)
    if after is not None:
        after(result, run_dir)
    out.unlink(missing_ok=True)
    return result


# --------------------------------------------------------------------------- Ray


def netns_available() -> bool:
    """Whether ``unshare --net`` works here (root on Linux): Ray then sees loopback only."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    try:
        return subprocess.run(
            ["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=10, check=False
        ).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def ray_command(cmd: Sequence[str], isolate: bool) -> list[str]:
    """``cmd``, inside a new network namespace with only loopback up when ``isolate``.

    ``unshare`` and ``sh`` both exec, so the measured pid is the Python process itself.
    """
    if not isolate:
        return list(cmd)
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]


def ray_env(ctx: Context) -> dict[str, str]:
    """Environment for a Ray driver: no usage stats, loopback only, a fresh auth token per run."""
    return ctx.env(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_DATA_DISABLE_PROGRESS_BARS="1",
    )


# --------------------------------------------------------------------------- repeating


def background_load(window: float = 0.25) -> float:
    """Cores used by other processes (everything but this one) over ``window`` seconds."""
    me = psutil.Process()
    busy0, mine0 = _busy_seconds(), _cpu_seconds(me)
    time.sleep(window)
    return max(0.0, _busy_seconds() - busy0 - (_cpu_seconds(me) - mine0)) / window


def wait_for_quiet(ctx: Context) -> None:
    """Wait (up to ``ctx.wait_quiet_s``) until other processes use less than ``ctx.noisy_cores``."""
    if ctx.wait_quiet_s <= 0:
        return
    deadline = time.monotonic() + ctx.wait_quiet_s
    load = background_load()
    if load < ctx.noisy_cores:
        return
    ctx.log(f"    waiting for other processes to go quiet (using {load:.2f} cores)")
    while time.monotonic() < deadline:
        load = background_load(0.5)
        if load < ctx.noisy_cores:
            return
    ctx.log(f"    still {load:.2f} cores busy after {ctx.wait_quiet_s:g}s; measuring anyway")


def measure(ctx: Context, tools: Sequence[tuple[str, Callable[[], ProcResult]]], repeat: int | None = None
            ) -> dict[str, list[ProcResult]]:
    """Run every tool ``repeat`` times, interleaved; return the runs per tool.

    With ``ctx.wait_quiet_s``, each run first waits for a quiet machine; with
    ``ctx.redo_noisy``, a run during which other processes used more than
    ``ctx.noisy_cores`` is done again (at most that many times; the last one counts).
    """
    repeat = repeat or ctx.repeat
    runs: dict[str, list[ProcResult]] = {name: [] for name, _ in tools}
    for r in range(repeat):
        for name, fn in tools:
            for attempt in range(ctx.redo_noisy + 1):
                wait_for_quiet(ctx)
                result = fn()
                if result.background_cores <= ctx.noisy_cores or attempt == ctx.redo_noisy:
                    break
                ctx.log(f"    {name}: run {r + 1}/{repeat} was noisy ({result.background_cores:.2f} cores "
                        f"used by other processes, {result.wall_s:.2f}s); again")
            runs[name].append(result)
            ctx.log(f"    {name}: run {r + 1}/{repeat}: {result.wall_s:.2f}s, "
                    f"peak RSS {result.peak_rss_tree / MB:.0f} MB, background load {result.background_cores:.2f} cores"
                    + (f", {result.leftovers} leftover processes killed" if result.leftovers else ""))
    return runs


def median(values: Sequence[float]) -> float:
    """The median (of at least one value)."""
    return float(statistics.median(values))


def median_of(runs: Sequence[ProcResult], key: str) -> float:
    """Median of ``wall_s``, ``peak_rss_tree``, ``peak_rss_root`` or an ``extra`` key over runs."""
    if key in ("wall_s", "peak_rss_tree", "peak_rss_root"):
        return median([getattr(r, key) for r in runs])
    return median([r.extra[key] for r in runs])


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: one tool on one benchmark (medians over the repeats)."""

    benchmark: str
    tool: str
    items: int
    wall_s: float | None  # median wall time; None for a computed row that has none
    peak_rss_mb: float | None = None  # median over runs of the peak RSS of the process tree
    ratio: float | None = None  # throughput / the benchmark's reference throughput
    note: str = ""
    walls: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    computed: bool = False  # an ideal derived from other rows, not a run

    @property
    def items_per_s(self) -> float | None:
        """Throughput: items / median wall."""
        return self.items / self.wall_s if self.wall_s else None

    @classmethod
    def from_runs(cls, benchmark: str, tool: str, items: int, runs: Sequence[ProcResult], *,
                  wall_key: str = "wall_s", **kw: Any) -> Row:
        """A row from measured runs: median wall (or another per-run time), median peak RSS of the tree."""
        walls = [r.wall_s if wall_key == "wall_s" else r.extra[wall_key] for r in runs]
        row = cls(
            benchmark, tool, items,
            wall_s=median(walls),
            peak_rss_mb=median_of(runs, "peak_rss_tree") / MB,
            walls=[round(w, 4) for w in walls],
            **kw,
        )
        row.extra.setdefault("background_cores", [round(r.background_cores, 3) for r in runs])
        row.extra.setdefault("leftover_processes", sum(r.leftovers for r in runs))
        return row


@dataclass
class Target:
    """A goal from the issue and whether the measurement meets it."""

    benchmark: str
    what: str
    measured: float | None
    goal: float
    higher_is_better: bool = True
    fmt: str = "{:.2f}"

    @property
    def met(self) -> bool | None:
        """True/False; None when not measured."""
        if self.measured is None:
            return None
        return self.measured >= self.goal if self.higher_is_better else self.measured <= self.goal

    @property
    def miss(self) -> str:
        """``met`` or how far off, in percent of the goal."""
        if self.met is None:
            return "not measured"
        if self.met:
            margin = (self.measured - self.goal) / self.goal if self.higher_is_better else (
                (self.goal - self.measured) / self.goal)
            return f"met, {margin * 100:.0f}% margin"
        off = (self.goal - self.measured) / self.goal if self.higher_is_better else (
            (self.measured - self.goal) / self.goal)
        return f"MISSED by {off * 100:.0f}%"

    def line(self) -> str:
        """One line of the targets section."""
        sign = ">=" if self.higher_is_better else "<="
        measured = "n/a" if self.measured is None else self.fmt.format(self.measured)
        mark = {True: "MET ", False: "MISS", None: "n/a "}[self.met]
        return (f"[{mark}] {self.benchmark}: {self.what}: {measured} "
                f"(target {sign} {self.fmt.format(self.goal)}; {self.miss})")


@dataclass
class BenchResult:
    """What one benchmark module returns."""

    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------- report


def _version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def machine_info() -> dict[str, Any]:
    """Cores, RAM, versions and the date, for the line under the table."""
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "batchinfer": _version("batchinfer"),
        "tensorflow": _version("tensorflow-cpu", "tensorflow"),
        "keras": _version("keras"),
        "ray": _version("ray"),
        "pyarrow": _version("pyarrow"),
        "pandas": _version("pandas"),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_report(results: dict[str, BenchResult], machine: dict[str, Any], mode: str, repeat: int,
                  duration_s: float) -> str:
    """The table, the targets and the notes, as text."""
    header = ["benchmark", "tool", "items", "wall s", "items/s", "x ref", "peak RSS MB", "notes"]
    lines = []
    for result in results.values():
        for row in result.rows:
            wall = "-" if row.wall_s is None else f"{row.wall_s:.3f}" + ("*" if row.computed else "")
            lines.append([
                row.benchmark, row.tool, _num(row.items), wall, _num(row.items_per_s),
                "-" if row.ratio is None else f"{row.ratio:.2f}", _num(row.peak_rss_mb), row.note,
            ])
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(header)]
    right = {2, 3, 4, 5, 6}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])]
    previous = None
    for cells in lines:
        if previous is not None and cells[0] != previous:
            out.append("")
        out.append(fmt(cells))
        previous = cells[0]
    out.append("")
    out.append(
        f"wall s: median of {repeat} runs, whole process from start to exit (* = computed ideal, not run); "
        f"x ref: throughput / the benchmark's reference (marked 'ref'); peak RSS: median over runs of "
        f"the peak sum of RSS over the process tree (sampled every {SAMPLE_INTERVAL_S * 1000:.0f} ms)."
    )
    m = machine
    out.append(
        f"machine: {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['platform']}; Python {m['python']}, "
        f"batchinfer {m['batchinfer']}, TensorFlow {m['tensorflow']} (keras {m['keras']}), Ray {m['ray']}, "
        f"pyarrow {m['pyarrow']}, pandas {m['pandas']}; {m['date']}; mode {mode}; suite took {duration_s:.0f}s"
    )
    targets = [t for r in results.values() for t in r.targets]
    if targets:
        out.append("")
        out.append("Targets:")
        out.extend("  " + t.line() for t in targets)
    notes = [(name, n) for name, r in results.items() for n in r.notes]
    for name, r in results.items():
        loads = [x for row in r.rows for x in row.extra.get("background_cores", [])]
        leftovers = sum(row.extra.get("leftover_processes", 0) for row in r.rows)
        if loads:
            notes.append((name, f"background load (CPU of processes outside the measured tree) per run: median "
                                f"{median(loads):.2f} cores, max {max(loads):.2f}"
                                + (f"; {leftovers} leftover processes killed" if leftovers else "; no leftover processes")))
    if notes:
        out.append("")
        out.append("Notes:")
        out.extend(f"  {name}: {n}" for name, n in notes)
    return "\n".join(out)


def report_json(results: dict[str, BenchResult], machine: dict[str, Any], mode: str, repeat: int,
                duration_s: float) -> dict[str, Any]:
    """Everything in the table, as a JSON-able document."""
    def row(r: Row) -> dict[str, Any]:
        d = asdict(r)
        d["items_per_s"] = r.items_per_s
        return d

    def target(t: Target) -> dict[str, Any]:
        d = asdict(t)
        d.pop("fmt")
        d["met"] = t.met
        d["miss"] = t.miss
        return d

    return {
        "machine": machine,
        "mode": mode,
        "repeat": repeat,
        "duration_s": round(duration_s, 1),
        "benchmarks": {
            name: {
                "seconds": round(r.seconds, 1),
                "rows": [row(x) for x in r.rows],
                "targets": [target(t) for t in r.targets],
                "notes": r.notes,
            }
            for name, r in results.items()
        },
    }
