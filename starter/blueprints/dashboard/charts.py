"""Geometry for the dashboard's inline SVG: the stacked credit bar and the 30-day usage chart.

Pure functions of numbers, so the templates only draw rectangles (no JavaScript, no inline styles).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ... import catalog

CHART_WIDTH, CHART_HEIGHT, CHART_TOP, CHART_BOTTOM = 600, 160, 10, 22


@dataclass(frozen=True)
class Segment:
    css: str
    label: str
    value: int
    x: float  # percent
    width: float  # percent


def meter(plan: int, purchased: int, other: int, held: int) -> list[Segment]:
    """Plan, purchased and other credits side by side, with the held share drawn over the end."""
    total = plan + purchased + other
    segments, x = [], 0.0
    for css, label, value in (
        ("meter-plan", "Plan", plan),
        ("meter-purchased", "Purchased", purchased),
        ("meter-other", "Other", other),
    ):
        width = 100 * value / total if total else 0
        segments.append(Segment(css, label, value, round(x, 3), round(width, 3)))
        x += width
    if held and total:
        width = 100 * held / total
        segments.append(Segment("meter-held", "Held", held, round(100 - width, 3), round(width, 3)))
    return segments


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    labels: list[tuple[float, str]]
    series: list[tuple[str, str, int]]  # (css class, feature name, credits in the window)
    peak: int
    total: int


def usage_chart(usage: dict[date, dict[str, int]], *, labelled: bool = False) -> Chart:
    """Bars per day, stacked by feature (or, ``labelled``, by the series names given), scaled to the busiest day."""
    features = sorted({feature for day in usage.values() for feature in day})
    css = {feature: f"chart-series-{index % 4}" for index, feature in enumerate(features)}
    names = {
        f: f if labelled else (catalog.FEATURES[f].name if f in catalog.FEATURES else f.replace("_", " ").title())
        for f in features
    }
    step = max(5, -(-len(usage) // 8))  # at most about eight date labels, whatever the range
    peak = max((sum(day.values()) for day in usage.values()), default=0)
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    slot = CHART_WIDTH / max(len(usage), 1)
    bars, labels = [], []
    for index, (day, values) in enumerate(sorted(usage.items())):
        x, y = index * slot + slot * 0.15, CHART_HEIGHT - CHART_BOTTOM
        for feature in features:
            used = values.get(feature, 0)
            if not used:
                continue
            height = plot_height * used / peak
            y -= height
            bars.append(
                Bar(
                    round(x, 2),
                    round(y, 2),
                    round(slot * 0.7, 2),
                    round(height, 2),
                    css[feature],
                    f"{day:%d %b}: {used:,} credits on {names[feature]}",
                )
            )
        if index % step == 0 or index == len(usage) - 1:
            labels.append((round(x + slot * 0.35, 2), f"{day:%d %b}"))
    totals = {f: sum(day.get(f, 0) for day in usage.values()) for f in features}
    return Chart(bars, labels, [(css[f], names[f], totals[f]) for f in features], peak, sum(totals.values()))
