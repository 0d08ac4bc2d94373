"""The notebooks' widgets in a real JupyterLab, in a real (headless) Chromium.

nbval checks what the kernel prints; these tests check what a student sees. One JupyterLab server
(this environment's, ``FSCAL_QUICK=1``) serves a temporary copy of ``notebooks/``; for each
notebook that makes a widget, a browser tab opens it, runs all cells and waits for the kernel.
Then every widget found in the page (a cell output that holds a ``.jupyter-widgets`` element)
must render (no "Error displaying widget", no "Model not found", no JavaScript error, at least one
plotly figure drawn) and each of its controls (dropdown, slider, checkbox, toggle) must change the
rendered plotly figure (the graph divs' ``data``/``layout`` in the page, not the kernel's state). A
widget without controls is a live figure: its plotly traces must be seen to grow while its cell
is still running. Widgets and controls are found from the page, not from cell numbers; a failure
names the notebook, the widget's cell (index and last source line) and the control's label.

Needs Chromium (``/usr/bin/chromium``, or ``FSCAL_CHROMIUM=PATH``) and Playwright for Python
(``pip install playwright``; its own browser download is not used). Without them the tests skip,
unless ``FSCAL_BROWSER_REQUIRED=1`` (set by ``.ci/run``) makes that a failure. Screenshots of each
widget go to ``runs/browser_screenshots/`` (or ``FSCAL_BROWSER_SHOTS``); pytest prints the folder.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SHOTS = Path(os.environ.get("FSCAL_BROWSER_SHOTS", ROOT / "runs" / "browser_screenshots"))
REQUIRED = os.environ.get("FSCAL_BROWSER_REQUIRED", "").lower() not in ("", "0", "false", "no")
HOW_TO = ("browser tests need Chromium and Playwright for Python: `apt-get install chromium` and "
          "`pip install playwright` (or FSCAL_CHROMIUM=/path/to/chromium); FSCAL_BROWSER_REQUIRED=1 "
          "turns a missing browser into a failure")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
RUN_ALL_TIMEOUT = float(os.environ.get("FSCAL_BROWSER_RUN_TIMEOUT", 240))
CONTROL_TIMEOUT = 30.0         # seconds for one control's figure to change (08 runs a model on a new episode)

pytestmark = pytest.mark.browser


def _makes_widgets(nb: Path) -> bool:
    """A notebook whose code uses widgets or whose saved outputs hold one."""
    cells = json.loads(nb.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        if "widget" in "".join(cell["source"]) or any(WIDGET_MIME in o.get("data", {}) for o in cell.get("outputs", [])):
            return True
    return False


WIDGET_NOTEBOOKS = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if _makes_widgets(p))


# ---------------------------------------------------------------------------------------------
# JupyterLab and Chromium
# ---------------------------------------------------------------------------------------------

def _chromium() -> str | None:
    path = os.environ.get("FSCAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.access(path, os.X_OK) else None


def _missing(what: str, summary: "_Summary"):
    if REQUIRED:
        pytest.fail(f"{what} (FSCAL_BROWSER_REQUIRED is set): {HOW_TO}", pytrace=False)
    summary.skipped = f"{what}: {HOW_TO}"
    pytest.skip(summary.skipped)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


def _copy_tree(tmp: Path) -> Path:
    """``tmp/notebooks`` a copy of the notebooks, ``tmp/runs`` fresh, every other entry of the
    repository a link (the notebooks read ``../data_samples``, ``../bench``...)."""
    shutil.copytree(NOTEBOOKS, tmp / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (tmp / "runs").mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in ("notebooks", "runs", ".git") and not (tmp / entry.name).exists():
            (tmp / entry.name).symlink_to(entry)
    return tmp / "notebooks"


def _settings(lab: Path):
    """Lab settings of this run only: every cell in the DOM (no windowing), no news."""
    files = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
             "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                 {"fetchNews": "false", "checkForUpdates": False}}
    for name, value in files.items():
        (lab / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (lab / "settings" / name).write_text(json.dumps(value))


class _Summary:
    """Prints the screenshot folder at the end of pytest's report."""

    def __init__(self):
        self.shots: list[Path] = []
        self.skipped = ""

    def pytest_terminal_summary(self, terminalreporter):
        if self.skipped:
            terminalreporter.write_sep("-", f"browser tests skipped: {self.skipped}")
        if self.shots:
            terminalreporter.write_sep("-", f"browser screenshots ({len(self.shots)}) in {SHOTS}")


@pytest.fixture(scope="module")
def lab(request):
    """One JupyterLab server and one Chromium for all notebooks (:class:`Lab`)."""
    summary = _Summary()
    request.config.pluginmanager.register(summary, "fscal-browser-summary")
    chromium = _chromium()
    if chromium is None:
        _missing("Chromium not found (FSCAL_CHROMIUM, `chromium` on PATH)", summary)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed", summary)

    tmp = Path(tempfile.mkdtemp(prefix="fscal-browser-"))
    root_dir = _copy_tree(tmp / "tree")
    lab_dir = tmp / "lab"
    _settings(lab_dir)
    port, token = _free_port(), uuid.uuid4().hex
    env = dict(os.environ, FSCAL_QUICK="1", JUPYTERLAB_SETTINGS_DIR=str(lab_dir / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(lab_dir / "workspaces"), JUPYTER_CONFIG_DIR=str(lab_dir / "config"),
               JUPYTER_RUNTIME_DIR=str(lab_dir / "runtime"), PYTHONUNBUFFERED="1")
    env.pop("JUPYTER_TOKEN", None)
    log = open(tmp / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly",
         "--ServerApp.allow_root=True"],
        cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not _answers(f"{base}/api/status?token={token}"):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail("JupyterLab did not start; the end of its log:\n"
                        + (tmp / "jupyterlab.log").read_text()[-3000:], pytrace=False)
        time.sleep(0.3)

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
    except Exception as e:
        server.terminate()
        pw.stop()
        _missing(f"Chromium at {chromium} did not start ({e})", summary)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield Lab(base, token, context, summary)
    finally:
        browser.close()
        pw.stop()
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# What runs in the page
# ---------------------------------------------------------------------------------------------

JS_HELPERS = r"""
window.__fscal = window.__fscal || {};
__fscal.panel = () => { if (!window.jupyterapp) return null;
    for (const w of window.jupyterapp.shell.widgets('main'))
        if (w.context && w.context.path === __fscal.path && w.content && w.sessionContext) return w;
    return null; };
__fscal.kernel = () => { const p = __fscal.panel(); const k = p && p.sessionContext.session
                         && p.sessionContext.session.kernel; return k ? k.status : null; };
__fscal.plain = (key, v) => (ArrayBuffer.isView(v) ? Array.from(v) : v);
__fscal.hash = (s) => { let h = 5381; for (let i = 0; i < s.length; i++) h = ((h * 33) ^ s.charCodeAt(i)) >>> 0;
                        return h.toString(16) + ':' + s.length; };
// a widget: an output whose model holds a widget view (an anywidget FigureWidget draws no
// .jupyter-widgets element), or an output that holds a .jupyter-widgets element
__fscal.modelWidgets = () => { const p = __fscal.panel(); const found = new Set(); if (!p) return found;
    p.content.widgets.forEach(cell => { if (cell.model.type !== 'code' || !cell.outputArea) return;
        cell.outputArea.widgets.forEach((child, i) => { const m = cell.model.outputs.get(i);
            const el = child.node.querySelector('.jp-OutputArea-output');
            if (el && m && m.data && m.data['application/vnd.jupyter.widget-view+json']) found.add(el); }); });
    return found; };
__fscal.topWidgets = () => { const byModel = __fscal.modelWidgets(); const p = __fscal.panel(); if (!p) return [];
    const isWidget = (el) => byModel.has(el) || el.classList.contains('jupyter-widgets') || !!el.querySelector('.jupyter-widgets');
    const all = Array.from(p.node.querySelectorAll('.jp-OutputArea-output')).filter(isWidget);
    return all.filter(el => !all.some(o => o !== el && o.contains(el))); };
__fscal.trouble = (words) => Array.from(__fscal.panel().node.querySelectorAll('.jp-OutputArea-output'))
    .filter(el => words.some(w => (el.innerText || '').includes(w)))
    .map(el => `cell ${__fscal.cellOf(el)[0]}: ${(el.innerText || '').slice(0, 300)}`);
__fscal.plots = (el) => Array.from(el.querySelectorAll('.js-plotly-plot'));
__fscal.points = (el) => __fscal.plots(el).reduce((n, p) => n + (p.data || []).reduce(
    (m, t) => m + ((t.x || t.y || []).length || 0), 0), 0);
__fscal.figure = (el) => __fscal.plots(el).map(p => {
    const layout = Object.assign({}, p.layout || {}); delete layout.width; delete layout.height; delete layout.autosize;
    return __fscal.hash(JSON.stringify({data: p.data || null, layout: layout}, __fscal.plain)); });
__fscal.cellOf = (el) => { const p = __fscal.panel(); const cells = p.content.widgets;
    for (let i = 0; i < cells.length; i++) if (cells[i].node.contains(el)) return [i, cells[i]]; return [-1, null]; };
__fscal.label = (c) => { const l = c.querySelector('.widget-label'); const t = (l && l.textContent.trim())
    || c.getAttribute('title') || (c.textContent || '').trim(); return t || '(no label)'; };
__fscal.describe = () => __fscal.topWidgets().map((el, k) => {
    el.setAttribute('data-fscal-widget', String(k));
    const [ci, cell] = __fscal.cellOf(el);
    const src = cell ? cell.model.sharedModel.getSource().trim().split('\n') : [''];
    const line = src.find(l => /widget|explorer|browser|display\(|interact/i.test(l)) || src[src.length - 1];
    const controls = [];
    const add = (kind, node, label) => { const j = controls.length;
        node.setAttribute('data-fscal-control', k + ':' + j); controls.push({kind, label, id: k + ':' + j}); };
    el.querySelectorAll('.widget-dropdown').forEach(c => { const s = c.querySelector('select');
        if (s && !s.disabled) add('dropdown', s, __fscal.label(c)); });
    el.querySelectorAll('.widget-slider').forEach(c => { const h = c.querySelector('.noUi-handle');
        if (h) add('slider', h, __fscal.label(c)); });
    el.querySelectorAll('.widget-checkbox').forEach(c => { const i = c.querySelector('input[type=checkbox]');
        if (i && !i.disabled) add('checkbox', i, __fscal.label(c)); });
    el.querySelectorAll('button.widget-toggle-button').forEach(b => add('toggle', b, __fscal.label(b)));
    el.querySelectorAll('.widget-toggle-buttons').forEach(c => { const b = c.querySelector('button:not(.mod-active)');
        if (b) add('toggle-buttons', b, __fscal.label(c)); });
    el.querySelectorAll('.widget-radio').forEach(c => { const i = c.querySelector('input[type=radio]:not(:checked)');
        if (i) add('radio', i, __fscal.label(c)); });
    return {index: k, cell: ci, source: line.trim().slice(0, 100), controls,
            text: (el.innerText || '').slice(0, 2000), plots: __fscal.plots(el).length,
            stderr: Array.from(el.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
                         .map(n => n.innerText.slice(0, 1000))};
});
__fscal.sample = () => __fscal.topWidgets().map(el => { const [ci, cell] = __fscal.cellOf(el);
    const prompt = cell && cell.node.querySelector('.jp-InputPrompt');
    return {cell: ci, points: __fscal.points(el), running: !!prompt && prompt.textContent.includes('*')}; });
__fscal.errors = () => { const p = __fscal.panel(); const errs = [];
    p.content.widgets.forEach((c, i) => { if (c.model.type !== 'code') return;
        const outs = c.model.outputs.toJSON();
        outs.forEach(o => { if (o.output_type === 'error') errs.push(`cell ${i}: ${o.ename}: ${o.evalue}`); }); });
    return errs; };
true;   // (page.evaluate would call a function that the script ends with)
"""

PAGE_TROUBLE = ("Error displaying widget", "Model not found", "model not found", "Failed to load model class")


class Lab:
    """The server and the browser. Notebooks run two at a time: while one notebook runs and its
    widgets are operated, the next one already loads and runs its cells in its own tab (one
    notebook's kernel and page leave much of two cores idle)."""

    def __init__(self, base: str, token: str, context, summary: _Summary):
        self.base, self.token, self.context, self.summary = base, token, context, summary
        self.started: dict[str, Notebook] = {}

    def notebook(self, name: str) -> "Notebook":
        if name not in self.started:
            self.started[name] = Notebook(self, name)
        return self.started.pop(name)

    def prestart(self, name: str):
        if name not in self.started:
            self.started[name] = Notebook(self, name)


class Notebook:
    """One notebook in its own tab (its own JupyterLab workspace): open it and click 'run all
    cells' at once; then wait for it, look at its widgets and operate them."""

    def __init__(self, lab: Lab, name: str):
        self.name, self.console = name, []
        self.page = page = lab.context.new_page()
        page.set_default_timeout(30_000)
        page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"uncaught: {e}"))
        # Everything up to 'run all cells' happens in the page, so that the previous notebook's
        # test goes on meanwhile: once JupyterLab is up, open the notebook, wait for its kernel,
        # start the sampler of the widgets' plotly point counts and click 'run all cells'.
        page.add_init_script(JS_HELPERS + """
            __fscal.path = %s; __fscal.t0 = performance.now();
            if (window.top === window) (async () => {
                while (!(window.jupyterapp && window.jupyterapp.commands)) await new Promise(r => setTimeout(r, 100));
                const app = window.jupyterapp; await app.started; await app.restored;
                await app.commands.execute('docmanager:open', {path: __fscal.path, factory: 'Notebook'});
                while (__fscal.kernel() !== 'idle') await new Promise(r => setTimeout(r, 100));
                const p = __fscal.panel(); await p.context.ready;
                __fscal.busy = 0; __fscal.samples = []; __fscal.t1 = performance.now();
                p.sessionContext.statusChanged.connect((_, s) => { if (s === 'busy') __fscal.busy++; });
                // look every 0.1 s and after every redraw (a busy page may handle a burst of
                // updates between two ticks): plotly rewrites its paths' d attributes
                const look = () => { const t = performance.now();
                    __fscal.sample().forEach(x => __fscal.samples.push(Object.assign(x, {t}))); };
                __fscal.sampler = setInterval(look, 100);
                __fscal.observer = new MutationObserver(look);
                __fscal.observer.observe(p.node, {subtree: true, childList: true, attributes: true,
                                                  attributeFilter: ['d']});
                __fscal.run = {done: false};
                app.commands.execute('notebook:run-all-cells').then(
                    ok => { __fscal.run = {done: true, ok}; },
                    e => { __fscal.run = {done: true, ok: false, error: String(e)}; });
            })().catch(e => { __fscal.run = {done: true, ok: false, error: 'opening: ' + String(e)}; });
        """ % json.dumps(name))
        page.goto(f"{lab.base}/lab/workspaces/fscal-{uuid.uuid4().hex[:8]}?reset&token={lab.token}",
                  wait_until="commit")

    def js(self, expr: str, arg=None):
        self.page.evaluate(JS_HELPERS)
        return self.page.evaluate(expr, arg)

    def close(self):
        """Shut its kernel down and close its tab (without the 'save changes?' dialog)."""
        try:
            self.js("""async () => { const p = __fscal.panel(); if (!p) return;
                await p.sessionContext.shutdown(); p.context.model.dirty = false; }""")
            self.page.close()
        except Exception as e:     # never hide the test's own failure
            print(f"closing {self.name}: {e}")

    def wait(self) -> tuple[list[str], list[dict]]:
        """Wait for 'run all cells' and an idle kernel: ``(errors, samples)``, the samples being the
        widgets' plotly point counts every 0.1 s while the cells ran (the live curves)."""
        deadline, idle_since = time.monotonic() + RUN_ALL_TIMEOUT, None
        while True:
            try:
                run, status = self.page.evaluate("() => window.__fscal && __fscal.run ? [__fscal.run, __fscal.kernel()]"
                                                 " : [{done: false}, null]")
            except Exception:      # the page is still loading
                run, status = {"done": False}, None
            if run["done"] and status == "idle":
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 0.5:
                    break
            else:
                idle_since = None
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: 'run all cells' did not finish in {RUN_ALL_TIMEOUT:.0f} s "
                            f"(kernel {status})", pytrace=False)
            time.sleep(0.2)
        samples = self.js("() => { clearInterval(__fscal.sampler); __fscal.observer.disconnect();"
                          " return __fscal.samples; }")
        self.times = self.js("() => [__fscal.t1 - __fscal.t0, performance.now() - __fscal.t1].map(t => t / 1000)")
        return self.js("() => __fscal.errors()") + ([f"run all: {run['error']}"] if run.get("error") else []), samples

    def settle(self, timeout: float = 20.0):
        """Wait until every widget is drawn and the page's plotly figures stop changing."""
        deadline, last, same = time.monotonic() + timeout, None, 0
        while time.monotonic() < deadline:
            now = self.js("() => [__fscal.topWidgets().map(el => __fscal.figure(el)),"
                          " __fscal.topWidgets().map(el => el.innerText.length)]")
            same = same + 1 if now == last else 0
            if same >= 3 and all(now[0]):
                return
            last = now
            time.sleep(0.3)

    def figure(self, k: int) -> list[str]:
        return self.js("k => __fscal.figure(document.querySelector(`[data-fscal-widget=\"${k}\"]`))", k)

    def wait_change(self, k: int, before: list[str], busy: int) -> list[str] | None:
        """The widget's figure once it differs from ``before`` (as many plots, steady for two looks);
        None once the kernel has handled the change (busy since ``busy``, then idle 1 s) and the
        figure is still ``before``, or after 3 s without the kernel getting busy."""
        start, idle_since, last = time.monotonic(), None, None
        while time.monotonic() - start < CONTROL_TIMEOUT:
            time.sleep(0.2)
            now, status, count = self.js("k => [__fscal.figure(document.querySelector("
                                         "`[data-fscal-widget=\"${k}\"]`)), __fscal.kernel(), __fscal.busy]", k)
            if now != before and len(now) >= max(len(before), 1) and now == last:
                return now
            last = now
            idle_since = (idle_since or time.monotonic()) if status == "idle" and count > busy else None
            if now == before and ((idle_since and time.monotonic() - idle_since > 1.0)
                                  or (count == busy and time.monotonic() - start > 3.0)):
                return None
        return None

    def busy(self) -> int:
        return self.js("() => __fscal.busy")

    def operate(self, control: dict) -> list[str]:
        """The gestures that change ``control``, tried in turn until one changes the figure."""
        loc = self.page.locator(f'[data-fscal-control="{control["id"]}"]')
        kind = control["kind"]
        if kind == "dropdown":
            options = loc.evaluate("s => [Array.from(s.options).map(o => o.value), s.selectedIndex]")
            values, current = options
            order = values[current + 1:] + values[:current]
            labels = loc.evaluate("s => Array.from(s.options).map(o => o.textContent)")
            return [(f"select {labels[values.index(v)]!r}", lambda v=v: loc.select_option(value=v)) for v in order[:3]]
        if kind == "slider":
            def press(key):
                loc.focus()
                loc.press(key)
            return [(f"key {key}", lambda key=key: press(key)) for key in ("ArrowRight", "End", "Home")]
        return [("click", lambda: loc.click())]


def _screenshot(target, path: Path, summary: _Summary, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.screenshot(path=str(path), **kw)
        summary.shots.append(path)
    except Exception:          # a screenshot is for the reviewer; it never decides a test
        pass


def _try(nb: Notebook, k: int, control: dict, limit: int = 3) -> str | None:
    """The first gesture on ``control`` that changes widget ``k``'s rendered figure, or None."""
    for gesture, act in nb.operate(control)[:limit]:
        before, busy = nb.figure(k), nb.busy()
        act()
        if nb.wait_change(k, before, busy) is not None:
            return gesture
    return None


def _exercise(nb: Notebook, w: dict, name: str, report: list[str], problems: list[str]):
    """Operate each control of widget ``w``; a control that changes nothing is tried again after
    each other working control has moved (what one shows may depend on another: a granularity
    matters only for the Dynamics-CA stage, a support not for the support-blind model)."""
    k, working, idle = w["index"], [], []
    for control in w["controls"]:
        what = f"{control['kind']} {control['label']!r}"
        if not nb.operate(control):
            report.append(f"{name}: {what}: one option only, not operated")
        elif gesture := _try(nb, k, control):
            working.append(control)
            report.append(f"{name}: {what}: {gesture} redrew the figure")
        else:
            idle.append(control)
    for control in idle:
        what, found = f"{control['kind']} {control['label']!r}", None
        for other in working:
            for move, act in nb.operate(other):
                before, busy = nb.figure(k), nb.busy()
                act()
                nb.wait_change(k, before, busy)
                if gesture := _try(nb, k, control, limit=2):
                    found = f"{gesture} redrew the figure once {other['label']!r} had moved ({move})"
                    break
            if found:
                break
        if found:
            report.append(f"{name}: {what}: {found}")
        else:
            problems.append(f"{name}: {what} did not change the rendered figure (tried its values with "
                            f"every other control moved too)")


def _widget_name(nb: str, w: dict) -> str:
    return f"{nb}, widget of cell {w['cell']} (`{w['source']}`)"


@pytest.mark.parametrize("notebook", WIDGET_NOTEBOOKS, ids=[n.removesuffix(".ipynb") for n in WIDGET_NOTEBOOKS])
def test_widgets_render_and_respond(lab, notebook, request):
    nb = lab.notebook(notebook)
    page, summary = nb.page, lab.summary
    selected = [i.callspec.params["notebook"] for i in request.session.items
                if getattr(i, "originalname", None) == "test_widgets_render_and_respond" and hasattr(i, "callspec")]
    later = selected[selected.index(notebook) + 1:] if notebook in selected else []
    problems: list[str] = []
    report: list[str] = []     # what was checked, written next to the screenshots
    try:
        if later:              # two notebooks at a time: the next one loads and runs beside this one
            lab.prestart(later[0])
        errors, samples = nb.wait()
        t2 = time.monotonic()
        assert not errors, f"{notebook}: a cell raised in JupyterLab: {errors}"
        nb.settle()
        report.append(f"{notebook}: JupyterLab and kernel up {nb.times[0]:.1f} s, run all cells {nb.times[1]:.1f} s "
                      f"(beside the previous or next notebook), "
                      f"settle {time.monotonic() - t2:.1f} s")
        problems += [f"{notebook}: {t}" for t in nb.js("w => __fscal.trouble(w)", list(PAGE_TROUBLE))]
        widgets = nb.js("() => __fscal.describe()")
        assert widgets, f"{notebook}: its code makes widgets but no widget was displayed in JupyterLab"

        for w in widgets:
            name = _widget_name(notebook, w)
            trouble = [t for t in PAGE_TROUBLE if t in w["text"]]
            if trouble or w["stderr"]:
                problems.append(f"{name}: does not render: {trouble or w['stderr']}: {w['text'][:300]!r}")
                continue
            if not w["plots"]:
                problems.append(f"{name}: no plotly figure drawn (the plotly front-end extension is missing or "
                                f"failed): {w['text'][:300]!r}")
                continue
            _screenshot(page.locator(f'[data-fscal-widget="{w["index"]}"]'),
                        SHOTS / f"{notebook.removesuffix('.ipynb')}_cell{w['cell']:02d}.png", summary)

            if not w["controls"]:      # a live figure: it must grow while its cell runs
                counts = [s["points"] for s in samples if s["cell"] == w["cell"] and s["running"]]
                grew = sorted(set(counts))
                if len(grew) < 2 or any(b < a for a, b in zip(counts, counts[1:])):
                    problems.append(f"{name}: a widget without controls, so a live figure, but its plotly "
                                    f"traces were not seen to grow while the cell ran (points seen: {grew[:10]} in {len(counts)} "
                                    f"looks while it ran; {sum(1 for s in samples if s['cell'] == w['cell'])} looks "
                                    f"in all, {samples[-1]['points'] if samples else '?'} points at the end)")
                else:
                    report.append(f"{name}: live figure grew while its cell ran: {grew[0]} -> {grew[-1]} points "
                                  f"({len(grew)} sizes seen)")
                continue
            _exercise(nb, w, name, report, problems)
            after = (nb.js("() => __fscal.describe()") + [{"text": "widget gone", "stderr": []}] * 9)[w["index"]]
            trouble = [t for t in PAGE_TROUBLE + ("widget gone",) if t in after["text"]] + after["stderr"]
            if trouble:
                problems.append(f"{name}: after operating its controls: {trouble}")

        errors = [e for e in nb.console if not e.startswith("Failed to load resource")]   # HTTP statuses
        if errors:
            problems.append(f"{notebook}: JavaScript errors in the page: {errors[:5]}")
    except BaseException:
        _screenshot(page, SHOTS / f"FAILED_{notebook.removesuffix('.ipynb')}.png", summary, full_page=True)
        raise
    else:
        if problems:
            _screenshot(page, SHOTS / f"FAILED_{notebook.removesuffix('.ipynb')}.png", summary, full_page=True)
    finally:
        nb.close()
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / f"{notebook.removesuffix('.ipynb')}.txt").write_text("\n".join(report + problems) + "\n")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
