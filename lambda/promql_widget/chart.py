"""The widget's HTML: an inline SVG line chart (axes with labels, one line per series, a
legend when there are several, the unit), or a plain message for an empty range or a
failure. CloudWatch strips JavaScript and tags such as <use> and <iframe> from a custom
widget's HTML (AWS CloudWatch docs, "Security and JavaScript for custom CloudWatch
widgets"), so the chart is plain SVG elements with every value written in."""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass

from promql_api import Series

# Room around the plot for the axes' labels, in pixels.
LEFT, RIGHT, TOP, BOTTOM = 64, 14, 10, 26
# A point every few pixels at most: finer only redraws the same pixels.
PIXELS_PER_POINT = 3
# Steps a reader recognises, in seconds; beyond a day, whole days.
STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
LEGEND_ROW_PX = 18
THEMES = {
    "light": {"text": "#414d5c", "grid": "#e9ebed", "axis": "#8d99a8"},
    "dark": {"text": "#d1d5db", "grid": "#414d5c", "axis": "#8d99a8"},
}


@dataclass(frozen=True)
class Frame:
    """Where and how the chart is drawn: the range (Unix seconds), the step of the query, the
    widget's size in pixels, its theme and the viewer's offset from UTC."""

    start: float
    end: float
    step: int
    width: int = 600
    height: int = 300
    theme: str = "light"
    utc_offset_min: int = 0


def plot_width(width: int) -> int:
    return max(60, width - LEFT - RIGHT)


def step_seconds(start: float, end: float, width: int) -> int:
    """The query's step: about one point per PIXELS_PER_POINT pixels of plot, rounded up to
    a step from STEPS_S (whole days beyond them), never under a second."""
    wanted = max(end - start, 1.0) / (plot_width(width) / PIXELS_PER_POINT)
    for step in STEPS_S:
        if step >= wanted:
            return step
    return int(math.ceil(wanted / 86400) * 86400)


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round values from at or below `low` to at or above `high`, about `count` intervals."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(first + step * len(ticks))
    return ticks


def format_value(value: float) -> str:
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if magnitude >= 0.001 or value == 0 else f"{value:.2e}"


def series_label(series: Series) -> str:
    labels = {k: v for k, v in series.labels.items() if k != "__name__"}
    name = series.labels.get("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner or not name else name


def _time_ticks(frame: Frame) -> list[float]:
    span = frame.end - frame.start
    wanted = span / max(2, plot_width(frame.width) // 110)
    interval = next((s for s in STEPS_S[4:] if s >= wanted), int(math.ceil(wanted / 86400) * 86400))
    offset = frame.utc_offset_min * 60
    first = math.ceil((frame.start + offset) / interval) * interval - offset
    return [t for t in (first + i * interval for i in range(int(span // interval) + 2)) if t <= frame.end]


def _time_label(at: float, frame: Frame) -> str:
    shown = time.gmtime(at + frame.utc_offset_min * 60)
    return time.strftime("%m-%d %H:%M" if frame.end - frame.start > 86400 else "%H:%M", shown)


def _segments(points: list[tuple[float, float]], step: int) -> list[list[tuple[float, float]]]:
    """Consecutive points; a missing step or more breaks the line (no answer is not zero)."""
    segments: list[list[tuple[float, float]]] = []
    for point in points:
        if segments and point[0] - segments[-1][-1][0] <= step * 1.5:
            segments[-1].append(point)
        else:
            segments.append([point])
    return segments


def render_chart(series: list[Series], frame: Frame, *, unit: str, query: str, note: str = "") -> str:
    drawn = [s for s in series if s.points]
    colours = THEMES.get(frame.theme, THEMES["light"])
    legend_rows = len(drawn) if len(drawn) > 1 else 0
    width = frame.width
    height = max(120, frame.height - legend_rows * LEGEND_ROW_PX - (LEGEND_ROW_PX if note else 0) - 8)
    plot_w, plot_h = plot_width(width), height - TOP - BOTTOM
    values = [v for s in drawn for _, v in s.points]
    ticks = nice_ticks(min(0.0, min(values)), max(values))
    low, high = ticks[0], ticks[-1]

    def x(at: float) -> float:
        return LEFT + (at - frame.start) / max(frame.end - frame.start, 1e-9) * plot_w

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * plot_h

    text = f'fill="{colours["text"]}" font-family="Amazon Ember, Helvetica, Arial, sans-serif" font-size="11"'
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(query, quote=True)}">']
    for tick in ticks:
        parts.append(f'<line x1="{LEFT}" y1="{y(tick):.1f}" x2="{LEFT + plot_w}" y2="{y(tick):.1f}" '
                     f'stroke="{colours["grid"]}" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" {text}>'
                     f'{format_value(tick)}</text>')
    for at in _time_ticks(frame):
        parts.append(f'<line x1="{x(at):.1f}" y1="{TOP + plot_h}" x2="{x(at):.1f}" y2="{TOP + plot_h + 4}" '
                     f'stroke="{colours["axis"]}"/>')
        parts.append(f'<text x="{x(at):.1f}" y="{TOP + plot_h + 17}" text-anchor="middle" {text}>'
                     f'{_time_label(at, frame)}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
                 f'stroke="{colours["axis"]}"/>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="{colours["axis"]}"/>')
    middle = TOP + plot_h / 2
    parts.append(f'<text x="14" y="{middle:.1f}" text-anchor="middle" transform="rotate(-90 14 {middle:.1f})" '
                 f'{text}>{html.escape(unit)}</text>')
    for index, one in enumerate(drawn):
        colour = COLOURS[index % len(COLOURS)]
        parts.append(f'<g class="series" stroke="{colour}" fill="{colour}">')
        for segment in _segments(one.points, frame.step):
            if len(segment) == 1:
                at, value = segment[0]
                parts.append(f'<circle cx="{x(at):.1f}" cy="{y(value):.1f}" r="2"/>')
            else:
                points = " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value in segment)
                parts.append(f'<polyline fill="none" stroke-width="1.5" points="{points}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    legend = ""
    if legend_rows:
        items = "".join(
            f'<div style="white-space:nowrap;overflow:hidden;text-overflow:ellipsis;line-height:{LEGEND_ROW_PX}px">'
            f'<span style="display:inline-block;width:10px;height:10px;margin-right:6px;'
            f'background:{COLOURS[i % len(COLOURS)]}"></span>{html.escape(series_label(s))} '
            f'({format_value(s.points[-1][1])} {html.escape(unit)})</div>'
            for i, s in enumerate(drawn)
        )
        legend = f'<div class="legend" style="font-size:11px">{items}</div>'
    caption = f'<div style="font-size:11px">{html.escape(note)}</div>' if note else ""
    return f'<div class="promql-chart">{"".join(parts)}{legend}{caption}</div>'


def render_empty(query: str, frame: Frame) -> str:
    span = f"{_time_label(frame.start, frame)} to {_time_label(frame.end, frame)}"
    return (f"<p>No data in this range ({html.escape(span)}).</p>"
            f"<pre>{html.escape(query)}</pre>")


def render_error(what: str, message: str, status: int | None, query: str) -> str:
    status_text = f"HTTP {status}: " if status is not None else ""
    return (f"<p><b>Could not {html.escape(what)}</b></p>"
            f"<p>{html.escape(status_text + message)}</p>"
            f"<pre>{html.escape(query)}</pre>")


def render_message(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"
