"""The dashboard's charts (Vega-Lite through Altair): flagged recordings per period and per value.

Built for reading, not decoration: one x tick per period (periods are categories, so a day axis
never shows "12 PM"), stacked bars so labels with equal counts stay visible side by side, the
flagged share of recordings beside the count, and horizontal bars sorted by size so values read
without turning one's head.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

MEASURES = {"count": "flagged recordings", "share": "share of recordings flagged"}
_PERIOD_FORMAT = {"day": "%a %Y-%m-%d", "week": "week of %Y-%m-%d", "month": "%B %Y"}
_LABEL_COLOURS = alt.Scale(scheme="tableau10")
"""Distinct hues per label (the theme's default blues look alike side by side)."""


def with_share(counts: pd.DataFrame) -> pd.DataFrame:
    """``flagged / scored`` per row as ``share`` (0 where nothing was scored)."""
    out = counts.copy()
    scored = out["scored"].where(out["scored"] > 0)
    out["share"] = (out["flagged"] / scored).fillna(0.0)
    return out


def over_time(counts: pd.DataFrame, period: str, measure: str = "count") -> alt.Chart:
    """Stacked bars of flagged recordings per period and label, or a label x period heatmap of the
    flagged share; ``counts`` holds (period, label, flagged, scored) with empty periods as zeros."""
    data = with_share(counts)
    data["when"] = pd.to_datetime(data["period"]).dt.strftime(_PERIOD_FORMAT[period])
    order = list(dict.fromkeys(data.sort_values("period")["when"]))
    x = alt.X("when:O", sort=order, title=None, axis=alt.Axis(labelAngle=0 if len(order) <= 10 else -45, labelOverlap=True))
    tooltip = [alt.Tooltip("when:O", title=period), "label:N", alt.Tooltip("flagged:Q", title="flagged"),
               alt.Tooltip("scored:Q", title="scored"), alt.Tooltip("share:Q", format=".1%")]
    if measure == "share":
        return alt.Chart(data).mark_rect().encode(
            x=x, y=alt.Y("label:N", title=None),
            color=alt.Color("share:Q", title=MEASURES["share"], scale=alt.Scale(scheme="orangered", domainMin=0),
                            legend=alt.Legend(format="%")),
            tooltip=tooltip,
        ).properties(height=alt.Step(28))
    return alt.Chart(data).mark_bar().encode(
        x=x,
        y=alt.Y("flagged:Q", title=MEASURES["count"], stack="zero", axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("label:N", title="label", scale=_LABEL_COLOURS),
        order=alt.Order("label:N"),
        tooltip=tooltip,
    ).properties(height=280)


def by_value(counts: pd.DataFrame, column: str, measure: str = "count") -> alt.Chart:
    """Horizontal bars per value of one column, biggest first: stacked counts, or the flagged share
    with one bar per label (shares of one recording set do not add up)."""
    data = with_share(counts)
    value = "share" if measure == "share" else "flagged"
    sort = alt.EncodingSortField(field=value, op="sum", order="descending")
    axis = alt.Axis(format="%") if measure == "share" else alt.Axis(tickMinStep=1, format="d")
    encoding = {
        "y": alt.Y("value:N", sort=sort, title=column, axis=alt.Axis(labelLimit=240)),
        "x": alt.X(f"{value}:Q", title=MEASURES[measure], axis=axis, stack="zero" if measure == "count" else None),
        "color": alt.Color("label:N", title="label", scale=_LABEL_COLOURS),
        "tooltip": ["value:N", "label:N", "flagged:Q", "scored:Q", alt.Tooltip("share:Q", format=".1%")],
    }
    if measure == "share":
        encoding["yOffset"] = alt.YOffset("label:N")
    step = 12 * data["label"].nunique() if measure == "share" else 24  # room for every value's label
    return alt.Chart(data).mark_bar().encode(**encoding).properties(height=alt.Step(min(step, 60)))


def value_table(counts: pd.DataFrame) -> pd.DataFrame:
    """One row per value: flagged recordings per label and the share of that value's recordings."""
    data = with_share(counts)
    flagged = data.pivot_table(index="value", columns="label", values="flagged", aggfunc="sum", fill_value=0)
    share = data.pivot_table(index="value", columns="label", values="share", aggfunc="max", fill_value=0.0)
    table = flagged.astype(int).join((share * 100).round(1).add_suffix(" %"))
    return table.loc[flagged.sum(axis=1).sort_values(ascending=False).index]
