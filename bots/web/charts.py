"""Stacked bar charts as inline SVG, drawn on the server: the page needs no script or CDN."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

# Distinct on a white page and for the common colour blindnesses (Okabe-Ito).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#000")

_WIDTH, _HEIGHT = 640, 200
_LEFT, _BOTTOM, _TOP = 48, 28, 10


def nice_ceiling(value: float) -> float:
    """Return a round number (1, 2 or 5 times a power of ten) at least ``value``."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value:
        step /= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= value:
            return step * factor
    return step * 10  # pragma: no cover - the loop always returns


def stacked_bars(
    labels: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str, currency: str = ""
) -> Markup:
    """Return an SVG chart of one bar per label, stacked by series, with a legend.

    ``currency`` is written before amounts ("$1"), as money is read.
    """
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top = nice_ceiling(max(totals, default=0.0))
    plot_w = _WIDTH - _LEFT - 8
    plot_h = _HEIGHT - _BOTTOM - _TOP
    slot = plot_w / max(1, len(labels))
    bar = max(2.0, slot * 0.7)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH - 8}" y2="{_TOP + plot_h}" '
        'stroke="#888"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 8}" text-anchor="end">'
        f"{escape(currency)}{_number(top)}</text>",
        f'<text x="{_LEFT - 6}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for index, label in enumerate(labels):
        x = _LEFT + index * slot + (slot - bar) / 2
        y = float(_TOP + plot_h)
        for colour, (name, values) in zip(_colours(), series.items(), strict=False):
            value = values[index]
            if value <= 0:
                continue
            height = plot_h * value / top
            y -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{escape(label)} {escape(name)}: '
                f"{escape(currency)}{_number(value)}</title></rect>"
            )
        if index % max(1, len(labels) // 7) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{_HEIGHT - 10}" text-anchor="middle">'
                f"{escape(label[5:])}</text>"  # MM-DD: the year is in the tooltip
            )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{colour}"></span>{escape(name)}</li>'
        for colour, name in zip(_colours(), series, strict=False)
    )
    return Markup("".join(parts) + f'<ul class="legend">{legend}</ul>')


def _colours() -> list[str]:
    return list(PALETTE) * 4


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"
