"""The dashboard's traffic chart, drawn on the server as SVG (no JavaScript charting library).

Per day, two bars side by side: bytes served from the cache (solid) and bytes fetched from
origins (diagonal hatching, outlined). They differ in pattern and position, not only in colour,
so the chart reads in greyscale and for colour-blind eyes; each bar has a <title> with its day
and value, and the axis is labelled in bytes. Every text is escaped.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

from withcache.sizes import format_size

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 34, 34
GRID_LINES = 4


def _nice_ceiling(value: int) -> int:
    """A round number (1, 2 or 5 times a power of 1024 or 10) at or above value."""
    if value <= 0:
        return 1024
    unit = 1
    while unit * 1024 <= value:
        unit *= 1024
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 1024):
        if step * unit >= value:
            return step * unit
    return value


def traffic_svg(days: list[tuple[str, int, int]]) -> Markup:
    """An SVG of (day, served, fetched) rows, oldest first."""
    top = _nice_ceiling(max((max(s, f) for _, s, f in days), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(days))
    bar = max(1.0, slot * 0.38)
    total_served = sum(s for _, s, _ in days)
    total_fetched = sum(f for _, _, f in days)
    label = (
        f"Bytes per day over the last {len(days)} days: {format_size(total_served)} served"
        f" from the cache, {format_size(total_fetched)} fetched from origins"
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' class="traffic" role="img" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#b45309" stroke-width="3"/></pattern></defs>',
    ]
    for n in range(GRID_LINES + 1):
        value = top * n // GRID_LINES
        y = TOP + plot_h - plot_h * n / GRID_LINES
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"'
            f' stroke="#d0d7de" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11"'
            f' fill="#374151">{escape(format_size(value))}</text>'
        )
    for i, (day, served, fetched) in enumerate(days):
        x = LEFT + i * slot + (slot - 2 * bar) / 2
        for offset, value, what, paint in (
            (0.0, served, "served from the cache", 'fill="#1d4ed8"'),
            (bar, fetched, "fetched from origins", 'fill="url(#hatch)" stroke="#b45309"'),
        ):
            h = plot_h * value / top
            y = TOP + plot_h - h
            out.append(
                f'<rect class="bar {"served" if offset == 0 else "fetched"}"'
                f' x="{x + offset:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" {paint}>'
                f"<title>{escape(day)}: {escape(format_size(value))} {what}</title></rect>"
            )
        if i % 5 == 0 or i == len(days) - 1:
            out.append(
                f'<text x="{LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 16}"'
                f' text-anchor="middle" font-size="11" fill="#374151">{escape(day[5:])}</text>'
            )
    out.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"'
        ' stroke="#374151" stroke-width="1"/>'
    )
    # The legend: the same fills as the bars, and words.
    out.append(
        f'<rect x="{LEFT}" y="8" width="14" height="14" fill="#1d4ed8"/>'
        f'<text x="{LEFT + 20}" y="19" font-size="12" fill="#111827">served from the cache'
        f" ({escape(format_size(total_served))})</text>"
        f'<rect x="{LEFT + 300}" y="8" width="14" height="14" fill="url(#hatch)"'
        ' stroke="#b45309"/>'
        f'<text x="{LEFT + 320}" y="19" font-size="12" fill="#111827">fetched from origins'
        f" ({escape(format_size(total_fetched))})</text>"
    )
    out.append("</svg>")
    return Markup("".join(out))
