"""The report page (``batchinfer.htmlreport.page.render``) from hand-made reports, without a browser
(``tests/test_report_browser.py`` opens real pages in Chromium): the document parses, fetches
nothing, holds every chart and headline number, names every failure kind in the timeline's legend,
shows hostile names and names that are not UTF-8 as text, says when it aggregated or sampled the
timeline, and stays readable with an estimated total, very short tries and a hundred worker starts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser

import pytest
from report_fixtures import job_report, synthetic_report

from batchinfer import protocol
from batchinfer.errors import MissingExtraError
from batchinfer.htmlreport import charts, page
from batchinfer.htmlreport.model import FailureGroup, PipelineReport, Run, StepReport
from batchinfer.htmlreport.page import render
from batchinfer.layout import REPORT_MARKER_WITHIN

CHARTS = ["chart-throughput", "chart-timeline", "chart-durations", "chart-workers"]
HEADLINE = ["state", "items-succeeded", "items-failed", "items-total", "mini-batches-done", "mini-batches-total",
            "tries", "elapsed", "items-per-s", "workers"]
HOSTILE = "<script>alert(1)</script>"
DAY = 86_400.0
SIGNED = "https://acct.blob.core.windows.net/c/f.png?sv=2024-01-01&sig=AbCdEfSecret0123456789"


class Page(HTMLParser):
    """What a browser would see of a page: elements by id, visible text, scripts, fetchable URLs."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: dict[str, dict[str, str | None]] = {}
        self.duplicate_ids: list[str] = []
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "id" in a:
            (self.duplicate_ids.append if a["id"] in self.ids else lambda _: None)(a["id"])
            self.ids[a["id"]] = a
        self.urls += [v for k, v in attrs if k in ("src", "href", "action", "poster", "data") and v]
        self.urls += re.findall(r"url\(([^)]*)\)", a.get("style") or "")
        if tag in ("script", "style"):
            self._in = tag
            (self.scripts if tag == "script" else self.styles).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in == "style":
            self.styles[-1] += data
        else:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(self.text)

    def figure_script(self, div_id: str) -> str:
        """The script that draws the chart in div ``div_id``."""
        [script] = [s for s in self.scripts if f'document.getElementById("{div_id}")' in s]
        return script

    def strings(self, div_id: str) -> list[str]:
        """Every string of a chart's JSON as plotly.js gets it (it renders them as a subset of HTML)."""
        return [json.loads(s) for s in re.findall(r'"(?:[^"\\]|\\.)*"', self.figure_script(div_id))]

    def legend(self, div_id: str) -> set[str]:
        """The trace names of a chart, as the reader sees them (plotly shows HTML entities decoded)."""
        names = re.findall(r'"name":("(?:[^"\\]|\\.)*")', self.figure_script(div_id))
        return {unescape(json.loads(n)) for n in names}


def failure(kind: str, first_line: str = "it broke", message: str = "it broke\nbadly") -> FailureGroup:
    return FailureGroup(kind, first_line, 1, 10, ["a.png"], [1], message, "Traceback (most recent call last):\n  x")


FAILED_KINDS = ["exception", "timeout", "worker_died", "out_of_memory", "disk_full"]  # disk_full: no one knows it

CASES = {
    "succeeded": job_report([(0, 1, 0, "ok"), (0.1, 2, 1, "ok"), (1.2, 0.5, 0, "ok")]),
    "failed, every kind and an unknown one": job_report(
        [(i * 0.5, 0.4, i % 2, k) for i, k in enumerate(["ok", *FAILED_KINDS, "ok"])], state="failed",
        failures=[failure(k) for k in FAILED_KINDS], reason="5 mini-batches failed, more than allowed_failed_count 2",
        first_error="ValueError: cannot identify image file 'bad.png'"),
    "running snapshot": job_report([(0, 1, 0, "ok"), (0.5, 1, 1, "timeout")], state="running",
                                   snapshot_at="2026-11-30T10:05:00Z", failures=[failure("timeout")],
                                   mini_batches_total=40, items_total=400),
    "interrupted and resumed a day later": job_report(
        [(0, 1, 0, "ok"), (1, 1, 1, "ok"), (DAY + 5, 1, 0, "ok"), (DAY + 6, 1, 1, "ok", "0-4")],
        state="interrupted", runs=[Run(1, 0.0, 2.5, "interrupted"), Run(2, DAY + 3, None, None)]),
    "stopped without finishing": job_report([(0, 1, 0, "ok")], state="stopped", runs=[Run(1, 0.0, None, None)]),
    "no tries at all": job_report([], state="failed", workers=0, reason="init() failed 3 times",
                                  first_error="ImportError: no module named 'torch'"),
    "hostile names": job_report(
        [(0, 1, 0, "ok", HOSTILE), (0.5, 1, 1, HOSTILE)], state="failed", job=HOSTILE, first_error=HOSTILE,
        reason="</script><script>alert(2)</script>", items=[HOSTILE, "</script>", "a&b.png"],
        failures=[failure(HOSTILE, HOSTILE, f"{HOSTILE}\n</script>"), failure("storage", f"cannot read {SIGNED}")],
        output_dir=f"/tmp/{HOSTILE}"),
    "short returns among ok tries": job_report(
        [(0, 1, 0, "ok"), (0.2, 1, 1, protocol.SHORT_RETURN), (1.1, 1, 1, protocol.SHORT_RETURN), (1.2, 1, 0, "timeout")],
        state="succeeded", failures=[failure(protocol.SHORT_RETURN, "run() returned 8 results for 10 items: 2 counted "
                                             "as failed"), failure(protocol.TIMEOUT)]),
}


def jobs_of(report: JobReport | PipelineReport) -> list[tuple[str, object]]:  # noqa: F821
    """(id prefix, JobReport) of every job a report draws."""
    if isinstance(report, PipelineReport):
        return [(f"step-{n}-", s.report) for n, s in enumerate(report.steps, 1) if s.report is not None]
    return [("", report)]


def pipeline() -> PipelineReport:
    return PipelineReport("score-pipeline", "failed", 1, [
        StepReport("score", "parallel", "succeeded", 0, "/runs/p/score", CASES["failed, every kind and an unknown one"]),
        StepReport("publish", "command", "failed", 3, "/runs/p/publish", None,
                   error="python publish.py exited with code 3", log="/runs/p/publish/std_log.txt"),
    ])


@pytest.fixture(scope="module")
def pages() -> dict[str, tuple[object, str]]:
    """Every case drawn once: name -> (report, html)."""
    reports = {**CASES, "a pipeline with a command step": pipeline()}
    return {name: (r, render(r)) for name, r in reports.items()}


@pytest.mark.parametrize("case", [*CASES, "a pipeline with a command step"])
def test_the_page_is_whole_offline_and_holds_every_chart_and_number(pages, case) -> None:
    report, html = pages[case]
    page = Page(html)
    assert page.duplicate_ids == []
    assert page.urls == [], "nothing on the page may be fetched"
    assert not any("url(" in s or "@import" in s for s in page.styles)
    assert "<link" not in html and "<iframe" not in html and "<img" not in html
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()[:200]) == 1, "plotly.js is inlined once"
    jobs = jobs_of(report)
    # the config script, plotly.js, one per chart: a </script> in user text would have cut one short
    assert len(page.scripts) == 2 + 4 * len(jobs)
    for prefix, job in jobs:
        for chart in CHARTS:
            assert f"{prefix}{chart}" in page.ids
        h = job.headline
        for key in HEADLINE:
            assert f"{prefix}{key}" in page.ids
        assert page.ids[f"{prefix}state"]["data-value"] == h.state
        assert page.ids[f"{prefix}items-succeeded"]["data-value"] == str(h.items_succeeded)
        assert page.ids[f"{prefix}tries"]["data-value"] == str(h.tries)
        for key, value in [("reason", h.reason), ("first-error", h.first_error), ("snapshot", h.snapshot_at)]:
            if value:
                assert page.ids[f"{prefix}{key}"]["data-value"] == value
        kinds = {charts.kind_label(s) for s in job.tries.status if s != "ok"}
        expected = kinds | ({"ok"} if "ok" in job.tries.status else set()) | ({"init()"} if job.workers else set())
        assert page.legend(f"{prefix}chart-timeline") == expected
        for g in job.failures:
            if SIGNED not in g.first_line:
                assert g.first_line in page.visible and g.message in page.visible and g.traceback in page.visible


def test_a_pipeline_shows_its_steps_and_a_command_steps_error_and_log(pages) -> None:
    page = Page(pages["a pipeline with a command step"][1])
    assert page.ids["state"]["data-value"] == "failed"
    assert {"step-1", "step-2", "step-2-error"} <= set(page.ids)
    assert "python publish.py exited with code 3" in page.visible
    assert "/runs/p/publish/std_log.txt" in page.visible
    assert "step-2-chart-timeline" not in page.ids


def test_the_page_carries_the_mark_batchinfer_report_looks_for_before_overwriting(pages) -> None:
    html = pages["succeeded"][1]
    assert page.GENERATOR == '<meta name="generator" content="batchinfer report">'
    assert html.count(page.GENERATOR) == 1 and html.index(page.GENERATOR) < html.index("</head>")
    # batchinfer reads only a page's first bytes to know it as its own (manifest.is_own_report, a store's page)
    assert page.GENERATOR.encode() in html.encode()[:REPORT_MARKER_WITHIN]


def test_hostile_names_show_as_text_never_as_markup(pages) -> None:
    html = pages["hostile names"][1]
    assert "<script>alert(" not in html and "alert(1)</script>" not in html
    page = Page(html)
    assert HOSTILE in page.visible  # shown, as text
    assert "</script><script>alert(2)</script>" in page.visible
    assert HOSTILE in page.legend("chart-timeline")
    for chart in CHARTS:  # legend names and hover data reach plotly.js escaped: it would render raw tags
        assert not [s for s in page.strings(chart) if "alert(" in s and "<" in s]
    assert any("&lt;script&gt;alert(1)" in s for s in page.strings("chart-timeline"))


def test_a_signed_url_in_a_message_shows_without_its_signature(pages) -> None:
    html = pages["hostile names"][1]
    assert "AbCdEfSecret0123456789" not in html
    assert "cannot read https://acct.blob.core.windows.net/c/f.png?sv=2024-01-01&sig=***" in Page(html).visible


def test_a_snapshot_and_a_stopped_job_say_so(pages) -> None:
    assert "snapshot of a running job taken at 2026-11-30T10:05:00Z" in Page(pages["running snapshot"][1]).visible
    assert "stopped without finishing" in Page(pages["stopped without finishing"][1]).visible
    assert "snapshot" not in Page(pages["succeeded"][1]).ids


def test_a_resume_a_day_later_is_marked_and_cut_out_of_the_time_axis(pages) -> None:
    report, html = pages["interrupted and resumed a day later"]
    page = Page(html)
    assert "time-cut" in page.ids and "1 d 0 h" in page.visible
    assert "run 2 (resumed)" in page.figure_script("chart-throughput")
    axis = charts.TimeAxis.of(report)
    assert axis(DAY + 3) == pytest.approx(2.5)  # run 2 starts where run 1 ended
    assert "time-cut" not in Page(pages["succeeded"][1]).ids


@pytest.mark.parametrize("max_bars, max_failed, aggregated, sampled", [
    (10_000, 3_000, False, False),
    (5_000, 3_000, True, False),
    (10_000, 100, False, True),
    (5_000, 100, True, True),
])
def test_a_dense_timeline_says_what_it_aggregated_or_sampled(monkeypatch, max_bars, max_failed, aggregated, sampled):
    report = synthetic_report(tries=8_000, workers=4, failures=0.05)
    monkeypatch.setattr(charts, "TIMELINE_MAX_BARS", max_bars)
    monkeypatch.setattr(charts, "FAILED_MAX_BARS", max_failed)
    page = Page(render(report))
    assert ("aggregated" in page.visible) == aggregated == ("timeline-aggregated" in page.ids)
    assert ("sampled" in page.visible) == sampled == ("timeline-sampled" in page.ids)
    script = page.figure_script("chart-timeline")
    assert ('"type":"heatmap"' in script) == aggregated
    failed = sum(s != "ok" for s in report.tries.status)
    drawn = sum(script.count(f'"{k}"') for k in ["exception", "timeout", "worker_died", "out_of_memory", "disk_full"])
    assert drawn > 0 and (drawn < failed) == sampled
    assert page.legend("chart-timeline") >= {"exception", "timeout", "worker_died", "out_of_memory", "disk_full"}


def test_unknown_kinds_get_a_colour_of_their_own_that_does_not_change() -> None:
    colours = {k: charts.kind_colour(k) for k in [*charts.KIND_COLOURS, "disk_full", "gpu_lost"]}
    assert len(set(colours.values())) == len(colours)
    script = "from batchinfer.htmlreport.charts import kind_colour; print(kind_colour('disk_full'))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == colours["disk_full"]


def test_without_plotly_render_asks_for_the_extra(monkeypatch) -> None:
    for name in ["plotly", "plotly.io", "plotly.offline", "plotly.graph_objects"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError) as e:
        render(CASES["succeeded"])
    assert "pip install 'batchinfer[report]'" in str(e.value) and e.value.exit_code == 2


def test_importing_the_page_does_not_import_plotly() -> None:
    script = "import sys, batchinfer.htmlreport.page, batchinfer.htmlreport.charts; print('plotly' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("groups", [1, page.MAX_GROUPS, page.MAX_GROUPS + 5])
def test_many_failure_groups_show_the_largest_and_count_the_rest(groups) -> None:
    report = job_report([(i * 0.1, 0.1, 0, "exception") for i in range(groups)], state="failed",
                        failures=[failure("exception", f"cannot read file-{n}.png") for n in range(groups)])
    text = Page(render(report)).visible
    shown = min(groups, page.MAX_GROUPS)
    assert all(f"cannot read file-{n}.png" in text for n in range(shown))
    assert not any(f"cannot read file-{n}.png" in text for n in range(shown, groups))
    assert (f"… and {groups - shown} more groups ({groups - shown} tries)" in text) == (groups > shown)
    assert f"Failed tries by kind: exception {groups}." in re.sub(r"\s+", " ", text)


def test_a_dense_job_whose_every_try_failed_draws_its_failures(monkeypatch) -> None:
    report = synthetic_report(tries=400, workers=4, failures=1.0)
    monkeypatch.setattr(charts, "TIMELINE_MAX_BARS", 100)  # dense: ok tries would be aggregated, and there are none
    page = Page(render(report))
    assert "timeline-aggregated" not in page.ids and '"type":"heatmap"' not in page.figure_script("chart-timeline")
    assert page.legend("chart-timeline") == {"exception", "timeout", "worker_died", "out_of_memory", "disk_full", "init()"}


def test_short_returns_are_not_counted_or_coloured_as_failures(pages) -> None:
    report, html = pages["short returns among ok tries"]
    page = Page(html)
    text = re.sub(r"\s+", " ", page.visible)
    assert "Failed tries by kind: timeout 1." in text
    assert page.ids["short-tries"]["data-value"] == "2" and "2 tries worked but run() returned fewer results" in text
    legend = page.legend("chart-timeline")
    assert charts.SHORT_LABEL in legend and protocol.SHORT_RETURN not in legend
    fig = charts.timeline(report, charts.TimeAxis.of(report)).figure
    [short] = [tr for tr in fig.data if tr.name == charts.SHORT_LABEL]
    assert short.marker.color == charts.OK_COLOUR != short.marker.line.color  # grey like ok, with an outline


@pytest.mark.parametrize("state, total, estimated, shown", [
    ("running", 40, True, "of ~40"),
    ("running", 40, False, "of 40"),
    ("running", None, False, "of ?"),  # still listing its inputs: neither "of 0" nor nothing
    ("stopped", None, False, "of ?"),
    ("succeeded", 40, False, "of 40"),
    ("succeeded", None, False, None),  # not recorded by an old batchinfer: nothing to say
])
def test_the_headline_shows_an_estimated_total_as_such_and_an_unknown_one_as_unknown(state, total, estimated,
                                                                                    shown) -> None:
    report = job_report([(0, 1, 0, "ok")], state=state, mini_batches_total=total,
                        items_total=None if total is None else 10 * total, total_estimated=estimated)
    page = Page(render(report))
    text = re.sub(r"\s+", " ", page.visible)
    mini_batches, items = page.ids["mini-batches-total"], page.ids["items-total"]
    assert mini_batches["data-value"] == ("" if total is None else str(total))
    assert (mini_batches.get("data-estimated") == "1") == estimated
    assert items["data-value"] == ("" if total is None else str(10 * total)) and "data-estimated" not in items
    assert ("hidden" in mini_batches and "hidden" in items) == (shown is None)
    if shown is not None:
        assert f"1 {shown}" in text and f"10 {shown.replace('40', '400').replace('~', '')}" in text


def test_running_time_and_items_per_second_say_they_cover_every_run(pages) -> None:
    one = re.sub(r"\s+", " ", Page(pages["succeeded"][1]).visible)
    two = re.sub(r"\s+", " ", Page(pages["interrupted and resumed a day later"][1]).visible)
    assert "running time" in one and "(all" not in one
    assert "running time (all 2 runs)" in two and "items/s (all 2 runs)" in two


def test_names_that_are_not_utf8_show_as_escaped_bytes() -> None:
    folder, item = "/data/caf\udce9", "img-\udcff.png"  # os.fsdecode of bytes that are not UTF-8
    report = job_report([(0, 1, 0, "ok", "0-\udcfe"), (0.5, 1, 1, "exception")], state="failed", job="caf\udce9",
                        output_dir=folder, items=[item], first_error=f"cannot read {item}",
                        failures=[failure("exception", f"cannot read {item}", f"cannot read {item}\nbadly")])
    report.workers[0].node = "node-\udcfa"
    html = render(report)
    html.encode("utf-8")  # what writing the page does: no UnicodeEncodeError
    text = Page(html).visible
    assert "/data/caf\\xe9" in text and "cannot read img-\\xff.png" in text
    assert any("\\xfe" in s for s in Page(html).strings("chart-timeline"))


def test_a_try_of_a_few_ms_on_a_long_axis_stays_visible() -> None:
    # worker 0 works in 5 ms tries, worker 1 runs one try of an hour: the axis is an hour long
    report = job_report([(k * 0.01, 0.005, 0, "ok") for k in range(20)] + [(0, 3600, 1, "ok")])
    fig = charts.timeline(report, charts.TimeAxis.of(report)).figure
    [ok] = [tr for tr in fig.data if tr.name == "ok"]
    assert min(ok.x) >= 3600 / 1000  # at least a pixel on a chart 1,000 pixels wide
    assert min(c[5] for c in ok.customdata) == 0.005  # the hover keeps how long it took


@pytest.mark.parametrize("workers", [8, 120])
def test_the_workers_chart_and_table_stay_readable_with_many_worker_starts(workers) -> None:
    report = job_report([(0, 1, w, "ok") for w in range(workers)], workers=workers)
    html = render(report)
    shown = Page(html)
    script = shown.figure_script("chart-workers")
    assert ('"mode":"markers"' in script) == (workers > charts.MAX_WORKER_BARS) != ('"type":"bar"' in script)
    assert html.split("chart-workers")[-1].count("<tr>") == 1 + min(workers, page.MAX_WORKER_ROWS)
    assert (f"and {workers - page.MAX_WORKER_ROWS} more worker starts" in shown.visible) == (workers > 32)
    assert charts.timeline(report, charts.TimeAxis.of(report)).figure.layout.height <= 1400
