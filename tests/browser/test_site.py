"""The course's website, offline, in a real (headless) Chromium.

The site is built once into a temporary folder (``fscal_edu.site.build_site``); every page is
opened from disk with every request that is not ``file://`` aborted and counted. Each page must
make no such request, log no console error, and draw every saved plotly figure. Every figure that
carries its own controls (plotly ``updatemenus`` / ``sliders``: the explorers that need no
kernel) is driven through them with the mouse: each dropdown entry and each step of each slider
shown must change the figure drawn (its traces and layout in the page, menus and sliders left
aside). A test page with a known figure checks the checker: it must see a control that works and
one that changes nothing.

Needs Chromium and Playwright for Python, like ``test_widgets_in_jupyterlab.py`` (skipped without
them unless ``FSCAL_BROWSER_REQUIRED=1``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from fscal_edu.site import build_site

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = os.environ.get("FSCAL_BROWSER_REQUIRED", "").lower() not in ("", "0", "false", "no")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

pytestmark = pytest.mark.browser

# what a figure shows, menus and sliders left aside (their active entry is not the figure)
FINGERPRINT = """gd => JSON.stringify([gd._fullData.map(t => [t.visible, t.x, t.y, t.z, t.text]),
    Object.fromEntries(Object.entries(gd.layout).filter(([k]) => !["sliders", "updatemenus"].includes(k)))])"""


def _skip_or_fail(why: str):
    if REQUIRED:
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    report = build_site(out, ROOT)
    (out / "controls_check.html").write_text(CHECK_PAGE, encoding="utf-8")
    return out, report


@pytest.fixture(scope="module")
def browser():
    chromium = os.environ.get("FSCAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _skip_or_fail("Chromium not found (FSCAL_CHROMIUM, `chromium` on PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("Playwright for Python is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Offline:
    """One browser page: network outside file:// aborted and counted, console errors kept."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.blocked, self.failed, self.errors = [], [], []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def open(self, path: Path) -> int:
        """Open a page; wait until each of its figures is drawn; return how many there are."""
        self.page.goto(path.as_uri(), wait_until="load")
        n = self.page.locator("script.plotly-json").count()
        self.page.wait_for_function(f"document.querySelectorAll('.plotly-figure[data-rendered]').length >= {n}",
                                    timeout=30_000)
        return n

    def close(self):
        self.context.close()


def _fingerprint(page, fig) -> str:
    return fig.evaluate(FINGERPRINT)


def _changes(page, fig, click) -> bool:
    """Does ``click()`` change what ``fig`` draws (polled up to 3 s)?"""
    before = _fingerprint(page, fig)
    click()
    for _ in range(30):
        if _fingerprint(page, fig) != before:
            return True
        page.wait_for_timeout(100)
    return False


def _slider_steps(page, fig) -> list[str]:
    """Click every step of every slider shown, in the order 1, 0, 2, 3, ...; name those that change nothing."""
    dead = []
    for s in range(fig.locator("g.slider-container").count()):
        slider = fig.locator("g.slider-container").nth(s)
        n = slider.locator("rect.slider-tick-rect").count()
        for i in ([1, 0, *range(2, n)] if n > 1 else []):
            slider.locator("rect.slider-rail-touch-rect").scroll_into_view_if_needed()
            rail = slider.locator("rect.slider-rail-touch-rect").bounding_box()    # in the viewport
            tick = slider.locator("rect.slider-tick-rect").nth(i).bounding_box()
            x, y = tick["x"] + tick["width"] / 2, rail["y"] + rail["height"] / 2
            if not _changes(page, fig, lambda: page.mouse.click(x, y)):
                dead.append(f"slider {s} step {i}")
    return dead


BUTTONS = "g.updatemenu-dropdown-button, g.updatemenu-button"   # a dropdown's entries, a row of buttons


def _open(menu) -> None:
    """Open a dropdown (a row of buttons has no header: its entries are always shown)."""
    if menu.locator("g.updatemenu-header-group").count():
        menu.locator("g.updatemenu-header-group").click()


def _entries(menu) -> int:
    """How many entries a menu has (a dropdown is opened and closed to count them)."""
    _open(menu)
    n = menu.locator(BUTTONS).count()
    _open(menu)
    return n


def drive_controls(page, fig) -> tuple[int, list[str]]:
    """Every entry of every dropdown (and, under each entry, every slider step shown), with the
    mouse: return how many controls were tried and those that did not change the figure."""
    tried, dead = 0, []
    menus = fig.locator("g.updatemenu-container")
    for m in range(menus.count()):
        menu = menus.nth(m)
        n = _entries(menu)
        for b in ([1, 0, *range(2, n)] if n > 1 else []):
            def pick(b=b):
                _open(menu)
                menu.locator(BUTTONS).nth(b).click()
            tried += 1
            if not _changes(page, fig, pick):
                dead.append(f"dropdown {m} entry {b}")
            tried += fig.locator("g.slider-container rect.slider-tick-rect").count()
            dead += [f"dropdown {m} entry {b}, {d}" for d in _slider_steps(page, fig)]
    if not menus.count():
        tried += fig.locator("g.slider-container rect.slider-tick-rect").count()
        dead += _slider_steps(page, fig)
    return tried, dead


def test_site_builds_fast_and_light(site):
    out, report = site
    assert report["seconds"] < 120, report
    assert len(list((out).rglob("plotly.min.js"))) == 1
    assert report["bytes"] < 30e6, report
    for page in report["pages"]:
        text = (out / page).read_text(encoding="utf-8")
        # every script, image and stylesheet the page loads lies in the site (or is inline data)
        loads = re.findall(r'<script[^>]*\ssrc="([^"]+)"', text) + re.findall(r'<img[^>]*\ssrc="([^"]+)"', text)
        loads += re.findall(r'<link[^>]*\shref="([^"]+)"', text)
        outside = [u for u in loads if not u.startswith("data:") and not (out / u).is_file()]
        assert loads and not outside, (page, outside)


def test_every_page_offline_and_every_control_changes_its_figure(site, browser):
    out, report = site
    problems, drawn, controls = [], 0, 0
    for name in report["pages"]:
        tab = Offline(browser)
        n = tab.open(out / name)
        drawn += n
        figs = tab.page.locator(".plotly-figure")
        assert figs.count() == n, f"{name}: {figs.count()} of {n} figures drawn"
        for i in range(n):
            fig = figs.nth(i)
            assert fig.locator(".main-svg").count() > 0, f"{name}: figure {i} has no svg"
            if fig.locator("g.updatemenu-container, g.slider-container").count():
                tried, dead = drive_controls(tab.page, fig)
                controls += tried
                problems += [f"{name}: figure {i}: {d} changes nothing" for d in dead]
        problems += [f"{name}: request outside the site: {u}" for u in tab.blocked + tab.failed]
        problems += [f"{name}: console error: {e}" for e in tab.errors]
        tab.close()
    assert not problems, "\n".join(problems)
    assert drawn >= 20, drawn


def test_the_control_check_sees_a_working_and_a_dead_control(site, browser):
    out, _ = site
    tab = Offline(browser)
    assert tab.open(out / "controls_check.html") == 2
    figs = tab.page.locator(".plotly-figure")
    tried, dead = drive_controls(tab.page, figs.nth(0))
    assert tried >= 2 + 2 * 3 and dead == [], dead          # 2 entries, each with a 3-step slider
    tried, dead = drive_controls(tab.page, figs.nth(1))
    # its second entry repeats the first: seen (the first, picked again after it, changes nothing
    # either); its sliders still work
    assert "dropdown 0 entry 1" in dead and all("slider" not in d for d in dead), dead
    assert not tab.blocked and not tab.errors
    tab.close()


def _check_figure(dead_entry: bool) -> dict:
    """Two dropdown entries (two traces), each with its own 3-step slider of y values: the
    structure of the explorers; ``dead_entry``: the second entry does what the first does."""
    ys = [[1, 2, 3], [3, 1, 2], [2, 3, 1]]
    def steps(trace):
        return [{"method": "restyle", "label": str(k), "args": [{"y": [y]}, [trace]]} for k, y in enumerate(ys)]
    show = lambda t: [{"visible": [t == 0, t == 1]}, {"sliders[0].visible": t == 0, "sliders[1].visible": t == 1}]  # noqa: E731
    second = show(0) if dead_entry else show(1)
    return {"data": [{"type": "scatter", "y": ys[0]}, {"type": "scatter", "y": ys[1], "visible": False}],
            "layout": {"height": 400, "updatemenus": [{"active": 0, "buttons": [
                {"method": "update", "label": "a", "args": show(0)},
                {"method": "update", "label": "b", "args": second}]}],
                "sliders": [{"active": 0, "steps": steps(0)}, {"active": 0, "visible": False, "steps": steps(1)}]}}


CHECK_PAGE = ('<!DOCTYPE html><html><head><meta charset="utf-8"><script src="assets/plotly.min.js"></script>'
              '</head><body>'
              + "".join(f'<script type="application/json" class="plotly-json">{json.dumps(_check_figure(d))}</script>'
                        for d in (False, True))
              + '<script src="assets/site.js"></script></body></html>')
