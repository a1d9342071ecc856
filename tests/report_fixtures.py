"""Hand-made reports for the page's tests and the report benchmark: :func:`job_report` builds a
small ``JobReport`` from a few tries, :func:`synthetic_report` a big one (100,000 tries by default)
shaped like a real job: workers busy in turn, a few runs, failures of several kinds.

Used by ``tests/test_report_page.py`` and ``benchmarks/report.py``.
"""

from __future__ import annotations

import random
from typing import Any

from batchinfer.htmlreport.model import (
    FailureGroup,
    Headline,
    JobReport,
    Run,
    SlowTry,
    Tries,
    WorkerStart,
)


def job_report(tries: list[tuple[Any, ...]] = (), *, state: str = "succeeded", runs: list[Run] | None = None,
               workers: int = 2, failures: list[FailureGroup] = (), items: list[str] | None = None,
               **headline: Any) -> JobReport:
    """A report of ``tries``, each ``(start, seconds, worker, status)`` or ``(start, seconds, worker,
    status, part)``, one mini-batch each of 10 items; ``headline`` overrides the headline's fields."""
    t = Tries()
    for n, (start, seconds, worker, status, *part) in enumerate(sorted(tries)):
        ok = status == "ok"
        t.start.append(start)
        t.seconds.append(seconds)
        t.worker.append(worker)
        t.mini_batch.append(n)
        t.part.append(part[0] if part else "")
        t.try_number.append(1)
        t.items.append(10)
        t.succeeded.append(10 if ok else 0)
        t.failed.append(0 if ok else 10)
        t.status.append(status)
    end = max((s + d for s, d in zip(t.start, t.seconds)), default=0.0)
    succeeded, failed = sum(t.succeeded), sum(t.failed)
    fields = {"job": "job", "state": state, "items_total": succeeded + failed, "items_succeeded": succeeded,
                  "items_failed": failed, "mini_batches_total": len(t), "mini_batches_done": len(t), "tries": len(t),
                  "elapsed_s": end, "items_per_s": succeeded / end if end else None, "workers": workers, "backend": "local",
                  "started_at": "2026-11-30T10:00:00Z", "output_dir": "/data/out", "elapsed_runs": len(runs or [1])}
    fields.update(headline)
    slow = sorted(range(len(t)), key=lambda i: -t.seconds[i])[:10]
    return JobReport(
        headline=Headline(**fields),
        t0=1_790_000_000.0,
        tries=t,
        runs=runs if runs is not None else [Run(1, 0.0, end if state != "running" else None, state, workers, "local")],
        workers=[WorkerStart(r.number, w, 1000 + w, "node-a", r.start + 1.0, 0.8, 150.0 + w)
                 for r in (runs or [Run(1, 0.0, end, state)]) for w in range(workers)],
        failures=list(failures),
        slowest=[SlowTry(t.mini_batch[i], t.part[i], 1, t.worker[i], t.start[i], t.seconds[i], t.status[i],
                         items if items is not None else [f"img-{i}-{k}.png" for k in range(12)]) for i in slow],
        final_failed_items=failed,
    )


def synthetic_report(tries: int = 100_000, workers: int = 8, failures: float = 0.01, runs: int = 2,
                     seed: int = 15) -> JobReport:
    """A big job: ``tries`` tries on ``workers`` workers over ``runs`` runs a day apart, a share
    ``failures`` of them failed (exception, timeout, worker_died, out_of_memory and a made-up kind)."""
    rnd = random.Random(seed)
    kinds = ["exception", "timeout", "worker_died", "out_of_memory", "disk_full"]
    rows = []
    per_run = tries // runs
    run_list, starts = [], []
    t0 = 0.0
    for r in range(runs):
        run_list.append(Run(r + 1, t0, None, None, workers, "local"))
        free = [t0 + 2.0] * workers
        for _ in range(per_run if r < runs - 1 else tries - per_run * (runs - 1)):
            w = min(range(workers), key=free.__getitem__)
            seconds = round(rnd.lognormvariate(-1.0, 0.6), 3)
            status = rnd.choice(kinds) if rnd.random() < failures else "ok"
            rows.append((round(free[w], 3), seconds, w, status))
            free[w] += seconds + rnd.random() * 0.01
        end = max(free)
        run_list[-1].end, run_list[-1].status = end, "succeeded" if r == runs - 1 else "interrupted"
        starts.append(t0)
        t0 = end + 86_400.0  # resumed a day later
    groups = [FailureGroup(k, f"{k}: something went wrong", 0, 0, ["a.png"], [1], "message", "Traceback ...")
              for k in kinds]
    report = job_report(rows, workers=workers, runs=run_list, failures=groups, job="synthetic")
    for g in report.failures:
        g.tries = report.tries.status.count(g.kind)
        g.items = 10 * g.tries
    return report
