"""A real Chromium for the report's tests: open a report file offline and read what the page shows.

Debian's ``chromium`` (tests/install.sh installs it; ``BATCHINFER_CHROMIUM`` names another) is driven by
playwright, which never downloads a browser here. :func:`launch` starts one per test session (the
``browser`` fixture of tests/conftest.py); :meth:`Browser.open_report` opens a file with the network
off and every request but the file itself aborted and recorded, collects console errors and warnings
and uncaught exceptions, and returns once every chart holds a drawn plot (no sleeping).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# a job's chart divs, and a pipeline's (each step's ids carry the prefix step-<n>-)
CHART_SELECTOR = 'div[id^="chart-"], div[id^="step-"][id*="-chart-"]'
WIDTH = 1200
SCREENSHOT_LIMIT = 400 * 1024  # bytes: the README's screenshots stay small

# once every chart div is a drawn plotly plot (plotly marks the div .js-plotly-plot, draws into .main-svg):
# the time since navigation started, in ms (performance.now() in the page, so no round trip is counted)
_CHARTS_DRAWN = f"""() => {{
    const charts = [...document.querySelectorAll('{CHART_SELECTOR}')];
    const drawn = charts.length > 0 && charts.every(c => c.classList.contains('js-plotly-plot') && c.querySelector('.main-svg'));
    return drawn ? performance.now() : false;
}}"""

# a chart's traces as plain JSON: plotly keeps decoded arrays (typed arrays, too) in gd._fullData
_TRACES = """(id) => {
    const gd = document.getElementById(id);
    if (!gd || !gd._fullData) return null;
    const plain = v => ArrayBuffer.isView(v) ? Array.from(v) : Array.isArray(v) ? v.map(plain) : v;
    const keys = ['name', 'type', 'orientation', 'mode', 'x', 'y', 'z', 'base', 'width', 'yaxis', 'text', 'hovertext',
                  'customdata', 'visible'];
    return gd._fullData.map(t => {
        const out = {};
        for (const k of keys) if (t[k] !== undefined) out[k] = plain(t[k]);
        out.marker_color = t.marker ? plain(t.marker.color) : null;
        return out;
    });
}"""


def chromium_path() -> Path | None:
    """The Chromium to drive: ``BATCHINFER_CHROMIUM``, else Debian's /usr/bin/chromium; None when neither exists."""
    named = os.environ.get("BATCHINFER_CHROMIUM")
    for candidate in ([Path(named)] if named else [Path("/usr/bin/chromium")]):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def browser_required() -> bool:
    """Whether a missing browser must fail the tests rather than skip them: ``BATCHINFER_REQUIRE_BROWSER=1``,
    which .ci/run sets (CI never skips them). Deliberately not ``CI=true``: any CI service sets that, and a
    fork's CI that runs plain pytest on a machine without Chromium should skip, saying why, not fail."""
    return os.environ.get("BATCHINFER_REQUIRE_BROWSER") == "1"


def why_not_available() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        named = os.environ.get("BATCHINFER_CHROMIUM")
        if named:
            return f"BATCHINFER_CHROMIUM names {named}, which is not an executable file"
        return ("no Chromium: /usr/bin/chromium is missing and BATCHINFER_CHROMIUM is not set "
                "(tests/install.sh installs Debian's chromium when it may use apt-get)")
    return None


@dataclass
class ReportPage:
    """An opened report: the playwright page and what happened while it loaded."""

    page: Any  # playwright.sync_api.Page
    url: str
    console: list[str] = field(default_factory=list)  # console messages of type error or warning
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    blocked: list[str] = field(default_factory=list)  # requests for anything but the file itself
    drawn_s: float = 0.0  # seconds from navigation start until every chart was drawn (seen at the next frame)

    @property
    def problems(self) -> list[str]:
        """Everything that should not have happened: console errors and warnings, exceptions, requests."""
        return ([f"console: {m}" for m in self.console] + [f"exception: {e}" for e in self.page_errors]
                + [f"request: {u}" for u in self.blocked])

    def chart_ids(self) -> list[str]:
        """The ids of the page's chart divs, in page order."""
        return self.page.eval_on_selector_all(CHART_SELECTOR, "els => els.map(e => e.id)")

    def traces(self, chart_id: str) -> list[dict[str, Any]]:
        """A chart's plotly traces (name, type, x, y, base, width, yaxis, customdata, marker_color...) as plain lists."""
        traces = self.page.evaluate(_TRACES, chart_id)
        assert traces is not None, f"no drawn chart #{chart_id} on the page (charts: {self.chart_ids()})"
        return traces

    def text(self, element_id: str) -> str:
        """The visible text of the element with this id."""
        locator = self.page.locator(f"#{element_id}")
        assert locator.count() == 1, f"no element #{element_id} on the page"
        return locator.inner_text().strip()

    def value(self, element_id: str) -> str:
        """The raw value the page keeps in an element's ``data-value`` (the headline's numbers and state)."""
        locator = self.page.locator(f"#{element_id}")
        assert locator.count() == 1, f"no element #{element_id} on the page"
        value = locator.get_attribute("data-value")
        assert value is not None, f"#{element_id} has no data-value"
        return value

    def number(self, element_id: str) -> float:
        """A number shown in the element with this id (thousands separators and units ignored)."""
        text = self.text(element_id)
        digits = "".join(ch for ch in text.split()[0] if ch.isdigit() or ch in ".-") if text else ""
        assert digits, f"#{element_id} shows {text!r}, not a number"
        return float(digits)

    def body_text(self) -> str:
        """The whole page's visible text."""
        return self.page.inner_text("body")

    def screenshot(self, path: Path) -> Path:
        """A full-page PNG; quantised to 256 colours (Pillow) when it would exceed 400 KB."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True, type="png")
        if path.stat().st_size > SCREENSHOT_LIMIT:
            from PIL import Image

            with Image.open(path) as image:
                image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        return path


class Browser:
    """One Chromium for the session; :meth:`open_report` gives each report a fresh, offline context."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self.chromium = self._playwright.chromium.launch(
                executable_path=str(chromium_path()), args=CHROMIUM_ARGS, headless=True)
        except Exception:
            self._playwright.stop()
            raise

    def close(self) -> None:
        """Stop Chromium and playwright's driver."""
        try:
            self.chromium.close()
        finally:
            self._playwright.stop()

    @contextmanager
    def open_report(self, path: Path, *, width: int = WIDTH, height: int = 900,
                    timeout_s: float = 60) -> Iterator[ReportPage]:
        """Open ``path`` offline; yield once every chart div holds a drawn plot (``timeout_s``: a safety net)."""
        url = Path(path).resolve().as_uri()
        context = self.chromium.new_context(viewport={"width": width, "height": height}, offline=True,
                                            java_script_enabled=True, service_workers="block")
        try:
            page = context.new_page()
            opened = ReportPage(page, url)

            def route(route: Any) -> None:
                if route.request.url == url:
                    route.continue_()
                else:
                    opened.blocked.append(route.request.url)
                    route.abort()

            context.route("**/*", route)
            page.on("console", lambda m: m.type in ("error", "warning") and opened.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: opened.page_errors.append(str(e)))
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            drawn = page.wait_for_function(_CHARTS_DRAWN, timeout=timeout_s * 1000, polling="raf")
            opened.drawn_s = drawn.json_value() / 1000
            yield opened
        finally:
            context.close()


def launch() -> Browser:
    """Start Chromium through playwright (call :func:`why_not_available` first)."""
    return Browser()
