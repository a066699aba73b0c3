"""Inline SVG plots for ``bench report``: geometry here, markup in ``templates/_plots.html``.

Readable at a glance: the SVG scales to the page width (``viewBox``), every series has its own colour
(Okabe-Ito, distinguishable with colour-vision deficiencies) AND its own marker shape, the legend is HTML
below the plot (it wraps, never clipped) and each plot carries a caption that explains its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Okabe & Ito (2008) colour-blind-safe palette, then two extra distinct hues
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
    "#8c564b",
    "#7f7f7f",
)
MARKERS = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "cross",
    "triangle-down",
    "plus",
    "star",
    "hexagon",
    "x",
)


@dataclass
class Series:
    label: str
    color: str
    marker: str
    points: str  # "x,y x,y ..." in SVG coordinates
    dots: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Plot:
    """A line chart in SVG coordinates (drawn by the ``line_plot`` macro)."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    xticks: list[tuple[float, str]]
    yticks: list[tuple[float, str]]
    caption: str = ""
    vlines: list[float] = field(default_factory=list)
    width: int = 860
    height: int = 330
    left: int = 62
    right: int = 18
    top: int = 16
    bottom: int = 50

    @property
    def x0(self) -> int:
        return self.left

    @property
    def x1(self) -> int:
        return self.width - self.right

    @property
    def y0(self) -> int:
        return self.height - self.bottom

    @property
    def y1(self) -> int:
        return self.top


def marker_path(shape: str, x: float, y: float, r: float = 5.0) -> str:
    """SVG path data of a marker centred at (x, y)."""
    if shape == "square":
        return f"M{x - r},{y - r}h{2 * r}v{2 * r}h{-2 * r}z"
    if shape == "triangle":
        return f"M{x},{y - r * 1.2}L{x + r * 1.1},{y + r * 0.8}L{x - r * 1.1},{y + r * 0.8}z"
    if shape == "triangle-down":
        return f"M{x},{y + r * 1.2}L{x + r * 1.1},{y - r * 0.8}L{x - r * 1.1},{y - r * 0.8}z"
    if shape == "diamond":
        return f"M{x},{y - r * 1.3}L{x + r},{y}L{x},{y + r * 1.3}L{x - r},{y}z"
    if shape in ("cross", "x"):
        return f"M{x - r},{y - r}L{x + r},{y + r}M{x - r},{y + r}L{x + r},{y - r}"
    if shape == "plus":
        return f"M{x - r},{y}h{2 * r}M{x},{y - r}v{2 * r}"
    if shape == "star":
        pts = []
        for i in range(10):
            a = np.pi / 2 + i * np.pi / 5
            rr = r * 1.3 if i % 2 == 0 else r * 0.55
            pts.append(f"{x + rr * np.cos(a):.1f},{y - rr * np.sin(a):.1f}")
        return "M" + "L".join(pts) + "z"
    if shape == "hexagon":
        pts = [f"{x + r * np.cos(a):.1f},{y + r * np.sin(a):.1f}" for a in np.linspace(0, 2 * np.pi, 7)[:-1]]
        return "M" + "L".join(pts) + "z"
    return f"M{x - r},{y}a{r},{r} 0 1,0 {2 * r},0a{r},{r} 0 1,0 {-2 * r},0"


def line_plot(
    title: str,
    xlabel: str,
    ylabel: str,
    curves: list[tuple[str, list[tuple[float, float]]]],
    ymax: float | None = None,
    vlines: tuple[float, ...] = (),
    xfmt: str = "{:.3g}",
    xtick_values: list[float] | None = None,
    caption: str = "",
    marker_every: int = 1,
) -> Plot:
    """Lay out curves ``[(label, [(x, y), ...])]`` on shared axes; y starts at 0."""
    xs = [x for _, pts in curves for x, _ in pts] or [0.0, 1.0]
    ys = [y for _, pts in curves for _, y in pts] or [1.0]
    xmin, xmax = min(xs), max(xs)
    xmax = xmax if xmax > xmin else xmin + 1
    top = ymax if ymax is not None else _nice(max(ys) * 1.1 or 1.0)
    p = Plot(title, xlabel, ylabel, [], [], [], caption)

    def sx(x: float) -> float:
        return p.x0 + (x - xmin) / (xmax - xmin) * (p.x1 - p.x0)

    def sy(y: float) -> float:
        return p.y0 - min(y, top) / top * (p.y0 - p.y1)

    for i, (label, pts) in enumerate(curves):
        coords = [(round(sx(x), 1), round(sy(y), 1)) for x, y in sorted(pts)]
        step = max(1, marker_every)
        p.series.append(
            Series(
                label,
                PALETTE[i % len(PALETTE)],
                MARKERS[i % len(MARKERS)],
                " ".join(f"{a},{b}" for a, b in coords),
                coords[(i % step) :: step],
            )
        )
    ticks = (
        xtick_values
        if xtick_values is not None
        else sorted(set(xs))
        if len(set(xs)) <= 8
        else list(np.linspace(xmin, xmax, 6))
    )
    p.xticks = [(round(sx(x), 1), xfmt.format(x)) for x in ticks]
    p.yticks = [(round(sy(v), 1), f"{v:g}") for v in np.linspace(0, top, 5)]
    p.vlines = [round(sx(v), 1) for v in vlines if xmin <= v <= xmax]
    return p


def _nice(v: float) -> float:
    for step in (1, 2, 5, 10, 20, 25, 50, 100):
        if v <= step:
            return float(step)
    return float(np.ceil(v / 100) * 100)


def hist_plot(title: str, hists: list[tuple[str, dict[str, Any]]]) -> Plot:
    """Membrane-potential histograms (percent of values per 0.1 bin of v_pre - v_th), threshold at 0."""
    curves = []
    width = 0.1
    for label, h in hists:
        edges, counts, total = h["edges"], h["counts"], max(1, h["total"])
        centers = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]
        near = 100 * h.get("near_threshold", 0.0)
        width = h.get("near_width", width)
        curves.append(
            (
                f"{label}: {near:.1f}% near threshold",
                [(c, 100 * n / total) for c, n in zip(centers, counts, strict=True)],
            )
        )
    return line_plot(
        title,
        "v_pre - v_th (membrane potential before the spike minus the threshold)",
        "% of potentials per 0.1 bin",
        curves,
        vlines=(0.0,),
        xfmt="{:g}",
        xtick_values=[-3.0, -2.0, -1.0, 0.0, 1.0],
        caption=(
            "Share of pre-spike membrane potentials per 0.1-wide bin, over every spiking layer, time step and "
            "unit of one test batch; the dashed line is the threshold. The percentage in each legend entry is "
            f"the share within {width:g} of the threshold (|v_pre - v_th| < {width:g}, the quantity of TGO "
            "Fig. 4): lower means fewer neurons a small perturbation can flip."
        ),
        marker_every=5,
    )


def sweep_plots(runs: list[tuple[str, dict[str, Any]]]) -> list[Plot]:
    """Robust accuracy vs eps and vs steps (MPD-SGR Fig. 2), one curve per model."""
    out = []
    for axis, xlabel in (("eps", "eps (L∞ budget, pixel units in [0, 1])"), ("steps", "attack steps k")):
        curves = []
        attack, n = "", 0
        for label, arts in runs:
            for _key, art in sorted(arts.items()):
                if isinstance(art, dict) and art.get("axis") == axis and isinstance(art.get("points"), list):
                    attack = str(art.get("attack", ""))
                    n = max((int(pt.get("n", 0)) for pt in art["points"]), default=n)
                    curves.append((label, [(pt["x"], 100 * pt["robust"]) for pt in art["points"]]))
        if curves:
            fixed = "steps fixed" if axis == "eps" else "eps fixed at the dataset's budget"
            out.append(
                line_plot(
                    f"{attack.upper()}: robust accuracy vs {axis} ({fixed})",
                    xlabel,
                    "robust accuracy %",
                    curves,
                    ymax=100.0,
                    xfmt="{:.3g}" if axis == "eps" else "{:.0f}",
                    caption=(
                        f"Each point: percent of the first {n} test samples still classified correctly after "
                        f"{attack.upper()} at that {'budget' if axis == 'eps' else 'number of steps'}. Curves "
                        "should fall with eps and flatten with steps; a curve rising again hints at "
                        "gradient masking."
                    ),
                )
            )
    return out


def si_unit(v: float) -> tuple[float, str]:
    """(divisor, name) that keeps ``v`` below 1000: (1e6, "millions"), (1e3, "thousands") or (1, "")."""
    for div, name in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if v >= div:
            return div, name
    return 1.0, ""


def scatter_plot(
    title: str, xlabel: str, ylabel: str, points: list[tuple[str, float, float]], caption: str = "",
    ymax: float = 100.0,
) -> Plot:
    """One marker per labelled point ``(label, x, y)``, both axes from 0; x in the SI unit of its largest
    value (named in the x label). Each point is its own legend entry (colour and marker)."""
    div, unit = si_unit(max((x for _, x, _ in points), default=0.0))
    p = Plot(title, f"{xlabel} ({unit})" if unit else xlabel, ylabel, [], [], [], caption)
    right = _nice(max((x / div for _, x, _ in points), default=1.0) * 1.1 or 1.0)

    def sx(x: float) -> float:
        return round(p.x0 + x / div / right * (p.x1 - p.x0), 1)

    def sy(y: float) -> float:
        return round(p.y0 - min(y, ymax) / ymax * (p.y0 - p.y1), 1)

    for i, (label, x, y) in enumerate(points):
        marker = MARKERS[(i + i // len(MARKERS)) % len(MARKERS)]  # colour and marker pairs repeat after 100
        p.series.append(Series(label, PALETTE[i % len(PALETTE)], marker, "", [(sx(x), sy(y))]))
    p.xticks = [(sx(v * div), f"{v:g}") for v in np.linspace(0, right, 5)]
    p.yticks = [(sy(v), f"{v:g}") for v in np.linspace(0, ymax, 5)]
    return p
