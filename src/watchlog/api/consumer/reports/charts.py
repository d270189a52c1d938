"""The reports page's charts: SVG drawn on the server by pygal, served as images.

Served as ``<img>`` from the page's own origin, a chart runs no script and needs nothing
from the internet (``js=[]``: pygal's tooltip script would come from a CDN). The page shows
the same numbers in a table beside each chart, for screen readers and for copying.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pygal
from pygal.style import Style

# pygal puts an import hook on sys.meta_path (for its map plugins, pygal.maps.*, unused
# here) that makes every later import in the process warn (ImportWarning, no find_spec).
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

# Dark text on white, and series colours that keep 3:1 against white (WCAG non-text).
STYLE = Style(
    background="#ffffff", plot_background="#ffffff", foreground="#1a1a1a",
    foreground_strong="#1a1a1a", foreground_subtle="#595959", opacity="1",
    opacity_hover="1", transition="none",
    colors=("#1f5fa8", "#b3470f", "#2b7a3d", "#7a3b8f", "#8a6d00", "#a1264b", "#336b73"),
    font_family="system-ui, sans-serif", title_font_size=16, label_font_size=13,
    major_label_font_size=13, legend_font_size=13, value_font_size=12,
)
_COMMON = {"js": [], "disable_xml_declaration": True, "style": STYLE, "width": 720,
           "height": 320, "print_values": False, "legend_at_bottom": True}


def bars(title: str, labels: Sequence[str], values: Sequence[float], unit: str) -> bytes:
    """A horizontal bar per label (one measure, e.g. count by activity type)."""
    chart = pygal.HorizontalBar(title=title, show_legend=False, **_COMMON)
    chart.x_title = unit
    chart.x_labels = list(labels)
    chart.add(unit, list(values))
    svg: bytes = chart.render()  # pygal ships no types
    return svg


def lines(title: str, labels: Sequence[str], series: dict[str, Sequence[float]]) -> bytes:
    """One line per series over days (the 14-day trend)."""
    chart = pygal.Line(title=title, x_label_rotation=30, dots_size=4, **_COMMON)
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    svg: bytes = chart.render()  # pygal ships no types
    return svg


def stacked(title: str, labels: Sequence[str], series: dict[str, Sequence[float]]) -> bytes:
    """Stacked bars over days, a series per activity type (a user's logs per day)."""
    chart = pygal.StackedBar(title=title, x_label_rotation=30, **_COMMON)
    chart.x_labels = list(labels)
    for name, values in series.items():
        chart.add(name, list(values))
    svg: bytes = chart.render()  # pygal ships no types
    return svg
