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


# One name per bucket, everywhere the dashboard shows them (meter, legend, stats).
BUCKETS = {"plan": "Plan", "purchased": "Purchased", "other": "Bonus and promo", "held": "Held"}


def meter(plan: int, purchased: int, other: int, held: int, allowance: int) -> list[Segment]:
    """The credit bar, on the scale of what the team had this period: its allowance plus the rest.

    The plan part is as wide as the period's allowance and filled as far as its credits are left
    (7 left of 100 fills 7 of its 100 parts; the used 93 stay empty track), purchased and then bonus
    and promo credits follow it, and the held share is hatched over the credits it holds (drawn in
    the spend order, plan first). With no purchased credits, the bar's width is what is left of the
    allowance.
    """
    plan_room = max(allowance, plan)
    scale = plan_room + purchased + other
    if scale <= 0:
        return []

    def percent(value: float) -> float:
        return round(100 * value / scale, 3)

    segments = []
    filled = []  # (start, credits) of each filled stretch, in spend order, for the held overlay
    start = 0
    for css, value, room in (("meter-plan", plan, plan_room), ("meter-purchased", purchased, purchased)):
        if value:
            segments.append(Segment(css, BUCKETS[css.removeprefix("meter-")], value, percent(start), percent(value)))
            filled.append((start, value))
        start += room
    if other:
        segments.append(Segment("meter-other", BUCKETS["other"], other, percent(start), percent(other)))
        filled.append((start, other))
    left = held
    for begin, value in filled:
        take = min(left, value)
        if take:
            segments.append(Segment("meter-held", BUCKETS["held"], take, percent(begin), percent(take)))
        left -= take
    return segments


def filled_width(segments: list[Segment]) -> float:
    """How much of the bar is filled, in percent (held credits are part of the bucket they hold)."""
    return round(sum(s.width for s in segments if s.css != "meter-held"), 3)


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
