"""The report figures: each function takes an analysis' DataFrame and returns a matplotlib Figure.

Figures are built with the object-oriented API (``Figure``, not ``pyplot``), so no global state
leaks between cells or threads; in a notebook, a cell that ends with one shows it as a PNG. Every
function copes with empty input by drawing a short "no data" note, so a report on a session without
(say) batches still renders. Labels come from the frames as given: pass pseudonymised frames
(:meth:`pstlib.reports.ReportData` does) and the figures are pseudonymised too.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle, Wedge

from pstlib.reports import theme


def _figure(width: float = theme.FIGSIZE[0], height: float = theme.FIGSIZE[1]) -> Figure:
    return Figure(figsize=(width, height), dpi=theme.DPI, layout="constrained")


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#6f6f6f",
            transform=ax.transAxes)
    ax.set_axis_off()


def _short(labels: pd.Series, width: int = 38) -> list[str]:
    text = labels.astype("string").fillna("(none)")
    return [t if len(t) <= width else t[: width - 1] + "…" for t in text]


# ------------------------------------------------------------------------------------------ imports
def success_gauge(rate: float, *, title: str = "Success rate", target: float = 0.99) -> Figure:
    """A half-circle gauge of a rate in [0, 1]: green at or above ``target``, amber, red below 0.9."""
    fig = _figure(4.5, 2.8)
    ax = fig.add_subplot()
    value = float(np.clip(rate if np.isfinite(rate) else 0.0, 0.0, 1.0))
    colour = theme.GOOD if value >= target else theme.WARN if value >= 0.9 else theme.BAD
    ax.add_patch(Wedge((0, 0), 1.0, 0, 180, width=0.3, color="#e6e6e6"))
    ax.add_patch(Wedge((0, 0), 1.0, 180 - 180 * value, 180, width=0.3, color=colour))
    ax.text(0, 0.12, f"{value:.1%}", ha="center", va="center", fontsize=22, fontweight="bold")
    ax.text(0, -0.15, title, ha="center", va="center", fontsize=11)
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-0.3, 1.05)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return fig


def outcome_bars(outcomes: Mapping[str, int], *, title: str = "What happened to each message") -> Figure:
    """Horizontal bars: messages per outcome (imported, read, duplicate, skipped, failed...)."""
    fig = _figure(9, 2.8)
    ax = fig.add_subplot()
    frame = pd.DataFrame({"outcome": list(outcomes), "messages": list(outcomes.values())})
    if frame.empty or frame["messages"].sum() == 0:
        _no_data(ax, "No messages in this session")
        return fig
    colours = [theme.OUTCOME_COLOURS.get(o, theme.PALETTE[-1]) for o in frame["outcome"]]
    bars = ax.barh(frame["outcome"], frame["messages"], color=colours)
    ax.bar_label(bars, labels=[f"{v:,}" for v in frame["messages"]], padding=3)
    ax.invert_yaxis()
    ax.set(title=title, xlabel="messages", ylabel="")
    return fig


def contact_creation_pie(contacts: pd.DataFrame, *, title: str = "Contacts") -> Figure:
    """A pie of what the import did about each contact (``action``: matched, created, failed...)."""
    fig = _figure(5, 3.6)
    ax = fig.add_subplot()
    counts = contacts["action"].astype("string").value_counts() if len(contacts) else pd.Series()
    counts = counts[counts > 0]
    if counts.empty:
        _no_data(ax, "No contacts recorded\n(an assess session creates none)")
        return fig
    ax.pie(counts.to_numpy(), labels=[f"{k} ({v:,})" for k, v in counts.items()],
           colors=theme.PALETTE[: len(counts)], startangle=90, counterclock=False,
           wedgeprops={"width": 0.45, "edgecolor": "white"})
    ax.set_title(title)
    return fig


def throughput(per_minute: pd.DataFrame, *, title: str = "Throughput") -> Figure:
    """Messages processed per minute over a session (``minute_utc, message_count``)."""
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    if per_minute.empty:
        _no_data(ax, "No processing times recorded")
        return fig
    ax.plot(per_minute["minute_utc"], per_minute["message_count"], marker="o", markersize=3)
    ax.set(title=title, xlabel="time (UTC)", ylabel="messages / minute")
    ax.set_ylim(bottom=0)
    fig.autofmt_xdate()
    return fig


def batch_latency(batches: pd.DataFrame, *, title: str = "Requests to Dataverse") -> Figure:
    """Each batch request: duration against start time, 429 answers in red."""
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    if batches.empty:
        _no_data(ax, "No batch requests (an assess session sends none)")
        return fig
    throttled = batches["http_status"].eq(429).fillna(False).to_numpy(bool)
    ax.scatter(batches.loc[~throttled, "started_at_utc"], batches.loc[~throttled, "duration_s"],
               s=10, color=theme.PALETTE[0], label="answered")
    ax.scatter(batches.loc[throttled, "started_at_utc"], batches.loc[throttled, "duration_s"],
               s=14, color=theme.BAD, label="429 throttled")
    ax.set(title=title, xlabel="time (UTC)", ylabel="duration (s)")
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    return fig


# ----------------------------------------------------------------------------------------- timeline
def completeness_bars(completeness: pd.DataFrame, *, top: int = 20,
                      title: str = "Least complete timelines") -> Figure:
    """The ``top`` contacts with the lowest ``completeness_score``, with the mailbox's as a line."""
    fig = _figure(9, max(2.5, 0.28 * min(top, len(completeness)) + 1.2))
    ax = fig.add_subplot()
    contacts = completeness[completeness["contact_address"].astype("string") != "*"]
    if contacts.empty:
        _no_data(ax, "No contact timelines")
        return fig
    worst = contacts.sort_values(["completeness_score", "contact_address"]).head(top)
    scores = worst["completeness_score"].to_numpy(float)
    colours = [theme.GOOD if s >= 95 else theme.WARN if s >= 80 else theme.BAD for s in scores]
    ax.barh(_short(worst["contact_address"]), scores, color=colours)
    mailbox = completeness.loc[completeness["contact_address"].astype("string") == "*",
                               "completeness_score"]
    if len(mailbox):
        ax.axvline(float(mailbox.iloc[0]), color="#333333", linestyle="--", linewidth=1,
                   label=f"mailbox {float(mailbox.iloc[0]):.1f}")
        ax.legend(loc="lower right")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set(title=title, xlabel="completeness score (0-100)", ylabel="")
    return fig


def volume_series(trends: pd.DataFrame, *, title: str = "Mail volume") -> Figure:
    """Incoming and outgoing messages per period, with the 3-period rolling mean."""
    fig = _figure()
    ax = fig.add_subplot()
    if trends.empty:
        _no_data(ax, "No dated messages")
        return fig
    x = trends["period_start_utc"]
    ax.stackplot(x, trends["incoming_count"], trends["outgoing_count"],
                 labels=["incoming", "outgoing"], colors=theme.PALETTE[:2], alpha=0.8)
    ax.plot(x, trends["message_count_rolling_3"], color="#333333", linewidth=1.5,
            label="3-period mean")
    ax.set(title=title, xlabel="", ylabel="messages")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    return fig


def gap_calendar(calendar: pd.DataFrame, *, title: str = "Mail per day, gaps outlined") -> Figure:
    """A calendar heat map: one cell per day (weeks across, weekdays down), darker = more mail.

    ``calendar`` is :func:`pstlib.reports.views.calendar_days`' result: ``date, week, weekday,
    message_count, in_gap``. Days inside a detected gap are outlined in red.
    """
    weeks = int(calendar["week"].max()) + 1 if len(calendar) else 0
    fig = _figure(min(14.0, max(6.0, 0.12 * weeks + 1.5)), 2.6)
    ax = fig.add_subplot()
    if calendar.empty:
        _no_data(ax, "No dated messages")
        return fig
    grid = np.full((7, weeks), np.nan)
    grid[calendar["weekday"].to_numpy(int), calendar["week"].to_numpy(int)] = calendar[
        "message_count"
    ].to_numpy(float)
    sns.heatmap(grid, ax=ax, cmap=theme.SEQUENTIAL, cbar_kws={"label": "messages", "pad": 0.01},
                xticklabels=False, yticklabels=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    gaps = calendar[calendar["in_gap"]]
    for week, weekday in zip(gaps["week"].to_numpy(int), gaps["weekday"].to_numpy(int),
                             strict=True):
        ax.add_patch(Rectangle((week, weekday), 1, 1, fill=False, edgecolor=theme.BAD, lw=0.8))
    months = calendar.drop_duplicates("month_start")
    ax.set_xticks(months["week"].to_numpy(float) + 0.5,
                  [d.strftime("%b %Y") for d in months["month_start"]], rotation=0, fontsize=7)
    ax.set(title=title, xlabel="", ylabel="")
    ax.tick_params(axis="y", labelsize=7, rotation=0)
    return fig


def gap_severity_bars(gaps: pd.DataFrame, *, title: str = "Gaps by kind and severity") -> Figure:
    """Counts of gaps per kind, stacked by severity."""
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    if gaps.empty:
        _no_data(ax, "No gaps detected")
        return fig
    table = pd.crosstab(gaps["kind"].astype("string"), gaps["severity"].astype("string"))
    order = [s for s in theme.SEVERITY_COLOURS if s in table.columns]
    table = table[order]
    left = np.zeros(len(table))
    for severity in order:
        values = table[severity].to_numpy(float)
        ax.barh(table.index, values, left=left, color=theme.SEVERITY_COLOURS[severity],
                label=severity)
        left += values
    ax.set(title=title, xlabel="gaps", ylabel="")
    ax.legend(loc="lower right", fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------ senders
def top_senders(profiles: pd.DataFrame, *, top: int = 15, title: str = "Top senders") -> Figure:
    """The ``top`` senders by messages sent to the mailbox, coloured by sender class."""
    fig = _figure(9, max(2.5, 0.3 * min(top, len(profiles)) + 1.2))
    ax = fig.add_subplot()
    if profiles.empty:
        _no_data(ax, "No senders")
        return fig
    best = profiles.sort_values(["message_count", "sender_address"],
                                ascending=[False, True]).head(top)
    frame = pd.DataFrame({"sender": _short(best["sender_address"]),
                          "messages": best["message_count"].to_numpy(int),
                          "class": best["sender_class"].astype("string").fillna("unknown")})
    sns.barplot(frame, y="sender", x="messages", hue="class", dodge=False, ax=ax,
                palette=theme.PALETTE[: frame["class"].nunique()])
    ax.set(title=title, xlabel="messages received from them", ylabel="")
    ax.legend(loc="lower right", fontsize=8, title="")
    return fig


def peak_heatmap(peaks: pd.DataFrame, *, title: str = "When mail is sent") -> Figure:
    """Messages per weekday × hour (:func:`pstlib.analytics.senders.peak_times`)."""
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    if peaks.empty or peaks["message_count"].sum() == 0:
        _no_data(ax, "No dated messages")
        return fig
    grid = peaks["message_count"].to_numpy(float).reshape(7, 24)
    sns.heatmap(grid, ax=ax, cmap=theme.SEQUENTIAL, cbar_kws={"label": "messages"},
                yticklabels=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
                xticklabels=[str(h) for h in range(24)])
    ax.set(title=title, xlabel="hour of day", ylabel="")
    ax.tick_params(axis="y", rotation=0)
    return fig


def reply_delay_hist(pairs: pd.DataFrame, *, title: str = "How long replies take") -> Figure:
    """A histogram of reply delays in hours (log scale), from :func:`reply_pairs`."""
    fig = _figure(9, 3.2)
    ax = fig.add_subplot()
    hours = pairs["reply_delay_s"].to_numpy(float) / 3600.0 if len(pairs) else np.array([])
    hours = hours[np.isfinite(hours) & (hours > 0)]
    if hours.size == 0:
        _no_data(ax, "No replies between people")
        return fig
    bins = np.logspace(np.log10(max(hours.min(), 1 / 60)), np.log10(hours.max() + 1e-9), 30)
    ax.hist(hours, bins=bins.tolist(), color=theme.PALETTE[0])
    ax.set_xscale("log")
    ax.axvline(float(np.median(hours)), color="#333333", linestyle="--",
               label=f"median {np.median(hours):.1f} h")
    ax.legend(loc="upper right")
    ax.set(title=title, xlabel="reply delay (hours, log scale)", ylabel="replies")
    return fig


# ------------------------------------------------------------------------------------------ network
def network_drawing(graph: nx.DiGraph, hubs: pd.DataFrame, communities: pd.DataFrame, *,
                    top: int = 40, seed: int = 7, title: str = "Who writes to whom") -> Figure:
    """The ``top`` addresses by PageRank and the mail between them, coloured by community.

    Node size follows PageRank, edge width the messages; the layout is seeded (the same graph
    draws the same way every time).
    """
    fig = _figure(9, 7)
    ax = fig.add_subplot()
    if graph.number_of_nodes() == 0 or hubs.empty:
        _no_data(ax, "No correspondence")
        return fig
    keep = hubs.head(top)["address"].astype(str).tolist()
    sub = nx.Graph(graph.subgraph(keep).to_undirected())
    position = nx.spring_layout(sub, seed=seed, weight="weight", k=1.5 / np.sqrt(max(len(sub), 1)))
    rank = hubs.set_index(hubs["address"].astype(str))["pagerank"].astype(float)
    group = communities.set_index(communities["address"].astype(str))["community_id"]
    colours = [theme.PALETTE[int(group.get(v, 0)) % len(theme.PALETTE)] for v in sub.nodes]
    sizes = 2500 * rank.reindex(list(sub.nodes)).fillna(0).to_numpy() / max(rank.max(), 1e-9) + 30
    weights = np.array([d.get("weight", 1) for _, _, d in sub.edges(data=True)], dtype=float)
    widths = 0.3 + 3.0 * np.log1p(weights) / max(np.log1p(weights.max()), 1e-9) if weights.size else []
    nx.draw_networkx_edges(sub, position, ax=ax, width=widths, alpha=0.35, edge_color="#777777")
    nx.draw_networkx_nodes(sub, position, ax=ax, node_size=sizes, node_color=colours, alpha=0.9)
    labelled = keep[: min(15, len(keep))]
    nx.draw_networkx_labels(sub, position, labels={v: v.split("@")[0][:22] for v in labelled},
                            font_size=7, ax=ax)
    ax.set_title(title)
    ax.set_axis_off()
    return fig


# --------------------------------------------------------------------------------------- operations
def operations_daily(daily: pd.DataFrame, *, title: str = "Messages processed per day") -> Figure:
    """Stacked bars per day of messages by outcome, errors as a line on a second axis."""
    fig = _figure()
    ax = fig.add_subplot()
    if daily.empty:
        _no_data(ax, "No sessions in this period")
        return fig
    outcomes = [c for c in theme.OUTCOME_COLOURS if c in daily.columns]
    bottom = np.zeros(len(daily))
    x = pd.to_datetime(daily["date"]).to_numpy()
    for outcome in outcomes:
        values = daily[outcome].to_numpy(float)
        ax.bar(x, values, bottom=bottom, color=theme.OUTCOME_COLOURS[outcome], label=outcome,
               width=0.8)
        bottom += values
    ax.set(title=title, ylabel="messages")
    if "errors" in daily.columns:
        twin = ax.twinx()
        twin.plot(x, daily["errors"].to_numpy(float), color=theme.BAD, marker="o", label="errors")
        twin.set_ylabel("errors")
        twin.set_ylim(bottom=0)
        twin.grid(False)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return fig
