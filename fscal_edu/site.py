"""``fscal-edu site``: the course as a static website that works offline.

nbconvert's HTML exporter (its ``basic`` template: the cells only, no script from a CDN) turns
each executed notebook into the body of a page; this module wraps it in one page shell with the
navigation, and turns the README and the docs into pages with mistune (both come with
JupyterLab, nothing else to install). Every asset lies in ``DIR/assets``: one shared copy of
plotly.js from the installed ``plotly`` package, a stylesheet and a small script that draws each
saved plotly figure with ``Plotly.newPlot`` (hover, zoom, and the dropdowns and sliders of
kernel-free figures keep working). LaTeX stays as written (no math renderer is shipped). A widget
that needs a kernel becomes one line saying so, above the figures its saved state holds.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import time
from pathlib import Path

from .utils import FscalError, where

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
KERNEL_NOTE = ("This explorer needs a running Python kernel (open the notebook in JupyterLab); "
               "below, a static picture of what it shows.")
DOC_PAGES = (("README.md", "index.html", "Home"), ("docs/design.md", "design.html", "Design"),
             ("docs/architecture.md", "architecture.html", "Architecture"),
             ("docs/benchmarks.md", "benchmarks.html", "Benchmarks"), ("docs/teaching.md", "teaching.html", "Teaching"))

SCRIPT = """// Draw every saved plotly figure of the page (no kernel, no network).
document.querySelectorAll("script.plotly-json").forEach(function (tag) {
  var fig = JSON.parse(tag.textContent);
  var div = document.createElement("div");
  div.className = "plotly-figure";
  tag.parentNode.insertBefore(div, tag);
  Plotly.newPlot(div, {data: fig.data || [], layout: fig.layout || {}, frames: fig.frames || [],
                       config: Object.assign({responsive: true}, fig.config || {})})
    .then(function () { div.dataset.rendered = "1"; });
});
"""

CSS = """body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: #222; display: flex; }
nav { width: 15rem; flex: none; padding: 1rem; background: #f4f5f7; min-height: 100vh; box-sizing: border-box; }
nav a { display: block; padding: .15rem 0; color: #2255aa; text-decoration: none; font-size: .92rem; }
nav a.here { font-weight: bold; color: #000; }
main { flex: 1; max-width: 62rem; padding: 1rem 2rem 4rem; overflow-x: hidden; }
pre { background: #f7f7f9; padding: .6rem; overflow-x: auto; font-size: .85rem; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .2rem .5rem; }
.jp-InputPrompt, .jp-OutputPrompt, .prompt { display: none; }
.jp-Cell { margin: .6rem 0; } .jp-OutputArea-output pre { background: none; }
.kernel-note { background: #fff6dd; border-left: 4px solid #e0a800; padding: .4rem .7rem; }
.pager { display: flex; justify-content: space-between; margin-top: 3rem; }
"""


def _plotly_html(fig: dict) -> str:
    """A saved figure -> a JSON tag that ``site.js`` draws (``</`` escaped inside the tag)."""
    text = json.dumps(fig).replace("</", "<\\/")
    return f'<script type="application/json" class="plotly-json">{text}</script>'


def _widget_pictures(model_id: str, state: dict, seen=None) -> list[dict]:
    """The outputs a widget's saved state shows: Output widgets' outputs, FigureWidgets' figures,
    the children of boxes, depth first."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in state:
        return []
    seen.add(model_id)
    s = state[model_id].get("state", {})
    found = list(s.get("outputs", []))
    if "_data" in s and "_layout" in s:
        found.append({"output_type": "display_data", "data": {PLOTLY_MIME: {"data": s["_data"], "layout": s["_layout"]}}})
    for child in s.get("children", []):
        found += _widget_pictures(str(child).removeprefix("IPY_MODEL_"), state, seen)
    return found


def _static_output(out: dict, state: dict) -> dict:
    """One saved output as the site shows it (plotly drawn by site.js, widgets as a note and a picture)."""
    data = out.get("data", {})
    if PLOTLY_MIME in data:
        return {**out, "data": {"text/html": _plotly_html(data[PLOTLY_MIME])}}
    if WIDGET_MIME in data:
        parts = [f'<p class="kernel-note">{KERNEL_NOTE}</p>']
        for inner in _widget_pictures(data[WIDGET_MIME].get("model_id", ""), state):
            inner_data = _static_output(inner, state).get("data", {})
            if "text/html" in inner_data:
                parts.append(inner_data["text/html"])
            elif "image/png" in inner_data:
                parts.append(f'<img src="data:image/png;base64,{inner_data["image/png"]}">')
        return {**out, "data": {"text/html": "\n".join(parts)}}
    return out


def notebook_body(path: Path) -> tuple[str, str, bool]:
    """An executed notebook -> (title, the HTML of its cells, whether it holds a plotly figure)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(_static_output(o, state)) for o in cell.outputs]
    title = next((ln.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
                  for ln in c.source.splitlines() if ln.startswith("# ")), path.stem)
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    return title, body, "plotly-json" in body


def markdown_body(path: Path, links: dict) -> str:
    """A markdown file -> HTML (mistune, with tables); links to the other pages point at the site."""
    import mistune

    render = mistune.create_markdown(plugins=["table", "strikethrough", "url"], escape=False)
    body = render(path.read_text(encoding="utf-8"))

    def local(m):
        target = m.group(2).split("#")[0]
        name = Path(target).name
        return f'{m.group(1)}"{links.get(name, target) + m.group(2)[len(target):]}"'
    return re.sub(r'(href=)"([^"#:]+[^"]*)"', local, body)


def page(title: str, body: str, nav: list[tuple[str, str]], here: str, *, plotly: bool) -> str:
    """One page: the navigation, the body, previous/next links, the shared assets."""
    links = "\n".join(f'<a href="{href}"{" class=here" if href == here else ""}>{html.escape(t)}</a>'
                      for href, t in nav)
    i = [h for h, _ in nav].index(here)
    prev = f'<a href="{nav[i - 1][0]}">&larr; {html.escape(nav[i - 1][1])}</a>' if i else "<span></span>"
    nxt = f'<a href="{nav[i + 1][0]}">{html.escape(nav[i + 1][1])} &rarr;</a>' if i + 1 < len(nav) else ""
    head = '<script src="assets/plotly.min.js"></script>' if plotly else ""
    tail = '<script src="assets/site.js"></script>' if plotly else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)} · fscal-edu</title><link rel="stylesheet" href="assets/site.css">'
            f'{head}</head>\n<body><nav><strong>fscal-edu</strong>\n{links}</nav>\n<main>\n{body}\n'
            f'<div class="pager">{prev}{nxt}</div></main>{tail}</body></html>\n')


def write_assets(out: Path) -> None:
    """``DIR/assets``: plotly.js (one copy for every page), the stylesheet, the drawing script."""
    import plotly
    from pygments.formatters import HtmlFormatter

    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(plotly.__file__).with_name("package_data") / "plotly.min.js", assets / "plotly.min.js")
    (assets / "site.css").write_text(CSS + HtmlFormatter().get_style_defs(".highlight"), encoding="utf-8")
    (assets / "site.js").write_text(SCRIPT, encoding="utf-8")


def build_site(out, root) -> dict:
    """Build the site of the checkout ``root`` (README, docs/, the executed notebooks/NN_*.ipynb)
    into ``out``; return the pages written, the build time (s) and the site's size (bytes)."""
    start, root, out = time.perf_counter(), Path(root), Path(out)
    notebooks = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [src for src, _, _ in DOC_PAGES if not (root / src).is_file()]
    if missing or not notebooks:
        raise FscalError(f"{where(file=root)}: not the course's checkout (missing "
                         f"{', '.join(missing) or 'notebooks/NN_*.ipynb'})")
    out.mkdir(parents=True, exist_ok=True)
    write_assets(out)
    bodies = {nb.stem + ".html": notebook_body(nb) for nb in notebooks}
    nav = [(href, t) for _, href, t in DOC_PAGES[:1]]
    nav += [(href, title) for href, (title, _, _) in bodies.items()] + [(h, t) for _, h, t in DOC_PAGES[1:]]
    links = {Path(src).name: href for src, href, _ in DOC_PAGES} | {nb.name: nb.stem + ".html" for nb in notebooks}
    for src, href, title in DOC_PAGES:
        text = page(title, markdown_body(root / src, links), nav, href, plotly=False)
        (out / href).write_text(text, encoding="utf-8")
    for href, (title, body, plotly) in bodies.items():
        (out / href).write_text(page(title, body, nav, href, plotly=plotly), encoding="utf-8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"pages": [href for href, _ in nav], "seconds": time.perf_counter() - start, "bytes": size}
