"""Every plotly figure saved in the notebooks, drawn in a real (headless) Chromium at the notebook's width.

nbval checks what the kernel prints; this test checks what a student sees of each figure: its title,
axis titles, legend, colorbars, dropdowns and sliders must not overlap one another and must stay
inside the figure (a title that runs past the figure's edge is cut). Each figure saved in a
notebook's outputs (``application/vnd.plotly.v1+json``) is drawn offline, with the plotly.js of the
installed ``plotly`` package and the network blocked, at its own width or at the width of a notebook's
output area (``WIDTH``), in one browser page. A failure names the notebook, the cell, the figure's
title and the two boxes that collide. ``test_the_checker_sees_a_legend_on_a_colorbar`` checks the
checker on a figure whose legend is moved onto its colorbar.

Needs Chromium (``/usr/bin/chromium``, or ``FSCAL_CHROMIUM=PATH``) and Playwright for Python; without
them the tests skip, unless ``FSCAL_BROWSER_REQUIRED=1`` makes that a failure.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import plotly.graph_objects as go
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDTH = 900                    # px: a notebook's output area in JupyterLab at a usual window size
SLACK = 2.0                    # px: boxes may touch (antialiasing, a stroke's half width)
REQUIRED = os.environ.get("FSCAL_BROWSER_REQUIRED", "").lower() not in ("", "0", "false", "no")
HOW_TO = ("the layout test needs Chromium and Playwright for Python: `apt-get install chromium` and "
          "`pip install playwright` (or FSCAL_CHROMIUM=/path/to/chromium)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

pytestmark = pytest.mark.browser

# Draws one figure into a fresh div and returns the boxes of its labels, relative to the figure.
MEASURE = """async ([fig, width]) => {
  document.body.innerHTML = '';
  const div = document.createElement('div');
  div.style.width = (fig.layout && fig.layout.width ? fig.layout.width : width) + 'px';
  document.body.appendChild(div);
  await Plotly.newPlot(div, fig.data || [], fig.layout || {}, {responsive: false, displayModeBar: false});
  const svg = div.querySelector('.main-svg').getBoundingClientRect();
  const boxes = [];
  const add = (name, el) => {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.height > 0)
      boxes.push({name, x0: r.left - svg.left, y0: r.top - svg.top, x1: r.right - svg.left, y1: r.bottom - svg.top});
  };
  div.querySelectorAll('.gtitle').forEach(el => add('title "' + el.textContent + '"', el));
  div.querySelectorAll('text').forEach(el => {
    const c = el.getAttribute('class') || '';
    if (/^[xy][0-9]*title$/.test(c)) add(c.replace('title', '') + '-axis title "' + el.textContent + '"', el);
  });
  div.querySelectorAll('g.legend').forEach(el => add('legend', el.querySelector('rect.bg') || el));
  div.querySelectorAll('g.colorbar').forEach((el, i) => add('colorbar ' + i, el));
  div.querySelectorAll('g.updatemenu-header-group').forEach((el, i) => add('dropdown ' + i, el));
  div.querySelectorAll('g.slider-group').forEach((el, i) => {
    if (el.getAttribute('display') !== 'none' && el.style.display !== 'none') add('slider ' + i, el);
  });
  return {width: svg.width, height: svg.height, boxes};
}"""


def _overlap(a: dict, b: dict) -> bool:
    return min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > SLACK and min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) > SLACK


def problems(drawn: dict) -> list[str]:
    """What is wrong with one drawn figure: boxes that leave it, and pairs of boxes that overlap."""
    found = []
    for b in drawn["boxes"]:
        if b["x0"] < -SLACK or b["y0"] < -SLACK or b["x1"] > drawn["width"] + SLACK or b["y1"] > drawn["height"] + SLACK:
            found.append(f"{b['name']} leaves the figure ({b['x0']:.0f}, {b['y0']:.0f}, {b['x1']:.0f}, {b['y1']:.0f} "
                         f"in {drawn['width']:.0f} x {drawn['height']:.0f} px)")
    boxes = drawn["boxes"]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if _overlap(a, b):
                found.append(f"{a['name']} overlaps {b['name']}")
    return found


def saved_figures() -> list[tuple[str, dict]]:
    """``(where, figure JSON)`` of every plotly figure in the notebooks' saved outputs."""
    figures = []
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            for k, out in enumerate(cell.get("outputs", [])):
                fig = out.get("data", {}).get(PLOTLY_MIME)
                if fig is not None:
                    title = ((fig.get("layout") or {}).get("title") or {})
                    text = title.get("text", "") if isinstance(title, dict) else str(title)
                    figures.append((f"{nb.name} cell {i} output {k} ({text[:60]!r})", fig))
    return figures


def _chromium() -> str | None:
    path = os.environ.get("FSCAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.access(path, os.X_OK) else None


def _missing(what: str):
    if REQUIRED:
        pytest.fail(f"{what} (FSCAL_BROWSER_REQUIRED is set): {HOW_TO}", pytrace=False)
    pytest.skip(f"{what}: {HOW_TO}")


@pytest.fixture(scope="module")
def draw():
    """One Chromium page with plotly.js and no network: ``draw(figure JSON) -> boxes``."""
    chromium = _chromium()
    if chromium is None:
        _missing("Chromium not found (FSCAL_CHROMIUM, `chromium` on PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed")
    plotly_js = Path(go.__file__).resolve().parent.parent / "package_data" / "plotly.min.js"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": WIDTH + 100, "height": 900})
        page.route("**/*", lambda route: route.abort() if not route.request.url.startswith(("about:", "data:"))
                   else route.continue_())
        page.set_content("<html><body style='margin:0'></body></html>")
        page.add_script_tag(content=plotly_js.read_text())
        yield lambda fig: page.evaluate(MEASURE, [fig, WIDTH])
        browser.close()


def test_every_saved_figure_is_laid_out_without_collisions(draw):
    figures = saved_figures()
    assert len(figures) > 20, "the notebooks' saved outputs hold plotly figures (run them with nbconvert)"
    failures = []
    for name, fig in figures:
        found = problems(draw(fig))
        if found:
            failures.append(f"{name}:\n    " + "\n    ".join(found))
    assert not failures, f"{len(failures)} of {len(figures)} figures collide:\n" + "\n".join(failures)


def _heatmap_with_legend() -> go.Figure:
    fig = go.Figure([go.Heatmap(z=[[0, 1], [1, 0]], colorbar=dict(title="A")),
                     go.Scatter(x=[0, 1], y=[0, 1], name="a line with a long name")])
    return fig.update_layout(title="a heatmap and a line", xaxis_title="x", yaxis_title="y", showlegend=True,
                             legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))


def test_the_checker_sees_a_legend_on_a_colorbar(draw):
    fig = _heatmap_with_legend()
    drawn = draw(json.loads(fig.to_json()))
    assert problems(drawn) == [] and {"legend", "colorbar 0"} <= {b["name"] for b in drawn["boxes"]}
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=0.5, yanchor="middle"))
    found = problems(draw(json.loads(fig.to_json())))
    assert any("legend overlaps colorbar" in f or "colorbar 0 overlaps legend" in f for f in found), found


def test_the_checker_sees_a_title_cut_by_the_edge(draw):
    fig = _heatmap_with_legend().update_layout(title="a title far too long for the figure " * 6, width=500)
    found = problems(draw(json.loads(fig.to_json())))
    assert any(f.startswith("title") and "leaves the figure" in f for f in found), found


def _figures_drawn_now() -> dict:
    """The figures whose layout the notebooks' saved outputs may predate, drawn by the library now
    from the shipped world and model: the attention figures, the time lines, the explorer, NMS."""
    import torch

    from fscal_edu.checkpoints import load_model
    from fscal_edu.data.episodes import World
    from fscal_edu.diagnostics import stage_attention
    from fscal_edu.inference import episode_outputs
    from fscal_edu.postprocess import nms_1d, soft_nms_1d
    from fscal_edu.viz.attention import attention_pair_figure, stage_attention_figure
    from fscal_edu.viz.evaluation import attention_explorer_figure, episode_attention_figure, explorer_figures
    from fscal_edu.viz.proposals import nms_figure
    from fscal_edu.viz.training import detections_timeline_figure
    from fscal_edu.viz.windows import windows_figure

    world = World(ROOT / "data_samples" / "anet_like")
    model = load_model(ROOT / "data_samples" / "checkpoints" / "full.pt", device="cpu")
    eps = world.episodes("test", 5)[:2]
    outs = [episode_outputs(model, world, ep) for ep in eps]
    T, anchors = model.cfg.data.T, model.anchors
    figs = {f"stage_attention_figure {s}": stage_attention_figure(outs[0]["attention"][s], proposal=outs[0]["top"],
                                                                  support=None if s == "stoq" else 0,
                                                                  proposal_labels=outs[0]["proposals"])
            for s in ("qtos", "stoq")}
    from fscal_edu.data.episodes import episode_tensors
    t = episode_tensors(world, eps[0], T, model.cfg.data.T_S)
    pair = stage_attention(model, t["query"][None], t["support"][None])["stoq"]
    figs["attention_pair_figure"] = attention_pair_figure(pair["start"], pair["trained"], support=None, proposal=3)
    for s in ("qtos", "stoq"):
        figs[f"episode_attention_figure {s}"] = episode_attention_figure(
            outs[0]["attention"][s], anchors, T, eps[0], world.annotations, outs[0]["detections"])
    figs["detections_timeline_figure"] = detections_timeline_figure(eps[0], world.annotations,
                                                                    {"full": outs[0]["detections"]}, top=5)
    figs.update(zip(["explorer_figures (left)", "explorer_figures (right)"],
                    explorer_figures(outs[0], eps[0], world.annotations, model="full", stage="stoq", support=None)))
    figs["attention_explorer_figure"] = attention_explorer_figure({"full": outs}, eps, world.annotations,
                                                                  segments=anchors, T=T)
    scores = torch.linspace(1, 0, len(anchors))
    figs["nms_figure"] = nms_figure(anchors, scores, nms_1d(anchors, scores, 0.5, top_k=10),
                                    *soft_nms_1d(anchors, scores, sigma=0.5, top_k=10), gt=[[10, 30]],
                                    iou_threshold=0.5, sigma=0.5)
    figs["windows_figure"] = windows_figure(300, [0, 64, 128, 172], 128, instances=[[40, 90]])
    return figs


def test_the_library_draws_these_figures_without_collisions(draw):
    failures = []
    for name, fig in _figures_drawn_now().items():
        found = problems(draw(json.loads(fig.to_json())))
        if found:
            failures.append(f"{name}:\n    " + "\n    ".join(found))
    assert not failures, "\n".join(failures)
