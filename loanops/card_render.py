"""How a model card looks: its sections in order, as Markdown and as an HTML page, and its plots.

`loanops.card` gathers the facts into a `ModelCardReport`; this module only presents them. The
HTML page is the Jinja2 template `loanops/templates/model_card.html.j2`, shipped in the package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from loanops.html_pages import templates
from loanops.scorecard import BASE_ODDS, BASE_SCORE, POINTS_TO_DOUBLE_ODDS

if TYPE_CHECKING:
    from loanops.card import ModelCardReport, SegmentRow

_HTML_TEMPLATE: Final = "model_card.html.j2"


def plot_segments(rows: Sequence[SegmentRow]) -> Figure:
    """Default rate against mean PD per segment value, one panel per segment.

    The panels share one legend above them: inside a panel it would cover the tallest bars,
    which sit on the left for income bands and on the right for grades.
    """
    names = list(dict.fromkeys(row.segment for row in rows))
    fig = Figure(figsize=(4.2 * len(names), 4.3), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        part = [row for row in rows if row.segment == name]
        x = np.arange(len(part))
        ax.bar(x - 0.2, [row.default_rate for row in part], 0.4, label="default rate")
        ax.bar(x + 0.2, [row.mean_pd for row in part], 0.4, label="mean PD")
        ax.set_xticks(x, [row.value for row in part], rotation=45, ha="right")
        ax.set(title=f"By {name} (test)", ylabel="rate")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), frameon=False)
    return fig


def _segment_frame(card: ModelCardReport) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "segment": row.segment,
                "value": row.value,
                "rows": row.rows,
                "defaults": row.defaults,
                "default rate": f"{row.default_rate:.3f}",
                "mean PD": f"{row.mean_pd:.3f}",
                "approval rate": f"{row.approval_rate:.3f}",
                "ROC AUC": "-" if row.roc_auc is None else f"{row.roc_auc:.3f}",
            }
            for row in card.segments
        ]
    )


def _sections(card: ModelCardReport) -> list[tuple[str, pd.DataFrame | list[str] | str]]:
    """The card's sections in order: a table, a list of lines, or an image file name."""
    metrics = pd.DataFrame(
        [
            {
                "metric": m.name,
                "value": f"{m.value:.4f}",
                "95% bootstrap interval": f"{m.low:.4f} – {m.high:.4f}",
            }
            for m in card.metrics
        ]
    )
    ece = next(m for m in card.metrics if m.name.startswith("ECE"))
    return [
        ("Data", _pairs(card.data)),
        ("Model", _pairs({"family": card.family, **{k: str(v) for k, v in card.params.items()}})),
        ("Test metrics", metrics),
        ("ROC", "roc.png"),
        (
            "Calibration",
            [
                f"ECE {ece.value:.4f} (95% interval {ece.low:.4f} – {ece.high:.4f}); the plot "
                "compares mean predicted PD with the observed default rate in 10 equal-count "
                "bins of the test split."
            ],
        ),
        ("Calibration plot", "calibration.png"),
        (
            "Threshold and costs",
            [
                f"Decline when PD ≥ {card.threshold:.4f}.",
                f"Cost of approving a loan that defaults: {card.cost_false_approve:g}; of "
                f"declining one that would repay: {card.cost_false_decline:g}.",
                f"The threshold minimises the expected cost on the validation split; for "
                f"perfectly calibrated scores it would be {card.bayes_threshold:.4f}.",
            ],
        ),
        *_scorecard_sections(card),
        ("Metrics by segment", _segment_frame(card)),
        ("Segments", "segments.png"),
        ("Disparity across segments", card.disparity),
        (
            "Promotion decision",
            _pairs(card.promotion)
            if card.promotion
            else ["No gate decision recorded for this version yet."],
        ),
        ("Known limitations", card.limitations),
    ]


def _scorecard_sections(card: ModelCardReport) -> list[tuple[str, pd.DataFrame | list[str]]]:
    if card.scorecard is None:
        return []
    points = card.scorecard
    table = pd.DataFrame(
        [{"feature": r.feature, "bin": r.bin, "points": f"{r.points:+.1f}"} for r in points.rows]
    )
    values = sorted(points.information_values.items(), key=lambda kv: -kv[1])
    return [
        (
            "Scorecard",
            [
                f"Score = {points.base_points:.1f} base points + one bin's points per feature; "
                f"{POINTS_TO_DOUBLE_ODDS:g} more points double the odds of repaying, and "
                f"{BASE_SCORE:g} means odds of {BASE_ODDS:g} to 1. The points are exact for the "
                "calibrated PD.",
            ],
        ),
        ("Points table", table),
        (
            "Information values",
            pd.DataFrame([{"feature": k, "information value": f"{v:.3f}"} for k, v in values]),
        ),
    ]


def _pairs(values: Mapping[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"": list(values), "value": list(values.values())})


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    if frame.empty:
        return ["(none)"]

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return [header, rule, *rows]


def render_markdown(card: ModelCardReport) -> str:
    """The card as Markdown; images are referenced by their file names beside it."""
    lines = [
        f"# Model card: {card.model_name} v{card.version}",
        "",
        f"Training run `{card.run_id}`, registered {card.created_at}.",
    ]
    for title, body in _sections(card):
        if isinstance(body, str) and body not in card.figures:
            continue
        lines += ["", f"## {title}", ""]
        if isinstance(body, pd.DataFrame):
            lines += _markdown_table(body)
        elif isinstance(body, list):
            lines += [f"- {line}" for line in body]
        else:
            lines.append(f"![{title}]({body})")
    return "\n".join(lines) + "\n"


def render_html(card: ModelCardReport) -> str:
    """The card as a self-contained HTML page but for its PNG images, which sit beside it.

    The page is `templates/model_card.html.j2`, rendered with autoescaping on, so every value
    from the registry (tags, parameters, limitations) is shown as text, never as markup.
    """
    sections = []
    for heading, body in _sections(card):
        if isinstance(body, str) and body not in card.figures:
            continue
        section: dict[str, Any] = {"title": heading, "image": None, "lines": None}
        if isinstance(body, pd.DataFrame):
            section["columns"] = list(body.columns)
            section["rows"] = list(body.itertuples(index=False))
        elif isinstance(body, list):
            section["lines"] = body
        else:
            section["image"] = body
        sections.append(section)
    page = (
        templates()
        .get_template(_HTML_TEMPLATE)
        .render(
            title=f"Model card: {card.model_name} v{card.version}",
            run_id=card.run_id,
            created_at=card.created_at,
            sections=sections,
        )
    )
    return page.rstrip("\n") + "\n"
