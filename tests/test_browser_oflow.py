"""The Occupancy Flow volume slicer live in JupyterLab: its time slider moves the body, as a person sees it.

The same machinery as notebook 04's browser test (``tests/test_browser.py``: ``make lab``'s JupyterLab on
a temporary copy of ``notebooks/`` in headless Debian Chromium, Playwright, the slicer's status line
counting whole updates). Into that copy goes a small notebook that does what notebook 10's slicer cell
does: the shipped completion checkpoint, one synthetic test sequence (unseen seed), and
``toolkit.viz.occupancy_slicer(model, [window]).show()``. In the browser: Run All Cells, then drag the time
slider (clicks along its track, a key on its handle) on every world plane, and move each plane's offset
slider at a later time. After each action the slicer must have drawn exactly one update whose panels are
not empty, and a time step must change the occupancy panels (the body moves). Latencies are printed.
"""
from __future__ import annotations

import re
import statistics

import pytest

from tests import test_browser as _browser
from tests.test_browser import (
    _KERNEL_READY,
    CHROMIUM_FLAGS,
    SERVER_START_S,
    UPDATE_S,
    Slicer,
    _chromium,
    _run_all_cells,
)

lab = _browser.lab
"""JupyterLab on a temporary copy of notebooks/ (the fixture of notebook 04's browser test)."""

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "oflow_time_slicer.ipynb"
MIN_INSIDE_PIXELS = 10
"""Of the 64 x 64 (x2 display) argmax image: a body's cut is not empty."""
CELLS = [
    """from toolkit.oflow import load_pretrained, evaluation_windows
from toolkit.synthetic import write_body_dataset
from toolkit.viz import occupancy_slicer""",
    """loaded = load_pretrained('completion')
bodies = write_body_dataset('{data}', sequences=1, frames=17, seed=100, n_points=4096, n_pcl=4096,
                            mesh_resolution=32, progress=False)
window = evaluation_windows(bodies, loaded.meta.get('train_config'), occupancy=False, split=None)[0]""",
    "occupancy_slicer(loaded.model, [window], size=64).show()",
]


class TimeSlicer(Slicer):
    """The Occupancy Flow slicer: one field (argmax and p(inside) panels), a time slider and an offset slider."""

    def check_panels(self, what: str) -> list[dict]:
        panels = self.panels()
        captions = [p["caption"] for p in panels]
        assert captions == ["model: argmax", "model: p(inside)"], f"{what}: panels {captions}"
        inside = int((panels[0]["rgb"] != 0).any(-1).sum())  # a cut through the waist is small: any pixel
        assert inside >= MIN_INSIDE_PIXELS, f"{what}: the argmax is empty ({inside} pixels inside)"
        return panels

    def slider(self, label: str):
        title = self.page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(label)}$"))
        return self.root.locator(".widget-slider").filter(has=title)

    def click(self, label: str, fraction: float) -> None:
        slider = self.slider(label)
        slider.locator(".noUi-target:not(.noUi-state-tap)").wait_for(timeout=UPDATE_S * 1000)
        track = slider.locator(".noUi-base")
        box = track.bounding_box()
        track.click(position={"x": fraction * box["width"], "y": box["height"] / 2})


def test_oflow_slicer_time_slider_live_in_jupyterlab(lab, tmp_path):
    import nbformat
    from playwright.sync_api import sync_playwright

    like = nbformat.read(tmp_path / "notebooks" / "10_oflow_4d_reconstruction.ipynb", as_version=4)
    nb = nbformat.v4.new_notebook(metadata=like.metadata,  # its kernel: no Select Kernel dialog
                                  cells=[nbformat.v4.new_code_cell(c.format(data=tmp_path / "bodies")) for c in CELLS])
    nbformat.write(nb, tmp_path / "notebooks" / NOTEBOOK)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(lab.url(f"/lab/tree/{NOTEBOOK}"))
            page.wait_for_function(_KERNEL_READY, timeout=SERVER_START_S * 1000)
            _run_all_cells(page, len(CELLS))
            root = page.locator(".jp-OutputArea-output .widget-vbox:has(.widget-slider)").first
            root.scroll_into_view_if_needed()
            page.wait_for_function("root => root.querySelectorAll('img.widget-image[src^=\"blob:\"]').length == 2",
                                   arg=root.element_handle(), timeout=UPDATE_S * 1000)
            slicer = TimeSlicer(page, root)
            slicer.check_panels("first view (x plane, t = 0)")
            plane = slicer.dropdown("plane")
            assert plane.evaluate("s => Array.from(s.options, o => o.value)") == ["x", "y", "z"]
            for kind in ("x", "y", "z"):
                if kind != "x":
                    slicer.act("plane", f"plane {kind}", lambda p=kind: plane.select_option(p), must_change=None)
                for fraction in (0.99, 0.5, 0.01):
                    slicer.act("time", f"plane {kind}: time to {fraction:.0%}",
                               lambda f=fraction: slicer.click("time", f), must_change="model: p(inside)")
                slicer.act("offset", f"plane {kind}: offset slider", lambda p=kind: slicer.click(p, 0.4),
                           must_change=None)
            slicer.slider("time").locator(".noUi-handle").focus()
            slicer.act("time", "time slider, End key", lambda: page.keyboard.press("End"),
                       must_change="model: p(inside)")
            page.screenshot(path=str(tmp_path / "oflow_slicer.png"))
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}\nserver log:\n{lab.log_tail()}")
            raise
        finally:
            browser.close()
    times = [r["latency_ms"] for r in slicer.latencies if r["kind"] == "time"]
    print(f"time slider: {len(times)} steps, median {statistics.median(times):.0f} ms, max {max(times):.0f} ms")
    assert statistics.median(times) < 5000, "the time slider stopped being live"
