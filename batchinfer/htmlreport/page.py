"""A report as one self-contained HTML page: :func:`render` draws a ``JobReport`` or a
``PipelineReport`` (``htmlreport/model.py``) with the figures of ``htmlreport/charts.py``.

The page fetches nothing: plotly.js is inlined once in the head, every figure is a div and its JSON
(plotly escapes ``<``, ``>`` and ``/`` in it, so no ``</script>`` can close the script early), there
is no MathJax, no font and no image. Every string that comes from a user (file names, messages,
tracebacks) is masked as the logs are (``redact.redact_text``), has its bytes that were not UTF-8
shown as ``\\xNN`` and goes through ``html.escape`` (``charts.html_text``). The head carries
:data:`GENERATOR` exactly, so that ``batchinfer report`` can tell its own page from a user's file.

Stable ids for tests and readers (in a pipeline each carries the prefix ``step-<n>-``, n from 1):
the chart divs ``chart-throughput``, ``chart-timeline``, ``chart-durations``, ``chart-workers``; the
headline's ``state`` and numbers ``items-succeeded``, ``items-total`` (inside it), ``items-failed``,
``mini-batches-done``, ``mini-batches-total`` (inside it; ``data-estimated='1'`` and shown as ~N when
it is an estimate), ``tries``, ``elapsed``, ``items-per-s``, ``workers``, each showing one value and
keeping it raw in ``data-value`` (empty when not known);
``reason``, ``first-error``, ``snapshot`` (a running or stopped job), ``final-failed-items``,
``failures`` (the groups' table) when there are; the notes ``time-cut``, ``timeline-aggregated``,
``timeline-sampled`` when they apply. A pipeline: ``state`` (the pipeline's), ``step-<n>`` (each
step's section), ``step-<n>-error`` (a step's error line).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from batchinfer.htmlreport import charts, check_extra
from batchinfer.htmlreport.model import JobReport, PipelineReport, StepReport
from batchinfer.layout import REPORT_MARKER

_CONFIG = {"displaylogo": False, "showSendToCloud": False, "responsive": True,
           "modeBarButtonsToRemove": ["sendDataToCloud"], "toImageButtonOptions": {"format": "png"}}
MAX_GROUPS = 20  # failure groups in the table (messages that name a file make one group per file)
MAX_WORKER_ROWS = 32
MAX_REPLACED = 10  # replaced workers named in the note above the workers' table
GENERATOR = REPORT_MARKER  # the mark of a page batchinfer wrote (batchinfer never overwrites a report.html without it)
_UNFINISHED = ("running", "stopped", "interrupted")  # states whose totals may not be known yet
_STATE_COLOURS = {"succeeded": "#1a7f37", "failed": "#cf222e", "interrupted": "#bf8700", "running": "#0969da",
                  "stopped": "#bf8700"}
_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;color:#1f2328}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px}.muted{color:#656d76;font-size:13px}
.state{display:inline-block;color:white;border-radius:6px;padding:4px 12px;font-weight:600;font-size:18px}
.stats{display:flex;flex-wrap:wrap;gap:8px 28px;margin:12px 0}.stat b{display:block;font-size:20px}
.stat{font-size:12px;color:#656d76}.stat b{color:#1f2328}
.why{border-left:4px solid #cf222e;background:#fff5f5;padding:8px 12px;margin:8px 0;white-space:pre-wrap}
.note{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:6px 10px;margin:6px 0;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.n{text-align:right}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;max-height:400px}
details{margin:4px 0}summary{cursor:pointer}
"""


def _h(text: object) -> str:
    """User text for the page: secrets masked as in the logs (a URL's signature: the logs are redacted,
    a folder's name on the command line need not be), bytes that were not UTF-8 as ``\\xNN``, then
    HTML-escaped."""
    return charts.html_text(text)


def render(report: JobReport | PipelineReport) -> str:
    """The whole HTML document of ``report``, everything inline."""
    check_extra()
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    if isinstance(report, PipelineReport):
        title, body = f"{report.name}: {report.status}", _pipeline(report, pio)
    else:
        title, body = f"{report.headline.job}: {report.headline.state}", _job(report, pio, "")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>" + GENERATOR +
            f"<title>batchinfer report: {_h(title)}</title><style>{_CSS}</style>"
            # plotly's own page sets this before plotly.js: MathJax, were it ever asked for, stays local
            "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
            f"<script>{get_plotlyjs()}</script></head>\n<body>\n{body}\n"
            f"<p class='muted'>Written by batchinfer report at {_now()}.</p></body></html>\n")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _chart(pio: Any, fig: Any, div_id: str) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id,
                       config=_CONFIG, default_height=fig.layout.height or 360, default_width="100%")


def duration(seconds: float | None) -> str:
    """``seconds`` as a person reads it: 0.42 s, 12.3 s, 4 min 05 s, 2 h 03 min, 1 d 4 h."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if d else f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _num(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n:,}" if isinstance(n, int) else f"{n:,.1f}"


def _value(p: str, key: str, value: Any, shown: str, attrs: str = "") -> str:
    """A number of the headline: its id, its raw value in data-value (empty when not known)."""
    raw = "" if value is None else str(value)
    return f"<span id='{p}{key}' data-value='{_h(raw)}'{attrs}>{_h(shown)}</span>"


def _tip(text: str) -> str:
    """A title attribute: what a number means, shown on hover."""
    return f" title='{_h(text)}'" if text else ""


def _stat(label: str, inner: str, css: str = "", tip: str = "") -> str:
    return f"<div class='stat'{_tip(tip)}>{_h(label)}<b{css}>{inner}</b></div>"


def _headline(r: JobReport, p: str) -> str:
    h = r.headline
    colour = _STATE_COLOURS.get(h.state, "#57606a")
    out = [f"<h1>{_h(h.job)}</h1>" if not p else "",
           (f"<div><span class='state' id='{p}state' data-value='{_h(h.state)}' style='background:{colour}'>"
           f"{_h(h.state)}</span> <span class='muted'>{_h(h.output_dir)}</span></div>")]
    if h.state == "running":
        out.append(f"<p class='note' id='{p}snapshot' data-value='{_h(h.snapshot_at or '')}'>A snapshot of a "
                   f"running job taken at {_h(h.snapshot_at or '?')}: run the report again for more.</p>")
    elif h.state == "stopped":
        out.append(f"<p class='note' id='{p}snapshot' data-value=''>The job stopped without finishing (no "
                   "summary.json): it was killed, or its machine went down. Run it again to resume.</p>")

    def of(key: str, value: int | None, total_key: str, total: int | None, estimated: bool = False) -> str:
        done = _value(p, key, value, _num(value))
        if total is not None:
            shown, flag = ("~" + _num(total), " data-estimated='1'") if estimated else (_num(total), "")
            tip = _tip("an estimate from the inputs' sizes, until every mini-batch is known" if estimated else "")
            return done + f" <small{tip}>of {_value(p, total_key, total, shown, flag)}</small>"
        if h.state in _UNFINISHED:  # still listing its inputs, or stopped before it knew: say so
            return done + f" <small{_tip('not known yet: the inputs were still being listed')}>of {_value(p, total_key, None, '?')}</small>"
        return done + f"<span hidden id='{p}{total_key}' data-value=''></span>"

    over = f" (all {h.elapsed_runs} runs)" if h.elapsed_runs > 1 else ""
    red = " style='color:#cf222e'" if h.items_failed else ""
    out.append("<div class='stats'>" + "".join([
        _stat("items succeeded", of("items-succeeded", h.items_succeeded, "items-total", h.items_total)),
        _stat("items failed", _value(p, "items-failed", h.items_failed, _num(h.items_failed)), red),
        _stat("mini-batches done", of("mini-batches-done", h.mini_batches_done, "mini-batches-total",
                                      h.mini_batches_total, h.total_estimated)),
        _stat("tries", _value(p, "tries", h.tries, _num(h.tries))),
        _stat(f"running time{over}", _value(p, "elapsed", h.elapsed_s, duration(h.elapsed_s)),
              tip="the runs' durations added up: pauses between runs are not counted"),
        _stat(f"items/s{over}", _value(p, "items-per-s", h.items_per_s, _num(h.items_per_s)),
              tip="items done (succeeded and failed) per second of running time"),
        _stat("workers", _value(p, "workers", h.workers, _num(h.workers))
              + (f" <small>{_h(h.backend)}</small>" if h.backend else "")),
    ]) + "</div>")
    when = " → ".join(_h(x) for x in (h.started_at, h.finished_at) if x)
    if when:
        out.append(f"<p class='muted'>{when}</p>")
    if h.reason:
        out.append(f"<div class='why' id='{p}reason' data-value='{_h(h.reason)}'>{_h(h.reason)}</div>")
    if h.first_error:
        out.append(f"<div class='why' id='{p}first-error' data-value='{_h(h.first_error)}'>first error: "
                   f"{_h(h.first_error)}</div>")
    return "\n".join(out)


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    th = "".join(f"<th>{_h(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td{' class=n' if i in numeric else ''}>{_h(str(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _items(items: list[str] | None, keep: int = 3) -> str:
    if items is None:
        return "(not recorded)"
    shown = ", ".join(items[:keep])
    return shown + (f" +{len(items) - keep} more" if len(items) > keep else "")


def _job(r: JobReport, pio: Any, p: str) -> str:
    """The sections of one job's report; ``p`` prefixes every id (a pipeline's steps)."""
    axis = charts.TimeAxis.of(r)
    out = [_headline(r, p)]
    if r.notes:
        out.append("<ul class='muted'>" + "".join(f"<li>{_h(n)}</li>" for n in r.notes) + "</ul>")
    cut = axis.removed()
    cut_note = ""
    if cut:
        said = "; ".join(f"{duration(s)} before {x:.0f} s" for x, s in cut)
        cut_note = (f"<p class='note' id='{p}time-cut'>The time axes show seconds of running: the pauses "
                    f"between runs are cut out ({_h(said)}).</p>")
    out += ["<h2>Throughput</h2>", cut_note, _chart(pio, charts.throughput(r, axis), f"{p}chart-throughput")]
    tl = charts.timeline(r, axis)
    out += ["<h2>Workers over time</h2>",
            ("<p class='muted'>One row per worker: init() in purple, ok tries in grey, failed tries coloured by "
            "kind; empty space is an idle worker. Very short tries are drawn wider than they lasted so that none "
            "vanishes: hover over a bar for its seconds.</p>")]
    if tl.aggregated:
        out.append(f"<p class='note' id='{p}timeline-aggregated'>{tl.aggregated:,} ok tries are aggregated: the "
                   f"grey rows show the fraction of each time bin a worker was busy (the job has "
                   f"{len(r.tries):,} tries; above {charts.TIMELINE_MAX_BARS:,} the page draws no bar per ok try).</p>")
    if tl.sampled:
        out.append(f"<p class='note' id='{p}timeline-sampled'>{tl.sampled[0]:,} of the {tl.sampled[1]:,} failed "
                   "(or short) tries are drawn (sampled evenly in time, per kind); the failures table below counts "
                   "all.</p>")
    out += [_chart(pio, tl.figure, f"{p}chart-timeline")]
    out += ["<h2>Durations of tries</h2>", _chart(pio, charts.durations(r), f"{p}chart-durations")]
    if r.slowest:
        out += ["<h3>The slowest tries</h3>", _table(
            ["mini-batch", "part", "try", "worker", "seconds", "status", "items"],
            [[s.mini_batch, s.part, s.try_number, s.worker, f"{s.seconds:.3f}", s.status, _items(s.items)]
             for s in r.slowest], {0, 2, 3, 4})]
    out += ["<h2>Failures</h2>", _failures(r, p)]
    dots = ("<p class='muted'>One dot per worker start (too many for bars): init() seconds across, memory after "
            "init() up; hover over a dot for its worker.</p>") if len(r.workers) > charts.MAX_WORKER_BARS else ""
    out += ["<h2>Workers</h2>", dots, _chart(pio, charts.workers(r), f"{p}chart-workers"), _workers(r)]
    return "\n".join(x for x in out if x)


def _failures(r: JobReport, p: str) -> str:
    kind_colour = charts.kind_colour
    out = []
    if r.final_failed_items is not None:
        where = f"{r.headline.output_dir}/logs/failed_items.txt" if r.headline.output_dir else "logs/failed_items.txt"
        out.append(f"<p id='{p}final-failed-items' data-value='{r.final_failed_items}'>{r.final_failed_items:,} "
                   f"items finally failed" + (f": they are listed in {_h(where)}" if r.final_failed_items else "")
                   + ".</p>")
    kinds: dict[str, int] = {}
    for status in r.tries.status:
        if status != "ok":
            kinds[status] = kinds.get(status, 0) + 1
    short = kinds.pop(charts.SHORT, 0)
    if kinds:
        out.append("<p>Failed tries by kind: " + ", ".join(
            f"<b style='color:{kind_colour(k)}'>{_h(k)}</b> {n:,}" for k, n in sorted(kinds.items(), key=lambda x: -x[1]))
            + ".</p>")
    if short:
        out.append(f"<p id='{p}short-tries' data-value='{short}'><b style='color:{kind_colour(charts.SHORT)}'>"
                   f"{_h(charts.SHORT_LABEL)}</b>: {short:,} tries worked but run() returned fewer results than "
                   f"items; their rows are kept and only the missing items count as failed.</p>")
    if not r.failures:
        out.append("<p>No failed try recorded.</p>" if not kinds and not short else "")
        return "\n".join(out)
    shown, rest = r.failures[:MAX_GROUPS], r.failures[MAX_GROUPS:]
    rows = [[charts.kind_label(g.kind), g.first_line, g.tries, f"{g.items:,}+" if g.items_capped else g.items,
             ", ".join([*g.example_items[:3], *(f"mini-batch {m}" for m in g.example_mini_batches[:3])])]
            for g in shown]
    out.append(f"<div id='{p}failures'>" + _table(["kind", "first line", "tries", "items", "examples"], rows, {2, 3})
               + "</div>")
    if rest:
        errors = f"{r.headline.output_dir}/logs/errors.jsonl" if r.headline.output_dir else "logs/errors.jsonl"
        out.append(f"<p class='muted'>… and {len(rest):,} more groups ({sum(g.tries for g in rest):,} tries); "
                   f"every failed try is in {_h(errors)}.</p>")
    for g in shown:
        colour = kind_colour(g.kind)
        out.append(f"<details><summary><b style='color:{colour}'>{_h(charts.kind_label(g.kind))}</b>: {_h(g.first_line)} "
                   f"({g.tries:,} tries)</summary><pre>{_h(g.message)}</pre>"
                   + (f"<pre>{_h(g.traceback)}</pre>" if g.traceback else "<p class='muted'>no traceback</p>")
                   + "</details>")
    return "\n".join(out)


def _workers(r: JobReport) -> str:
    if not r.workers:
        return ""
    starts: dict[tuple[int, int], int] = {}
    for w in r.workers:
        starts[(w.run, w.worker)] = starts.get((w.run, w.worker), 0) + 1
    replaced = [f"worker {w} started {n} times" + (f" in run {run}" if len({x.run for x in r.workers}) > 1 else "")
                for (run, w), n in sorted(starts.items(), key=lambda x: (-x[1], x[0])) if n > 1]
    if len(replaced) > MAX_REPLACED:
        replaced[MAX_REPLACED:] = [f"{len(replaced) - MAX_REPLACED:,} more"]
    note = f"<p class='note'>Replaced workers: {_h('; '.join(replaced))}.</p>" if replaced else ""
    every = sorted(r.workers, key=lambda w: (w.run, w.worker, w.ready))
    more = (f"<p class='muted'>… and {len(every) - MAX_WORKER_ROWS:,} more worker starts (the chart above has "
            "them all; logs/events.jsonl lists them).</p>") if len(every) > MAX_WORKER_ROWS else ""
    return note + _table(["run", "worker", "pid", "node", "ready at (s)", "init() s", "MB after init()"],
                         [[w.run, w.worker, w.pid if w.pid is not None else "?", w.node or "?", f"{w.ready:.1f}",
                           f"{w.init_s:.2f}", "?" if w.rss_mb is None else f"{w.rss_mb:.0f}"]
                          for w in every[:MAX_WORKER_ROWS]], {0, 1, 2, 4, 5, 6}) + more


def _pipeline(r: PipelineReport, pio: Any) -> str:
    colour = _STATE_COLOURS.get(r.status, "#57606a")
    out = [f"<h1>{_h(r.name)}</h1>",
           (f"<div><span class='state' id='state' data-value='{_h(r.status)}' style='background:{colour}'>"
           f"{_h(r.status)}</span> <span class='muted'>exit code {_h(str(r.exit_code))}</span></div>"),
           "<h2>Steps</h2>",
           _table(["#", "step", "kind", "status", "exit code", "folder"],
                  [[n, s.name, s.kind, s.status, "" if s.exit_code is None else s.exit_code, s.folder]
                   for n, s in enumerate(r.steps, 1)], {0, 4})]
    for n, step in enumerate(r.steps, 1):
        out.append(_step(step, n, pio))
    return "\n".join(out)


def _step(s: StepReport, n: int, pio: Any) -> str:
    p = f"step-{n}-"
    head = (f"<section id='step-{n}'><h2 style='font-size:20px'>Step {n}: {_h(s.name)} "
            f"<span class='muted'>({_h(s.kind)}, {_h(s.status)})</span></h2>")
    body = []
    if s.error:
        body.append(f"<div class='why' id='{p}error'>{_h(s.error)}</div>")
    if s.log:
        body.append(f"<p class='muted'>log: {_h(s.log)}</p>")
    if s.report is not None:
        body.append(_job(s.report, pio, p))
    elif s.kind != "command":
        body.append("<p class='muted'>This step did not run.</p>")
    return head + "\n".join(body) + "</section>"
