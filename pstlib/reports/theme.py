"""One look for every figure: the seaborn theme, colours and figure sizes the reports share.

:func:`apply_theme` is called once per notebook (by :func:`pstlib.reports.open_report`). It never
fetches a font (DejaVu Sans ships with matplotlib) and turns matplotlib's mathtext off, so a ``$`` in a
subject or a name is drawn as text, never parsed.
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import seaborn as sns

PALETTE = ["#1f5f8b", "#e07b39", "#3a9a5b", "#c23b3b", "#7a5ea8", "#8c6d46", "#d16fa8", "#6f6f6f"]
"""The qualitative palette: blue, orange, green, red, purple, brown, pink, grey."""
OUTCOME_COLOURS = {
    "imported": "#3a9a5b",
    "read": "#1f5f8b",
    "duplicate": "#8c8c8c",
    "skipped": "#e0b339",
    "failed": "#c23b3b",
    "pending": "#7a5ea8",
}
SEVERITY_COLOURS = {"minor": "#e0c04a", "moderate": "#e07b39", "major": "#c23b3b",
                    "critical": "#7a1f1f"}
GOOD, WARN, BAD = "#3a9a5b", "#e0b339", "#c23b3b"
SEQUENTIAL = "Blues"
FIGSIZE = (9.0, 4.0)
DPI = 110


def apply_theme() -> None:
    """Set the seaborn theme and matplotlib settings; configure inline PNG output in a kernel."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font="DejaVu Sans")
    mpl.rcParams.update(
        {
            "figure.figsize": FIGSIZE,
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "savefig.bbox": "tight",
            "text.parse_math": False,  # mail text with "$" is text, never mathtext
            "axes.titleweight": "bold",
            "axes.titlesize": 12,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "svg.fonttype": "none",
        }
    )
    _configure_inline()


def _configure_inline() -> None:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return
    shell: Any = get_ipython()
    if shell is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("png", bbox_inches="tight", dpi=DPI)  # type: ignore[no-untyped-call]
    from matplotlib.figure import Figure

    shell.display_formatter.formatters["image/png"].for_type(Figure, _png_with_alt)


def describe(figure: Any) -> str:
    """A figure's text alternative for screen readers: its titles, and each axis' labels.

    The report template writes it as the image's ``alt`` attribute (escaped, like all mail text).
    """
    parts: list[str] = []
    if figure.get_suptitle():
        parts.append(figure.get_suptitle())
    for ax in figure.get_axes():
        title = ax.get_title() or ax.get_title("left")
        labels = [label for label in (ax.get_xlabel(), ax.get_ylabel()) if label]
        if title and labels:
            parts.append(f"{title} ({' by '.join(reversed(labels))})")
        elif title or labels:
            parts.append(title or " by ".join(reversed(labels)))
    return "Chart: " + "; ".join(parts) if parts else "Chart"


def _png_with_alt(figure: Any) -> tuple[bytes, dict[str, str]] | None:
    """IPython's PNG formatter for a figure, with :func:`describe` as its ``alt`` metadata."""
    from IPython.core.pylabtools import print_figure

    if not figure.axes and not figure.lines:
        return None  # an empty figure: nothing to show, as IPython's own formatter does
    data = print_figure(figure, "png", bbox_inches="tight", dpi=DPI)  # type: ignore[no-untyped-call]
    return (data, {"alt": describe(figure)}) if data else None
