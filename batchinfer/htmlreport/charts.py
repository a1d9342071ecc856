"""The report's figures, built from a :class:`~batchinfer.htmlreport.model.JobReport` with plotly.

plotly is imported lazily by ``page.render`` before any of these run: this module imports it only
inside functions, so importing it costs nothing. Every string that comes from a user (kinds, parts,
node names) goes through :func:`html_text` before it reaches a figure, because plotly.js renders
legend and hover text as a small subset of HTML (and a surrogate could not be written as UTF-8).

Every time on an axis is "seconds of running": seconds since the first start, with long gaps
between runs (a job resumed a day later) cut out (:class:`TimeAxis`), so that they do not squeeze
the chart into a sliver; the page says what was cut.

Dense jobs stay small: above ``TIMELINE_MAX_BARS`` tries the timeline draws ok tries as a busy
fraction per worker and time bin (a heatmap), and above ``FAILED_MAX_BARS`` failed tries it draws a
deterministic sample of them; :class:`Timeline` says what it did so the page can say it too. Above
``MAX_WORKER_BARS`` worker starts the workers' chart is one dot per start instead of two bars.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

from batchinfer import protocol
from batchinfer.htmlreport.model import JobReport
from batchinfer.redact import json_safe

TIMELINE_MAX_BARS = 5_000  # SVG bars: 10,000 of them added ~1 s to the drawing in Chromium (5,000 ~0.5 s)
FAILED_MAX_BARS = 3_000
TIMELINE_BINS = 400  # time bins of the aggregated timeline, per worker
THROUGHPUT_BINS = 150
GAP_MIN_S = 60.0  # a pause between runs shorter than this stays on the axis

MAX_WORKER_BARS = 32  # worker starts drawn as bars; above, one dot per start (100 bars would be unreadable)
OK_COLOUR = "#9aa5b1"
INIT_COLOUR = "#7b61c4"
KIND_COLOURS = {
    protocol.EXCEPTION: "#d62728",
    protocol.TIMEOUT: "#ff7f0e",
    protocol.WORKER_DIED: "#8c1d40",
    protocol.OUT_OF_MEMORY: "#e377c2",
    protocol.SHORT_RETURN: "#a0a11b",  # not a failure: the outline of a grey bar (see SHORT)
    protocol.WRONG_TYPE: "#17becf",
    protocol.STORAGE: "#1f77b4",
}
# A short return is a try that worked but whose run() returned fewer results than items: its rows are
# kept and only the missing items count as failed. It is drawn as an ok try with an outline and named so.
SHORT = protocol.SHORT_RETURN
SHORT_LABEL = "short (results missing)"
_LAYOUT = {
    "template": "none",  # plotly's default template weighs 7 KB per figure; the page sets its own look
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "margin": {"l": 60, "r": 70, "t": 50, "b": 50},  # r: room for a second y axis' numbers
    # above the plot, on the right: below it, the legend would sit on the x axis' title
    "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    "hoverlabel": {"namelength": -1},
}
_GRID = {"showgrid": True, "gridcolor": "#eee", "zeroline": False}


def kind_colour(kind: str) -> str:
    """The colour of a failure kind: fixed for the known kinds, and for any other a colour derived
    from the kind's name (the same on every page, unlike Python's salted ``hash``)."""
    if kind in KIND_COLOURS:
        return KIND_COLOURS[kind]
    hue = int(hashlib.sha256(kind.encode("utf-8", "surrogatepass")).hexdigest()[:4], 16) % 360
    return f"hsl({hue},60%,40%)"


def html_text(text: object) -> str:
    """User text (a file name, a message, a kind) for the page or a figure: secrets masked as in the
    logs, bytes that were not UTF-8 (surrogates from a file name) shown as ``\\xNN`` so that the page
    can be written as UTF-8, then HTML-escaped."""
    return escape(json_safe(str(text)))


def kind_label(kind: str) -> str:
    """How the page names a try's status: its kind, or :data:`SHORT_LABEL` for a short return."""
    return SHORT_LABEL if kind == SHORT else kind


def _ms(x: float) -> float:
    return round(x, 3)


@dataclass
class TimeAxis:
    """Maps seconds since t0 to seconds of running: the long gaps between runs are cut out."""

    cuts: list[tuple[float, float]] = field(default_factory=list)  # (where the gap ends, its length)

    @classmethod
    def of(cls, report: JobReport) -> TimeAxis:
        """The axis of ``report``: a pause before a run is cut when it is over a minute and over a
        tenth of the running time around it."""
        t = report.tries
        ends = [s + d for s, d in zip(t.start, t.seconds)]
        prefix_max: list[float] = []
        top = -math.inf
        for e in ends:
            top = max(top, e)
            prefix_max.append(top)
        runs = sorted(report.runs, key=lambda r: r.start)
        span = max([*ends, *(r.end or r.start for r in runs), *(w.ready for w in report.workers), 0.0])
        gaps = []
        for before, run in itertools.pairwise(runs):
            k = bisect.bisect_left(t.start, run.start)
            last = max(before.start, before.end or before.start, prefix_max[k - 1] if k else -math.inf)
            last = max([last, *(w.ready for w in report.workers if w.ready < run.start)])
            if run.start - last > GAP_MIN_S:
                gaps.append((last, run.start))
        total_gap = sum(b - a for a, b in gaps)
        cuts, cut = [], 0.0
        for a, b in gaps:
            if b - a > 0.1 * (span - total_gap):
                cut += b - a
                cuts.append((b, cut))
        return cls(cuts)

    def __post_init__(self) -> None:
        self._ends = [c[0] for c in self.cuts]

    def __call__(self, t: float) -> float:
        k = bisect.bisect_right(self._ends, t)
        return t - (self.cuts[k - 1][1] if k else 0.0)

    def removed(self) -> list[tuple[float, float]]:
        """(where on the axis, seconds removed) of every cut."""
        out, before = [], 0.0
        for end, total in self.cuts:
            out.append((self(end), total - before))
            before = total
        return out


def _nice_width(span: float, bins: int) -> float:
    raw = max(span, 1e-3) / bins
    exp = 10 ** math.floor(math.log10(raw))
    return next(m * exp for m in (1, 2, 5, 10) if m * exp >= raw)


def _figure(**layout: Any) -> Any:
    import plotly.graph_objects as go

    return go.Figure(layout={**_LAYOUT, **layout})


def _empty(fig: Any, text: str) -> Any:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=140, showlegend=False)  # nothing to see: no empty square of white
    return fig


def _run_marks(report: JobReport, axis: TimeAxis) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shapes and annotations marking each run's start, when there is more than one run."""
    runs = sorted(report.runs, key=lambda r: r.start)
    if len(runs) < 2:
        return [], []
    shapes, notes = [], []
    for run in runs:
        x = _ms(axis(run.start))
        label = f"run {run.number}" + (" (resumed)" if run is not runs[0] else "")
        if not run.recorded:  # tries of an older batchinfer's runs, before events.jsonl existed
            label = "earlier runs (not recorded)"
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                       "line": {"color": "#444", "dash": "dot", "width": 1}})
        notes.append({"x": x, "y": 1, "xref": "x", "yref": "paper", "text": label, "showarrow": False,
                      "xanchor": "left", "yanchor": "bottom", "font": {"size": 11}})
    return shapes, notes


def throughput(report: JobReport, axis: TimeAxis) -> Any:
    """Items succeeded per second (binned by the end of their try) and the cumulative count."""
    import plotly.graph_objects as go

    t = report.tries
    fig = _figure(xaxis={"title": {"text": "seconds of running"}, **_GRID},
                  yaxis={"title": {"text": "items/s"}, **_GRID, "rangemode": "tozero"},
                  yaxis2={"title": {"text": "items succeeded (cumulative)"}, "overlaying": "y", "side": "right",
                          "rangemode": "tozero", "showgrid": False},
                  bargap=0)
    if not len(t):
        return _empty(fig, "no try recorded")
    ends = [axis(s + d) for s, d in zip(t.start, t.seconds)]
    start = min(0.0, min(ends))
    width = _nice_width(max(ends) - start, max(10, min(THROUGHPUT_BINS, len(t) // 4)))
    n = int((max(ends) - start) // width) + 1
    items = [0] * n
    for e, ok in zip(ends, t.succeeded):
        items[int((e - start) // width)] += ok
    xs = [_ms(start + (i + 0.5) * width) for i in range(n)]
    cumulative, total = [], 0
    for k in items:
        total += k
        cumulative.append(total)
    fig.add_trace(go.Bar(x=xs, y=[_ms(k / width) for k in items], width=width, name="items/s",
                         marker={"color": "#4c78a8"}, hovertemplate="%{x} s: %{y} items/s<extra></extra>"))
    fig.add_trace(go.Scatter(x=[_ms(start + (i + 1) * width) for i in range(n)], y=cumulative, yaxis="y2",
                             mode="lines", name="items succeeded", line={"color": "#222", "width": 2},
                             hovertemplate="%{x} s: %{y} items<extra></extra>"))
    shapes, notes = _run_marks(report, axis)
    fig.update_layout(shapes=shapes, annotations=notes)
    return fig


@dataclass
class Timeline:
    """The timeline figure and what was done to keep it small."""

    figure: Any
    aggregated: int = 0  # ok tries drawn as busy fractions instead of bars
    sampled: tuple[int, int] | None = None  # (failed tries drawn, failed tries in all)


def _sample(indexes: list[int], keep: int) -> list[int]:
    if len(indexes) <= keep:
        return indexes
    step = len(indexes) / keep
    return [indexes[int(i * step)] for i in range(keep)]


def timeline(report: JobReport, axis: TimeAxis) -> Timeline:
    """One row per worker: init() bars, ok tries in grey (or their busy fraction when dense), short
    returns as grey bars with an outline, failed tries coloured by kind with one legend entry per kind."""
    import plotly.graph_objects as go

    t = report.tries
    fig = _figure(xaxis={"title": {"text": "seconds of running"}, **_GRID},
                  yaxis={"title": {"text": "worker"}, "autorange": "reversed", "zeroline": False},
                  barmode="overlay")
    if not len(t) and not report.workers:
        return Timeline(_empty(fig, "no try recorded"))
    rows = sorted(set(t.worker) | {w.worker for w in report.workers})
    # 28 px a row up to 40 workers; more rows get thinner so that 200 workers stay one screenful or two
    fig.update_layout(height=max(260, 120 + round(len(rows) * max(8.0, min(28.0, 1100 / len(rows))))))
    if len(rows) <= 40:
        fig.update_yaxes(dtick=1)
    ends = [axis(s + d) for s, d in zip(t.start, t.seconds)]
    span = max(ends, default=0.0) - (min(0.0, axis(t.start[0])) if len(t) else 0.0)
    # a try of a few ms on an axis of hours would be a hairline, and its worker would look idle: every
    # bar is drawn at least this wide (the hover says how long it really took)
    least = max(span / 500, 0.001)
    # %{x} of a bar with a base is where it ends, not its length: the seconds go in customdata
    hover = ("mini-batch %{customdata[0]}%{customdata[1]}, try %{customdata[2]}<br>%{customdata[5]:.3f} s, "
             "%{customdata[3]} items<br>%{customdata[4]}<extra>worker %{y}</extra>")

    def bars(idx: list[int], name: str, colour: str, outline: float = 0, line: str | None = None) -> Any:
        said = {k: html_text(kind_label(k)) for k in {t.status[i] for i in idx}}  # a few kinds, many tries
        return go.Bar(orientation="h", base=[_ms(axis(t.start[i])) for i in idx],
                      x=[_ms(max(t.seconds[i], least)) for i in idx], y=[t.worker[i] for i in idx],
                      width=0.8, name=name, marker={"color": colour, "line": {"width": outline, "color": line or colour}},
                      customdata=[[t.mini_batch[i], f" part {html_text(t.part[i])}" if t.part[i] else "",
                                   t.try_number[i], t.items[i], said[t.status[i]], _ms(t.seconds[i])]
                                  for i in idx],
                      hovertemplate=hover)

    if report.workers:
        fig.add_trace(go.Bar(orientation="h", base=[_ms(axis(w.ready - w.init_s)) for w in report.workers],
                             x=[max(_ms(w.init_s), 0.001) for w in report.workers],
                             y=[w.worker for w in report.workers], width=0.8, name="init()",
                             marker={"color": INIT_COLOUR, "line": {"width": 1, "color": INIT_COLOUR}},
                             customdata=[[w.run, w.pid if w.pid is not None else "?", _ms(w.init_s)]
                                         for w in report.workers],
                             hovertemplate="init() %{customdata[2]:.3f} s<br>run %{customdata[0]}, pid %{customdata[1]}"
                                           "<extra>worker %{y}</extra>"))
    ok = [i for i, s in enumerate(t.status) if s == "ok"]
    by_kind: dict[str, list[int]] = {}  # failed tries, and short returns (drawn as bars whatever the density)
    for i, s in enumerate(t.status):
        if s != "ok":
            by_kind.setdefault(s, []).append(i)
    out = Timeline(fig)
    if len(t) <= TIMELINE_MAX_BARS:
        if ok:
            fig.add_trace(bars(ok, "ok", OK_COLOUR))
    elif ok:  # a dense job whose tries all failed has no busy fraction to draw
        out.aggregated = len(ok)
        fig.add_trace(_busy(report, axis, ok, rows))
    failed = sum(len(v) for v in by_kind.values())
    if failed > FAILED_MAX_BARS:
        shown = 0
        for kind, idx in by_kind.items():
            by_kind[kind] = _sample(idx, max(1, FAILED_MAX_BARS * len(idx) // failed))
            shown += len(by_kind[kind])
        out.sampled = (shown, failed)
    shapes, notes = _run_marks(report, axis)
    fig.update_layout(shapes=shapes, annotations=notes)
    for kind in sorted(by_kind, key=lambda k: (k == SHORT, k not in KIND_COLOURS, k)):
        if kind == SHORT:  # its rows were kept: an ok try with an outline, not a failure's colour
            fig.add_trace(bars(by_kind[kind], SHORT_LABEL, OK_COLOUR, outline=2, line=kind_colour(kind)))
        else:  # an outline too: a failed try stays visible among ok ones
            fig.add_trace(bars(by_kind[kind], html_text(kind), kind_colour(kind), outline=2))
    return out


def _busy(report: JobReport, axis: TimeAxis, ok: list[int], rows: list[int]) -> Any:
    """A heatmap: the fraction of each time bin each worker spent in ok tries."""
    import plotly.graph_objects as go

    t = report.tries
    spans = [(axis(t.start[i]), axis(t.start[i]) + t.seconds[i], t.worker[i]) for i in ok]
    lo = min(0.0, min(s for s, _, _ in spans))
    hi = max(e for _, e, _ in spans)
    width = _nice_width(hi - lo, TIMELINE_BINS)
    n = int((hi - lo) // width) + 1
    row_of = {w: r for r, w in enumerate(rows)}
    busy = [[0.0] * n for _ in rows]
    for s, e, w in spans:
        line = busy[row_of[w]]
        first, last = int((s - lo) // width), min(int((e - lo) // width), n - 1)
        for b in range(first, last + 1):
            line[b] += min(e, lo + (b + 1) * width) - max(s, lo + b * width)
    z = [[round(min(v / width, 1.0), 2) if v > 0 else None for v in line] for line in busy]
    return go.Heatmap(x=[_ms(lo + (b + 0.5) * width) for b in range(n)], y=rows, z=z, zmin=0, zmax=1,
                      colorscale=[[0, "#dde3e9"], [1, "#4a5866"]], name="ok (busy fraction)",
                      showlegend=True, showscale=False, xgap=0, ygap=4,
                      hovertemplate="worker %{y}, %{x} s: busy %{z:.0%}<extra>ok tries</extra>")


def durations(report: JobReport) -> Any:
    """How long tries took: a histogram, on a log axis when the spread is wide."""
    import plotly.graph_objects as go

    secs = [max(s, 0.001) for s in report.tries.seconds]
    fig = _figure(xaxis={"title": {"text": "seconds per try"}, **_GRID},
                  yaxis={"title": {"text": "tries"}, **_GRID, "rangemode": "tozero"}, showlegend=False)
    if not secs:
        return _empty(fig, "no try recorded")
    lo, hi = min(secs), max(secs)
    log = hi / lo > 50
    bins = max(10, min(40, len(secs) // 5))
    if log:
        a, b = math.log10(lo), math.log10(hi) + 1e-9
        edges = [10 ** (a + (b - a) * i / bins) for i in range(bins + 1)]
        fig.update_xaxes(type="log")
    else:
        w = (hi - lo) / bins or 0.001
        edges = [lo + w * i for i in range(bins + 1)]
    counts = [0] * bins
    for s in secs:
        counts[min(bisect.bisect_right(edges, s) - 1, bins - 1)] += 1
    # bars from edge to edge (offset 0, width in seconds): right on a log axis too
    fig.add_trace(go.Bar(x=edges[:-1], y=counts, width=[b - a for a, b in itertools.pairwise(edges)], offset=0,
                         marker={"color": "#4c78a8", "line": {"color": "white", "width": 0.5}},
                         customdata=edges[1:], hovertemplate="%{x:.3g} to %{customdata:.3g} s: %{y} tries<extra></extra>"))
    return fig


def workers(report: JobReport) -> Any:
    """init() time and memory after init() of every worker start (a replaced worker has several): two
    bars per start, or above ``MAX_WORKER_BARS`` starts one dot per start (init() seconds across, MB up)."""
    import plotly.graph_objects as go

    if len(report.workers) > MAX_WORKER_BARS:
        return _worker_dots(report)
    fig = _figure(barmode="group", yaxis={"title": {"text": "init() seconds"}, **_GRID, "rangemode": "tozero"},
                  yaxis2={"title": {"text": "MB after init()"}, "overlaying": "y", "side": "right",
                          "rangemode": "tozero", "showgrid": False},
                  xaxis={"type": "category"})
    if not report.workers:
        return _empty(fig, "no worker start recorded")
    starts = sorted(report.workers, key=lambda w: (w.run, w.worker, w.ready))
    multi_run = len({w.run for w in starts}) > 1
    seen: dict[tuple[int, int], int] = {}
    labels = []
    for w in starts:
        seen[(w.run, w.worker)] = seen.get((w.run, w.worker), 0) + 1
        label = f"worker {w.worker}" + (f" run {w.run}" if multi_run else "")
        labels.append(label + (f" #{seen[(w.run, w.worker)]}" if seen[(w.run, w.worker)] > 1 else ""))
    custom = [[w.pid if w.pid is not None else "?", html_text(w.node or "?")] for w in starts]
    fig.add_trace(go.Bar(x=labels, y=[_ms(w.init_s) for w in starts], name="init() seconds",
                         offsetgroup=1, marker={"color": INIT_COLOUR}, customdata=custom,
                         hovertemplate="%{x}: init() %{y} s<br>pid %{customdata[0]} on %{customdata[1]}<extra></extra>"))
    fig.add_trace(go.Bar(x=labels, y=[w.rss_mb for w in starts], name="MB after init()", yaxis="y2",
                         offsetgroup=2, marker={"color": "#59a14f"}, customdata=custom,
                         hovertemplate="%{x}: %{y} MB<br>pid %{customdata[0]} on %{customdata[1]}<extra></extra>"))
    return fig


def _worker_dots(report: JobReport) -> Any:
    """Many worker starts: a dot each at (init() seconds, MB after init()), one colour per run."""
    import plotly.graph_objects as go

    fig = _figure(xaxis={"title": {"text": "init() seconds"}, **_GRID, "rangemode": "tozero"},
                  yaxis={"title": {"text": "MB after init()"}, **_GRID, "rangemode": "tozero"})
    runs = sorted({w.run for w in report.workers})
    for run in runs:
        starts = sorted((w for w in report.workers if w.run == run), key=lambda w: (w.worker, w.ready))
        fig.add_trace(go.Scatter(
            x=[_ms(w.init_s) for w in starts], y=[w.rss_mb for w in starts], mode="markers",
            name=f"run {run}" if len(runs) > 1 else "worker starts", showlegend=len(runs) > 1,
            marker={"color": INIT_COLOUR if len(runs) == 1 else None, "size": 7, "opacity": 0.7},
            customdata=[[w.worker, w.pid if w.pid is not None else "?", html_text(w.node or "?"), w.run]
                        for w in starts],
            hovertemplate="worker %{customdata[0]} (run %{customdata[3]}), pid %{customdata[1]} on %{customdata[2]}"
                          "<br>init() %{x} s, %{y} MB<extra></extra>"))
    return fig
