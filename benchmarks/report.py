"""report: how long ``batchinfer report`` takes on a big job, how big the page is, how fast Chromium draws it.

A synthetic output folder per size (100,000, 10,000 and 100 mini-batches of 10 items), written directly
(no tries are run): 8 workers, log-normal durations (median 0.2 s, a few slow ones up to ~100x), a
first run interrupted at 40% and a second that resumes it, a few hundred failed tries of six kinds
(exception with three messages, timeout, worker_died, storage, out_of_memory, wrong_type; most succeed
on their retry, some fail every try), workers replaced after each death, ``summary.json``,
``logs/processed_mini_batches.csv``, ``logs/errors.jsonl``, ``logs/events.jsonl``,
``logs/slowest_tries.json``, ``logs/failed_items.txt``.

Rows: ``batchinfer report OUT -o FILE`` as a whole process (median of --repeat), the file's size, and
the time Chromium (Debian's, through playwright, offline) takes from navigation start until every
chart div holds its drawn plot (``performance.now()`` in the page, checked at every animation frame;
median of 3 fresh pages). Most of a small report's time is plotly.js itself (~4.6 MB, parsed once).
Targets for 100,000 mini-batches: file < 10 MB, rendered < 3 s.
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import json
import random
from pathlib import Path

from benchmarks._harness import (
    MB,
    BenchmarkError,
    BenchResult,
    Context,
    Row,
    Target,
    check_ok,
    measure,
    median,
    run_process,
)

NAME = "report"
SIZES = (100_000, 10_000, 100)  # 100: the fixed cost (plotly.js, the page) alone
WORKERS = 8
ITEMS = 10  # per mini-batch
T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.timezone.utc).timestamp()
# failed tries of each kind per 100,000 mini-batches (a few hundred in all), and their messages
KINDS = {"exception": 180, "timeout": 40, "worker_died": 30, "storage": 30, "out_of_memory": 15, "wrong_type": 10}
MESSAGES = {
    "exception": ["run() raised ValueError: cannot identify image file {item}",
                  "run() raised KeyError: 'label'", "run() raised OSError: image file is truncated"],
    "timeout": ["run() on mini-batch {mb} took longer than run_invocation_timeout (60s); worker {w} was killed"],
    "worker_died": ["worker {w} died (killed by SIGKILL (-9)) while running mini-batch {mb}"],
    "storage": ["cannot read {item}: ConnectionResetError: [Errno 104] Connection reset by peer"],
    "out_of_memory": ["run() raised MemoryError on mini-batch {mb}; worker {w} was replaced"],
    "wrong_type": ["run() returned int, not a list or a pandas DataFrame"],
}
REPLACES_WORKER = {"timeout", "worker_died", "out_of_memory"}
RENDER_REPEAT = 3


def iso(t: float) -> str:
    """Epoch seconds as batchinfer writes them: ISO 8601 UTC with milliseconds."""
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


def item(mb: int, i: int) -> str:
    """An item's path (mini-batch ``mb``, its ``i``-th file)."""
    return f"/data/images/{mb // 1000:03d}/img_{mb * ITEMS + i:08d}.png"


def make_output(folder: Path, count: int, seed: int = 15) -> dict:
    """Write the output folder of a job of ``count`` mini-batches; return its summary."""
    rng = random.Random(seed + count)
    logs = folder / "logs"
    logs.mkdir(parents=True)
    scale = count / 100_000
    failing = {}  # mini-batch -> (kind, message index, tries that fail)
    for kind, n in KINDS.items():
        for _ in range(max(1, round(n * scale))):
            mb = rng.randrange(count)
            failing[mb] = (kind, rng.randrange(len(MESSAGES[kind])), 3 if rng.random() < 0.2 else 1)
    tries, errors, events = [], [], []
    pid = 40_000
    resumed_at = int(count * 0.4)
    clock = T0
    summary_runs = []
    for run, todo in ((1, range(resumed_at)), (2, range(resumed_at, count))):
        events.append({"time": iso(clock), "event": "run_started", "run": run, "pid": pid, "workers": WORKERS,
                       "backend": "local", "resumed": 0 if run == 1 else resumed_at})
        pid += 1
        free = []  # (time the worker is free, worker)
        for w in range(WORKERS):
            init_s = rng.uniform(2.5, 4.0)
            ready = clock + 0.3 + init_s
            events.append({"time": iso(ready), "event": "worker_ready", "run": run, "worker": w, "pid": pid,
                           "node": "localhost", "init_s": round(init_s, 3), "rss_mb": round(rng.uniform(480, 560), 1)})
            pid += 1
            heapq.heappush(free, (ready, w))
        run_start = clock
        for mb in todo:
            kind, message, failures = failing.get(mb, (None, 0, 0))
            for attempt in range(1, (min(failures, 2) + 2 if kind else 2)):
                at, w = heapq.heappop(free)
                fails = kind is not None and attempt <= failures
                seconds = 60.0 if fails and kind == "timeout" else min(rng.lognormvariate(-1.6, 0.6), 30.0)
                if rng.random() < 0.0005:
                    seconds *= rng.uniform(20, 100)  # a few very slow ones
                status = kind if fails else "ok"
                tries.append((at + seconds, mb, attempt, w, at, seconds, status))
                end = at + seconds
                if fails:
                    errors.append({"time": iso(at), "mini_batch": mb, "part": None,
                                   "items": [item(mb, i) for i in range(ITEMS)], "try": attempt, "worker": w,
                                   "kind": kind, "message": MESSAGES[kind][message].format(item=item(mb, 0), mb=mb, w=w),
                                   "traceback": "" if kind in REPLACES_WORKER else (
                                       "Traceback (most recent call last):\n  File \"score.py\", line 31, in run\n"
                                       "    image = Image.open(path)\n" + MESSAGES[kind][message].split(": ", 1)[-1])})
                    if kind in REPLACES_WORKER:
                        init_s = rng.uniform(2.5, 4.0)
                        end += 0.2 + init_s
                        events.append({"time": iso(end), "event": "worker_ready", "run": run, "worker": w, "pid": pid,
                                       "node": "localhost", "init_s": round(init_s, 3),
                                       "rss_mb": round(rng.uniform(480, 560), 1)})
                        pid += 1
                heapq.heappush(free, (end + 0.002, w))
                if not fails:
                    break
        clock = max(t for t, _ in free)
        status = "interrupted" if run == 1 else "failed"
        events.append({"time": iso(clock), "event": "run_ended", "run": run, "status": status,
                       "reason": "stopped by SIGTERM" if run == 1 else "3 mini-batches failed, more than allowed",
                       "elapsed_s": round(clock - run_start, 3)})
        summary_runs.append(clock - run_start)
        clock += 600  # ten minutes before the rerun
    tries.sort()
    with open(logs / "processed_mini_batches.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "part", "try", "worker", "start", "seconds", "items", "succeeded", "failed", "status"])
        for _, mb, attempt, w, at, seconds, status in tries:
            ok = status == "ok"
            out.writerow([mb, "", attempt, w, iso(at), f"{seconds:.3f}", ITEMS, ITEMS if ok else 0,
                          0 if ok else ITEMS, status])
    errors.sort(key=lambda e: e["time"])
    (logs / "errors.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errors))
    events.sort(key=lambda e: e["time"])
    (logs / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    slowest = sorted(tries, key=lambda t: -t[5])[:10]
    (logs / "slowest_tries.json").write_text(json.dumps({"slowest": [
        {"mini_batch": mb, "part": "", "try": attempt, "worker": w, "start": iso(at), "seconds": round(s, 3),
         "status": status, "items": [item(mb, i) for i in range(ITEMS)]}
        for _, mb, attempt, w, at, s, status in slowest]}, indent=1))
    final = {mb for mb, (_, _, failures) in failing.items() if failures >= 3}
    (logs / "failed_items.txt").write_text("".join(item(mb, i) + "\n" for mb in sorted(final) for i in range(ITEMS)))
    (logs / "job.log").write_text(f"{iso(T0)} INFO job report-bench started\n")
    summary = {
        "status": "failed", "reason": f"{len(final)} mini-batches failed, more than allowed_failed_count",
        "items_total": count * ITEMS, "items_succeeded": (count - len(final)) * ITEMS,
        "items_failed": len(final) * ITEMS, "items_not_returned": 0, "note": None,
        "mini_batches_total": count, "mini_batches_succeeded": count - len(final), "mini_batches_failed": len(final),
        "mini_batches_resumed": resumed_at, "tries": sum(1 for t in tries if t[1] >= resumed_at),
        "elapsed_s": round(summary_runs[-1], 3),
        "items_per_s": round((count - resumed_at) * ITEMS / summary_runs[-1], 1),
        "first_error": errors[0]["message"] if errors else None, "exit_code": 1, "complete": True,
        "job": f"report-bench-{count}", "finished_at": iso(clock - 600)[:19] + "+00:00",
        "output_dir": str(folder), "output_file": str(folder / "parallel_run_step.txt"), "log_dir": str(logs),
        "failed_items_file": str(logs / "failed_items.txt"), "failed_items_listed": len(final) * ITEMS,
        "workers": WORKERS, "workers_started": sum(1 for e in events if e["event"] == "worker_ready"),
        "init_s_max": 4.0, "worker_rss_mb_max": 560.0, "batchinfer_version": "0.1.0",
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "parallel_run_step.txt").write_text("")
    return summary


def render_times(html: Path, repeat: int) -> tuple[list[float], list[str]]:
    """Seconds from navigation start until every chart is drawn, in ``repeat`` fresh offline pages; problems seen."""
    try:
        from tests.browser import Browser, why_not_available
    except ImportError as exc:
        raise BenchmarkError(f"cannot import tests/browser.py (run from the repository root): {exc}") from None
    reason = why_not_available()
    if reason is not None:
        raise BenchmarkError(f"no browser to render the report: {reason}")
    browser = Browser()
    times, problems = [], []
    try:
        for _ in range(repeat):
            with browser.open_report(html, timeout_s=120) as page:
                times.append(page.drawn_s)
                problems += page.problems
    finally:
        browser.close()
    return times, problems


def run(ctx: Context) -> BenchResult:
    """Write each synthetic folder, time ``batchinfer report`` on it, measure the file and its rendering."""
    result = BenchResult()
    tools, folders = [], {}
    for count in SIZES:
        folder = ctx.workdir / "data" / f"report-{count}"
        if not (folder / "summary.json").exists():
            ctx.log(f"{NAME}: writing a synthetic output folder of {count:,} mini-batches")
            make_output(folder, count)
        folders[count] = folder

        def tool(folder: Path = folder, count: int = count):
            run_dir = ctx.fresh_dir(f"report-{count}")
            html = run_dir / "report.html"
            r = run_process([ctx.python, "-m", "batchinfer", "report", str(folder), "-o", str(html)],
                            log_dir=run_dir, label="report", env=ctx.env(), cwd=run_dir)
            check_ok(r, f"batchinfer report ({count:,} mini-batches)")
            if "could not be read" in html.read_text(errors="replace"):  # the synthetic files drifted from the real ones
                raise BenchmarkError(f"the report of {count:,} mini-batches says a file could not be read: see {html}")
            r.extra["size_mb"] = html.stat().st_size / MB
            r.extra["html"] = str(html)  # type: ignore[assignment]
            return r

        tools.append((f"report-{count}", tool))
    ctx.log(f"{NAME}: measuring")
    runs = measure(ctx, tools)
    for count in SIZES:
        r = runs[f"report-{count}"]
        size = r[-1].extra["size_mb"]
        ctx.log(f"{NAME}: rendering the {count:,} mini-batch report in Chromium ({RENDER_REPEAT} times)")
        times, problems = render_times(Path(r[-1].extra["html"]), RENDER_REPEAT)
        render = median(times)
        row = Row.from_runs(NAME, f"batchinfer report, {count:,} mini-batches", count, r,
                            note=f"file {size:.1f} MB; Chromium draws it in {render:.2f}s"
                                 + (f"; {len(problems)} console errors or requests" if problems else ""))
        row.extra.update(size_mb=round(size, 2), render_s=round(render, 3), render_runs=[round(t, 3) for t in times],
                         problems=problems[:5])
        result.rows.append(row)
        if count == max(SIZES):
            result.targets.append(Target(NAME, f"report file, {count:,} mini-batches (MB)", size, 10,
                                         higher_is_better=False, fmt="{:.1f}"))
            result.targets.append(Target(NAME, f"Chromium renders it, {count:,} mini-batches (s)", render, 3,
                                         higher_is_better=False))
        if problems:
            result.notes.append(f"{count:,} mini-batches: the page logged errors or made requests: {problems[:3]}")
    return result
